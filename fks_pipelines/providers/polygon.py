"""Polygon.io (Massive): aggregates and last trades (providers.md section 2).

Endpoints:
    - ``1m``, ``5m``, ``15m``, ``1h``: ``GET /v2/aggs/ticker/{ticker}/range/{n}/minute|hour/
      {from_ms}/{to_ms}`` (ms timestamps, both inclusive).
    - ``1d``: ``GET /v2/aggs/ticker/{ticker}/range/1/day/{from_date}/{to_date}`` (trading dates).
    - Latest price: ``GET /v2/last/trade/{ticker}`` (stocks), ``GET /v1/last/crypto/{from}/{to}``
      for ``X:`` tickers.

Wire format: an envelope ``{status, ticker, resultsCount, results[], next_url?}`` whose
``results[]`` are ``{o,h,l,c,v,vw?,t,n?}`` JSON numbers with ``t`` the window start in ms UTC.

Bars are Polygon's own aggregates (``adjusted=true``: split-adjusted; ``bar_kind`` ``traded``);
nothing is resampled here. ``volume`` is ``v`` as given (shares, or coins for ``X:`` tickers);
Polygon states no quote-currency volume, so ``quote_volume`` is null (``vw * v`` would be our
estimate, not Polygon's figure). ``vwap`` is ``vw`` and ``trades`` is ``n``, null when absent.
Intraday ``ts`` is ``t``. A ``1d`` bar's ``ts`` is its trading date at 00:00 UTC: the New York
date of ``t`` for stocks (day bars start at midnight New York), the UTC date for crypto (``X:``)
and FX (``C:``) tickers.

Pitfalls handled (providers.md 2.6):
    1. Stock day bars start at midnight New York, not UTC: the date is taken in that zone (a day
       bar not starting at midnight there is refused), and a stock day bar counts as closed only
       once the New York day is over, not 24 h after 00:00 UTC.
    2. ``limit`` counts base bars (minutes, or days for ``1d``), not output bars: each request
       covers at most 50,000 base bars (50,000 1m bars, 10,000 5m, 3,333 15m, 833 1h, 50,000
       days), so no page is cut short, and ``next_url`` is followed until it is absent anyway.
    3. ``next_url`` carries no key: the key travels as ``Authorization: Bearer`` on every request;
       a ``next_url`` naming another scheme or host is refused (it would receive the key).
    4. ``OK`` and ``DELAYED`` both mean success (``success`` on ``/v1/last/crypto``); any other
       status word in a 200 answer is an error (``check_body``), retried or counted like one.
    5. ``vw``, ``n`` and ``results`` itself may be absent (no data, or an unknown ticker: Polygon
       answers both with ``resultsCount: 0``, so ``fetch_ohlcv`` returns an empty frame).
    6. Last-trade ``t`` is in nanoseconds and must be an exact JSON integer (never a float).
    7. The base URL is configurable (``https://api.massive.com`` is the new name).

Error texts are quoted with URL query strings cut (a ``next_url`` or link may carry an
``apiKey=``); the Bearer token itself is registered with :mod:`.secrets`, which scrubs it from
every error and log record, so the mappers take no key.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import build_frame, empty_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.base import Clock, ProviderClient, utc_now
from fks_pipelines.providers.errors import (
    BadPayload,
    MissingCredentials,
    ProviderError,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.http import ProviderHttp, parse_retry_after
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, get_runtime
from fks_pipelines.providers.secrets import clip

if TYPE_CHECKING:  # annotations only: the client's ProviderHttp imports httpx when it is built
    import httpx

PROVIDER = "polygon"
DEFAULT_BASE_URL = "https://api.polygon.io"
KEY_VARIABLE = "POLYGON_API_KEY"
AGGS_PATH = "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{start}/{end}"
LAST_TRADE_PATH = "/v2/last/trade/{ticker}"
LAST_CRYPTO_PATH = "/v1/last/crypto/{base}/{quote}"
MAX_BASE_BARS = 50_000
FREE_TIER_REQUESTS_PER_MINUTE = 5
FREE_TIER_BACKOFF_S = 60.0 / FREE_TIER_REQUESTS_PER_MINUTE  # one slot frees every 12 s
MAX_PAGES = 1_000  # guard against a next_url that never ends
GOOD_STATUS = ("OK", "DELAYED")
CRYPTO_GOOD_STATUS = ("success",)

SUPPORTED: dict[str, tuple[int, str]] = {
    "1m": (1, "minute"),
    "5m": (5, "minute"),
    "15m": (15, "minute"),
    "1h": (1, "hour"),
    "1d": (1, "day"),
}
"""Interval -> Polygon ``(multiplier, timespan)``."""

_CRYPTO_QUOTES = ("USDT", "USDC", "USD", "EUR", "GBP", "JPY", "CAD", "AUD", "BTC", "ETH")
_RATE_LIMIT_TEXT = re.compile(r"exceeded the maximum requests", re.IGNORECASE)
_URL_QUERY = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
_NS_PER_MS = 1_000_000


def timespan(interval: Interval) -> tuple[int, str]:
    """``(multiplier, timespan)`` of a supported interval: 15m -> (15, "minute")."""
    try:
        return SUPPORTED[interval.name]
    except KeyError:
        raise ValueError(
            f"polygon: unsupported interval {interval.name!r}; supported: {', '.join(SUPPORTED)}"
        ) from None


def base_seconds(interval: Interval) -> int:
    """Length of the base aggregate ``limit`` counts: days for ``1d``, minutes otherwise."""
    return 86400 if timespan(interval)[1] == "day" else 60


def bars_per_page(interval: Interval) -> int:
    """Output bars one request can hold: 50,000 base bars' worth (1h -> 833)."""
    return MAX_BASE_BARS * base_seconds(interval) // interval.seconds


