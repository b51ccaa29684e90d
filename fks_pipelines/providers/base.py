"""What every provider client offers: OHLCV history and the latest price, in canonical form.

A client differs from another only in its vendor params, its parsing and its limits
(:meth:`ProviderClient._fetch_ohlcv`, :meth:`ProviderClient._latest_price`, ``LIMITS``); caching
of both operations is done here, and limiting, retries and the breaker in :mod:`.http`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar

import pandas as pd

from fks_pipelines.market.frame import drop_open_bars, empty_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.breaker import BreakerState
from fks_pipelines.providers.cache import FRAMES, QUOTES, CacheResult, cache_key
from fks_pipelines.providers.http import ProviderHttp, RequestStats
from fks_pipelines.providers.ratelimit import ProviderLimits

log = logging.getLogger(__name__)

Clock = Callable[[], pd.Timestamp]
MAX_PLANNED_PAGE = pd.Timedelta(days=366)
"""Longest page a backfill plans: a year holds any year from its anchor in one page."""


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


class ProviderClient(ABC):
    """A provider's three steps, OpenBB style: query -> vendor params, fetch, payload -> frame."""

    name: ClassVar[str]
    LIMITS: ClassVar[ProviderLimits]
    """Default limits from the provider's documented or free tier (providers.md)."""

    def __init__(self, http: ProviderHttp, *, clock: Clock = utc_now) -> None:
        self.http = http
        self.clock = clock

    @property
    def stats(self) -> RequestStats:
        return self.http.stats

    @property
    def circuit(self) -> BreakerState:
        """The provider's circuit as every process sees it (for failover and metadata)."""
        return self.http.runtime.breaker.snapshot()

    def metadata(self) -> dict[str, int | float | str]:
        """Totals of this client's work, for materialisation metadata."""
        return {
            **self.stats.as_metadata(),
            **self.http.runtime.limiter.quota_usage(),
            "circuit": self.circuit.state,
        }

    def page_span(self, interval: Interval) -> pd.Timedelta | None:
        """The longest window one request of this provider serves at ``interval``, or ``None``
        when windows are fetched as asked (the provider plans its own requests)."""
        return None

    def fetch_ohlcv(
        self,
        symbol: str,
        interval: Interval,
        start: pd.Timestamp,
        end: pd.Timestamp,
        *,
        anchor: pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """Closed bars of ``symbol`` whose open time lies in ``[start, end)``, canonical form.

        With an ``anchor`` (assets pass their first partition), backfills are request-minimal:
        the window is covered by whole pages of :meth:`page_span` (at most a year) counted from
        the anchor, each fetched and cached once, so the partitions of a backfill are served from
        cached pages (a year of Binance 1h bars from its anchor: 6 requests, not 366). Only pages
        that have closed are planned: the page still growing would be refetched whole by every
        run (and charged whole where cost follows size, like CoinMarketCap credits), so its part
        of the window is fetched as asked, as is any window without an anchor.
        """
        span = self.page_span(interval)
        if span is None or anchor is None:
            return self._cached_window(symbol, interval, start, end)
        span = min(span, MAX_PLANNED_PAGE)
        closed_until = self.clock().floor(interval.offset)
        page = anchor + ((start - anchor) // span) * span
        pages = []
        while page < end:
            if page + span > closed_until:
                pages.append(self._cached_window(symbol, interval, max(page, start), end))
                break
            pages.append(self._cached_window(symbol, interval, page, page + span))
            page += span
        return self.closed_bars(pages, interval, start, end)

    def _cached_window(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        cache = self.http.runtime.cache
        if cache is None:
            return self._fetch_ohlcv(symbol, interval, start, end)
        request = {"symbol": symbol, "interval": interval.name, "start": start, "end": end}
        result = cache.get_or_load(
            cache_key(self.name, "ohlcv", request),
            FRAMES,
            lambda: self._fetch_ohlcv(symbol, interval, start, end),
            lambda frame: self.http.runtime.config.ttl.window(
                interval, start, end, len(frame), self.clock()
            ),
        )
        self._count(result.hit)
        return result.value

    def latest_price(self, symbol: str) -> Quote:
        """The provider's latest price for ``symbol``."""
        return self.latest_price_result(symbol).value

    def latest_price_result(self, symbol: str) -> CacheResult[Quote]:
        """The provider's latest price for ``symbol``, and whether the cache served it."""
        cache = self.http.runtime.cache
        if cache is None:
            return CacheResult(self._latest_price(symbol), hit=False)
        result = cache.get_or_load(
            cache_key(self.name, "price", {"symbol": symbol}),
            QUOTES,
            lambda: self._latest_price(symbol),
            lambda _quote: self.http.runtime.config.ttl.price_s,
        )
        self._count(result.hit)
        return result

    @abstractmethod
    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Fetch upstream (no cache): closed bars opening in ``[start, end)``."""

    @abstractmethod
    def _latest_price(self, symbol: str) -> Quote:
        """Fetch upstream (no cache): the latest price."""

    def closed_bars(
        self,
        pages: list[pd.DataFrame],
        interval: Interval,
        start: pd.Timestamp,
        end: pd.Timestamp,
    ) -> pd.DataFrame:
        """Pages joined and clipped to ``[start, end)``, without the bar still open now."""
        if not pages:
            return empty_frame()
        frame = pd.concat(pages, ignore_index=True) if len(pages) > 1 else pages[0]
        in_window = (frame["ts"] >= start) & (frame["ts"] < end)
        return drop_open_bars(frame.loc[in_window], interval.seconds, self.clock())

    def _count(self, hit: bool) -> None:
        if hit:
            self.stats.cache_hits += 1
        else:
            self.stats.cache_misses += 1
        log.debug("%s: cache %s", self.name, "hit" if hit else "miss")

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
