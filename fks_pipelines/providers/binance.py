"""Binance USD-M futures: klines and the latest price (providers.md section 1).

Wire format: ``GET /fapi/v1/klines`` returns rows of 12 fields, oldest first, prices and volumes as
strings, open time in ms UTC. Pages hold at most 1500 bars; the last bar of a window reaching
"now" is still open and is dropped. Errors come as ``{"code": <negative int>, "msg": ...}``.

Bars are Binance's own (``bar_kind`` ``traded``). Volumes are named for what they are and never
converted: ``volume`` is field 5, the base-asset volume (contracts for USD-M), ``quote_volume``
field 7, the quote-asset volume (USDT); ``vwap`` is their ratio and ``trades`` field 8.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import build_frame, drop_open_bars, empty_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.base import Clock, ProviderClient, utc_now
from fks_pipelines.providers.errors import (
    BadPayload,
    Banned,
    ProviderError,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.http import (
    ProviderHttp,
    parse_retry_after,
    remaining_requests_pacing,
)
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, get_runtime
from fks_pipelines.providers.secrets import clip

if TYPE_CHECKING:  # annotations only: the client's ProviderHttp imports httpx when it is built
    import httpx

PROVIDER = "binance"
DEFAULT_BASE_URL = "https://fapi.binance.com"
KLINES_PATH = "/fapi/v1/klines"
TICKER_PRICE_PATH = "/fapi/v1/ticker/price"
MAX_KLINES_PER_PAGE = 1500
WEIGHT_PER_MINUTE = 2400  # USD-M REQUEST_WEIGHT limit per IP (providers.md 1.4)
WEIGHT_HEADROOM = 0.9
KLINE_FIELDS = 12
_PRICE_COLUMNS = {1: "open", 2: "high", 3: "low", 4: "close", 5: "volume", 7: "quote_volume"}
_BANNED_UNTIL = re.compile(r"banned until (\d{13})")


def klines_weight(limit: int) -> int:
    """Request weight Binance charges for ``/fapi/v1/klines`` with ``limit`` rows."""
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def map_error(response: httpx.Response, body: Any) -> ProviderError:
    """Map a Binance error answer to a typed error (status first, then the vendor code)."""
    status = response.status_code
    code = body.get("code") if isinstance(body, dict) else None
    msg = body.get("msg") if isinstance(body, dict) else None
    reason = clip(msg, 200) if msg else f"HTTP {status} without an error body"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 418:
        if retry_after is None and msg and (until := _BANNED_UNTIL.search(str(msg))):
            retry_after = max(0.0, int(until.group(1)) / 1000 - utc_now().timestamp())
        return Banned(
            PROVIDER,
            f"IP banned: {reason}",
            status=status,
            vendor_code=code,
            retry_after=retry_after,
        )
    if status == 429:
        return RateLimited(
            PROVIDER,
            f"rate limited: {reason}",
            status=status,
            vendor_code=code,
            retry_after=retry_after,
        )
    if code == -1121:
        return UnknownSymbol(PROVIDER, f"unknown symbol: {reason}", status=status, vendor_code=code)
    if status == 401:
        return Unauthorized(PROVIDER, reason, status=status, vendor_code=code)
    if status >= 500:
        return Unavailable(PROVIDER, f"server error: {reason}", status=status, vendor_code=code)
    return RequestRejected(PROVIDER, reason, status=status, vendor_code=code)


def parse_klines(
    payload: Any, symbol: str, interval: Interval, *, now: pd.Timestamp | None = None
) -> pd.DataFrame:
    """Parse a klines page into a canonical frame, column by column.

    ``volume`` is the base volume (field 5), ``quote_volume`` the quote-asset volume (field 7),
    and ``vwap`` their ratio (null when the volume is zero).
    With ``now`` given, bars that have not closed by then are dropped.

    Raises:
        BadPayload: The page is not a list of 12-field rows of the requested interval.
    """
    if not isinstance(payload, list):
        raise BadPayload(PROVIDER, f"klines: expected a list of rows, got {type(payload).__name__}")
    if not payload:
        return empty_frame()
    try:
        rows = pd.DataFrame(payload)
        if rows.shape[1] != KLINE_FIELDS or rows.iloc[:, :9].isna().to_numpy().any():
            raise ValueError(f"rows must have {KLINE_FIELDS} fields")
        open_ms = rows[0].astype("int64")
        close_ms = rows[6].astype("int64")
        values = rows[list(_PRICE_COLUMNS)].astype("float64").rename(columns=_PRICE_COLUMNS)
        trades = rows[8].astype("int64")
    except (ValueError, TypeError) as exc:
        raise BadPayload(PROVIDER, f"klines: malformed rows ({exc})") from None
    if not np.array_equal(close_ms - open_ms, np.full(len(rows), interval.ms - 1)):
        raise BadPayload(PROVIDER, f"klines: rows are not {interval} bars")
    volume = values["volume"]
    frame = build_frame(
        provider=PROVIDER,
        symbol=symbol,
        interval=interval.name,
        ts=pd.to_datetime(open_ms, unit="ms", utc=True),
        open=values["open"],
        high=values["high"],
        low=values["low"],
        close=values["close"],
        volume=volume,
        quote_volume=values["quote_volume"],
        vwap=(values["quote_volume"] / volume).where(volume > 0),
        trades=trades,
    )
    return frame if now is None else drop_open_bars(frame, interval.seconds, now)


def parse_ticker_price(payload: Any, symbol: str) -> Quote:
    """Parse ``/fapi/v1/ticker/price`` for one symbol."""
    try:
        if payload["symbol"] != symbol:
            raise ValueError(f"answer is for {payload['symbol']!r}")
        price = float(payload["price"])
        ts = pd.Timestamp(int(payload["time"]), unit="ms", tz="UTC")
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload(PROVIDER, f"ticker/price: malformed answer ({exc})") from None
    if not math.isfinite(price) or price <= 0:
        raise BadPayload(PROVIDER, f"ticker/price: implausible price {price}")
    return Quote(provider=PROVIDER, symbol=symbol, price=price, ts=ts)


def weight_pacing(response: httpx.Response) -> float | None:
    """Hold off until the next minute once the IP's used weight nears the ceiling (pitfall 6:
    slow down before the 429, not after it)."""
    used = response.headers.get("X-MBX-USED-WEIGHT-1M")
    if used is None or not used.isdigit():
        return remaining_requests_pacing(response)
    if int(used) < WEIGHT_PER_MINUTE * WEIGHT_HEADROOM:
        return None
    return 60 - time.time() % 60


class BinanceClient(ProviderClient):
    """Binance USD-M futures market data (no key needed)."""

    name = PROVIDER
    LIMITS = ProviderLimits(
        requests=(Window.per_second(10),),
        weight=(Window(limit=WEIGHT_PER_MINUTE, period_s=60),),
    )

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        runtime: ProviderRuntime | None = None,
        transport: httpx.BaseTransport | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            ProviderHttp(
                PROVIDER,
                base_url,
                map_error,
                runtime or get_runtime(PROVIDER, self.LIMITS, RuntimeConfig()),
                pacing=weight_pacing,
                transport=transport,
                sleep=sleep,
            ),
            clock=clock,
        )

    def page_span(self, interval: Interval) -> pd.Timedelta:
        return MAX_KLINES_PER_PAGE * interval.offset

    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Closed bars opening in ``[start, end)``, walking pages of up to 1500 bars.

        Each page asks for no more bars than the rest of the window holds, so a one-day 1h
        window costs one request of weight 1.
        """
        start_ms, end_ms = _to_ms(start), _to_ms(end)
        cursor = start_ms
        pages = []
        while cursor < end_ms:
            limit = min(MAX_KLINES_PER_PAGE, math.ceil((end_ms - cursor) / interval.ms))
            payload = self.http.get_json(
                "klines",
                KLINES_PATH,
                {
                    "symbol": symbol,
                    "interval": interval.name,
                    "startTime": cursor,
                    "endTime": end_ms - 1,
                    "limit": limit,
                },
                weight=klines_weight(limit),
            )
            page = parse_klines(payload, symbol, interval)
            pages.append(page)
            if len(page) < limit:
                break
            following = _to_ms(page["ts"].iloc[-1]) + interval.ms
            if following <= cursor:
                raise BadPayload(PROVIDER, "klines: pagination did not advance")
            cursor = following
        return self.closed_bars(pages, interval, start, end)

    def _latest_price(self, symbol: str) -> Quote:
        payload = self.http.get_json("ticker_price", TICKER_PRICE_PATH, {"symbol": symbol})
        return parse_ticker_price(payload, symbol)


def _to_ms(ts: pd.Timestamp) -> int:
    return pd.Timestamp(ts).value // 1_000_000  # .value is nanoseconds whatever the unit