def exchange_zone(ticker: str) -> str:
    """Zone of a ticker's trading day: UTC for crypto (``X:``) and FX (``C:``), else New York."""
    return "UTC" if ticker.startswith(("X:", "C:")) else "America/New_York"


def crypto_pair(ticker: str) -> tuple[str, str]:
    """``X:BTCUSD`` -> ``("BTC", "USD")``; the quote currency is matched from a known list."""
    pair = ticker.removeprefix("X:")
    for quote_ccy in _CRYPTO_QUOTES:
        if pair.endswith(quote_ccy) and len(pair) > len(quote_ccy):
            return pair[: -len(quote_ccy)], quote_ccy
    if len(pair) <= 3:
        raise ValueError(f"polygon: cannot split crypto ticker {ticker!r} into base and quote")
    return pair[:-3], pair[-3:]


def _scrub(text: str) -> str:
    """Vendor text made safe for an error message: no query strings (a key-looking parameter
    the registry does not know), no registered secret, one short line."""
    return clip(_URL_QUERY.sub(r"\1?...", " ".join(text.split())), 200)


def _vendor_message(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    message = body.get("error") or body.get("message")
    return str(message) if message else None


def _vendor_code(body: Any) -> str | None:
    code = body.get("status") if isinstance(body, dict) else None
    return str(code) if code is not None else None


def map_error(response: httpx.Response, body: Any) -> ProviderError:
    """Map a Polygon error answer (HTTP status >= 400) to a typed error.

    The vendor code is the envelope's ``status`` word (``ERROR``, ``NOT_AUTHORIZED``,
    ``NOT_FOUND``); the text is ``error`` or, on entitlement answers, ``message``. A 429 without
    ``Retry-After`` (Polygon documents none) waits one free-tier slot, 12 s.
    """
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return _error(status, status, body, retry_after)


def check_body(body: Any) -> ProviderError | None:
    """An error Polygon reported inside an HTTP 200 answer, if any.

    A status word other than ``OK``/``DELAYED``/``success`` is mapped like the HTTP status it
    stands for (``NOT_AUTHORIZED`` 403, ``NOT_FOUND`` 404, ``ERROR`` 400, or 429 when its text is
    the rate-limit message), so that it is retried, paused or counted like that answer. Bodies
    that are not an envelope at all are left to the parsers (which raise :class:`BadPayload`).
    """
    if not isinstance(body, dict) or "status" not in body:
        return None
    word = body["status"]
    if word in GOOD_STATUS or word in CRYPTO_GOOD_STATUS:
        return None
    if word == "ERROR" and _RATE_LIMIT_TEXT.search(_vendor_message(body) or ""):
        kind = 429
    else:
        kind = {"NOT_AUTHORIZED": 403, "NOT_FOUND": 404, "ERROR": 400}.get(str(word), 0)
    if not kind:
        return BadPayload(
            PROVIDER,
            f"unexpected status {_scrub(str(word))!r} in an HTTP 200 answer",
            status=200,
            vendor_code=_vendor_code(body),
        )
    return _error(kind, 200, body, None)


def _error(kind: int, status: int, body: Any, retry_after: float | None) -> ProviderError:
    """The error an answer of HTTP status ``kind`` stands for; ``status`` is what the wire said."""
    message = _vendor_message(body)
    reason = _scrub(message) if message else f"HTTP {status} without an error body"
    code = _vendor_code(body)
    if kind == 429:
        return RateLimited(
            PROVIDER,
            f"rate limited: {reason}",
            status=status,
            vendor_code=code,
            retry_after=retry_after if retry_after is not None else FREE_TIER_BACKOFF_S,
        )
    if kind == 401:
        return Unauthorized(
            PROVIDER, f"API key rejected: {reason}", status=status, vendor_code=code
        )
    if kind == 403:
        return Unauthorized(PROVIDER, f"not entitled: {reason}", status=status, vendor_code=code)
    if kind == 404:
        return UnknownSymbol(PROVIDER, f"not found: {reason}", status=status, vendor_code=code)
    if kind >= 500 or kind == 499:  # the official client retries 499 and 5xx
        return Unavailable(PROVIDER, f"server error: {reason}", status=status, vendor_code=code)
    return RequestRejected(PROVIDER, reason, status=status, vendor_code=code)


def _envelope(body: Any, endpoint: str, good: tuple[str, ...] = GOOD_STATUS) -> dict:
    if not isinstance(body, dict):
        raise BadPayload(PROVIDER, f"{endpoint}: expected an object, got {type(body).__name__}")
    if body.get("status") not in good:
        raise BadPayload(
            PROVIDER,
            f"{endpoint}: status {clip(body.get('status'), 40)!r} is not {'/'.join(good)}",
            vendor_code=_vendor_code(body),
        )
    return body


def parse_aggs(body: Any, ticker: str, interval: Interval) -> pd.DataFrame:
    """Parse one aggregates page into a canonical frame, column-wise.

    Raises:
        BadPayload: Not an aggregates envelope, a row lacks ``t/o/h/l/c/v`` or holds a
            non-number, or the bars are not ``interval`` bars of ``ticker``.
    """
    body = _envelope(body, "aggs")
    if body.get("ticker") not in (None, ticker):
        raise BadPayload(PROVIDER, f"aggs: answer is for {clip(body['ticker'], 40)!r}")
    results = body.get("results")
    if results is None:
        return empty_frame()
    if not isinstance(results, list):
        raise BadPayload(PROVIDER, f"aggs: results is a {type(results).__name__}, not a list")
    if not results:
        return empty_frame()
    try:
        if not all(isinstance(row, dict) for row in results):
            raise ValueError("rows must be objects")
        rows = pd.DataFrame.from_records(results)
        required = rows[["t", "o", "h", "l", "c", "v"]]
        if required.isna().to_numpy().any():
            raise ValueError("t, o, h, l, c and v are required in every row")
        starts_ms = required["t"].astype("int64")
        if not np.array_equal(starts_ms.to_numpy(), required["t"].astype("float64").to_numpy()):
            raise ValueError("t must be whole milliseconds")
        values = required[["o", "h", "l", "c", "v"]].astype("float64")
        vwap = rows["vw"].astype("float64") if "vw" in rows else None
        trades = rows["n"].astype("float64").astype("Int64") if "n" in rows else None
    except (KeyError, ValueError, TypeError) as exc:
        raise BadPayload(PROVIDER, f"aggs: malformed results ({_scrub(str(exc))})") from None
    if not np.isfinite(values.to_numpy()).all():
        raise BadPayload(PROVIDER, "aggs: non-finite prices or volumes")
    starts = pd.to_datetime(starts_ms, unit="ms", utc=True)
    if interval.name == "1d":
        starts = _trading_dates(starts, ticker)
    elif (starts_ms % interval.ms != 0).any():
        raise BadPayload(PROVIDER, f"aggs: bars do not start on the {interval} grid")
    return build_frame(
        provider=PROVIDER,
        symbol=ticker,
        interval=interval.name,
        ts=starts,
        open=values["o"],
        high=values["h"],
        low=values["l"],
        close=values["c"],
        volume=values["v"],
        vwap=vwap,
        trades=trades,
    )


def _trading_dates(starts: pd.Series, ticker: str) -> pd.Series:
    """Day-bar starts (local midnight of the ticker's zone) -> trading date at 00:00 UTC."""
    local = starts.dt.tz_convert(exchange_zone(ticker))
    if not local.eq(local.dt.normalize()).all():
        raise BadPayload(
            PROVIDER, f"aggs: day bars do not start at midnight {exchange_zone(ticker)}"
        )
    return local.dt.tz_localize(None).dt.tz_localize("UTC")


def _exact_int(value: Any, field: str) -> int:
    """A JSON integer, as is: ns timestamps do not survive a float (pitfall 6)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field} must be an integer, got {type(value).__name__}")
    return value


def _price(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"price must be a number, got {type(value).__name__}")
    price = float(value)
    if not math.isfinite(price) or price <= 0:
        raise ValueError(f"implausible price {price}")
    return price


def parse_last_trade(body: Any, ticker: str) -> Quote:
    """``/v2/last/trade/{ticker}``: price ``p`` at SIP time ``t`` (ns, exact)."""
    try:
        result = _envelope(body, "last_trade")["results"]
        if result.get("T") not in (None, ticker):
            raise ValueError(f"answer is for {clip(result['T'], 40)!r}")
        price = _price(result["p"])
        ts = pd.Timestamp(_exact_int(result["t"], "t"), unit="ns", tz="UTC")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPayload(PROVIDER, f"last_trade: malformed answer ({exc})") from None
    return Quote(provider=PROVIDER, symbol=ticker, price=price, ts=ts)


def parse_last_crypto(body: Any, ticker: str) -> Quote:
    """``/v1/last/crypto/{from}/{to}``: ``last.price`` at ``last.timestamp`` (ms)."""
    try:
        body = _envelope(body, "last_crypto", CRYPTO_GOOD_STATUS)
        base, quote_ccy = crypto_pair(ticker)
        if body.get("symbol") not in (None, f"{base}-{quote_ccy}"):
            raise ValueError(f"answer is for {clip(body['symbol'], 40)!r}")
        last = body["last"]
        price = _price(last["price"])
        ts = pd.Timestamp(_exact_int(last["timestamp"], "timestamp"), unit="ms", tz="UTC")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPayload(PROVIDER, f"last_crypto: malformed answer ({exc})") from None
    return Quote(provider=PROVIDER, symbol=ticker, price=price, ts=ts)


class PolygonClient(ProviderClient):
    """Polygon stocks and crypto aggregates; the key travels as a Bearer header."""

    name = PROVIDER
    LIMITS = ProviderLimits(requests=(Window.per_second(FREE_TIER_REQUESTS_PER_MINUTE / 60),))
    """Free ("Basic") tier: 5 requests per minute, no daily quota."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        runtime: ProviderRuntime | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise MissingCredentials(PROVIDER, KEY_VARIABLE)
        base = urlsplit(base_url)
        self._origin = (base.scheme, base.netloc)
        super().__init__(
            ProviderHttp(
                PROVIDER,
                base_url,
                map_error,
                runtime or get_runtime(PROVIDER, self.LIMITS, RuntimeConfig()),
                headers={"Authorization": f"Bearer {api_key}"},
                check_body=check_body,
                transport=transport,
                sleep=sleep,
            ),
            clock=clock,
        )

    def page_span(self, interval: Interval) -> pd.Timedelta:
        return bars_per_page(interval) * interval.offset

    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Closed bars opening in ``[start, end)``: one request per 50,000 base bars of window
        (a year of 1h bars is 11 requests, any 1d window one), each following ``next_url``."""
        multiplier, span = timespan(interval)
        start, end = pd.Timestamp(start).tz_convert("UTC"), pd.Timestamp(end).tz_convert("UTC")
        ticker = quote(symbol, safe=":")
        pages: list[pd.DataFrame] = []
        for first, last in _request_windows(interval, start, end):
            path: str | None = AGGS_PATH.format(
                ticker=ticker, multiplier=multiplier, timespan=span, start=first, end=last
            )
            params: dict[str, Any] = {"adjusted": "true", "sort": "asc", "limit": MAX_BASE_BARS}
            seen: set[str] = set()
            while path is not None:
                body = self.http.get_json("aggs", path, params)
                pages.append(parse_aggs(body, symbol, interval))
                path, params = self._next_page(body, seen)
        pages = [page for page in pages if len(page)]
        if not pages:
            return empty_frame()
        frame = pd.concat(pages, ignore_index=True) if len(pages) > 1 else pages[0]
        frame = frame.drop_duplicates("ts", keep="last").sort_values("ts", kind="stable")
        if interval.name == "1d" and exchange_zone(symbol) != "UTC":
            # A stock's trading day ends at midnight New York, hours after 00:00 UTC + 24 h.
            day_end = (frame["ts"].dt.tz_localize(None) + pd.Timedelta(days=1)).dt.tz_localize(
                exchange_zone(symbol)
            )
            frame = frame.loc[day_end <= self.clock()]
        return self.closed_bars([frame], interval, start, end)

    def _next_page(self, body: dict, seen: set[str]) -> tuple[str | None, dict[str, Any]]:
        """The ``next_url`` to follow, split into URL and query (the cursor), or ``None``.

        Refused if it names another scheme or host (it would be sent the key) or repeats.
        """
        next_url = body.get("next_url")
        if not next_url:
            return None, {}
        if not isinstance(next_url, str):
            raise BadPayload(PROVIDER, "aggs: next_url is not a string")
        parts = urlsplit(next_url)
        if parts.netloc and (parts.scheme, parts.netloc) != self._origin:
            raise BadPayload(PROVIDER, "aggs: next_url points at another host; not followed")
        if next_url in seen or len(seen) >= MAX_PAGES:
            raise BadPayload(PROVIDER, "aggs: pagination does not advance")
        seen.add(next_url)
        # httpx drops a URL's own query when params are passed, so the cursor goes in params.
        url = parts._replace(query="", fragment="").geturl()
        return url, dict(parse_qsl(parts.query, keep_blank_values=True))

    def _latest_price(self, symbol: str) -> Quote:
        if symbol.startswith("X:"):
            base, quote_ccy = crypto_pair(symbol)
            path = LAST_CRYPTO_PATH.format(base=quote(base), quote=quote(quote_ccy))
            return parse_last_crypto(self.http.get_json("last_crypto", path), symbol)
        path = LAST_TRADE_PATH.format(ticker=quote(symbol, safe=":"))
        return parse_last_trade(self.http.get_json("last_trade", path), symbol)


def _request_windows(
    interval: Interval, start: pd.Timestamp, end: pd.Timestamp
) -> list[tuple[str, str]]:
    """``(from, to)`` path values of each request covering ``[start, end)``.

    Intraday: ms timestamps on the interval grid, each window at most :func:`bars_per_page`
    bars. Daily: trading dates whose 00:00 UTC label lies in the window.
    """
    step = pd.Timedelta(seconds=interval.seconds)
    first = start.ceil("D") if interval.name == "1d" else start.floor(step)
    span = step * bars_per_page(interval)
    windows = []
    while first < end:
        stop = min(first + span, end)
        if interval.name == "1d":
            windows.append(
                (first.strftime("%Y-%m-%d"), (stop - pd.Timedelta(1)).strftime("%Y-%m-%d"))
            )
        else:
            windows.append((str(first.value // _NS_PER_MS), str(stop.value // _NS_PER_MS - 1)))
        first = stop
    return windows
