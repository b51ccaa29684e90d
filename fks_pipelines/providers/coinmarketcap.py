"""CoinMarketCap Pro API: historical OHLCV and the latest price (providers.md section 4).

Endpoints: ``1d`` and ``1h`` bars come from ``GET /v2/cryptocurrency/ohlcv/historical``
(``time_period`` and ``interval`` both ``daily`` or ``hourly``); the latest price from
``GET /v2/cryptocurrency/quotes/latest``. Both are asked by CMC numeric ``id`` (``"1"`` is
Bitcoin), never by symbol, and priced in ``convert=USD``. The key travels in the
``X-CMC_PRO_API_KEY`` header.

Wire format: every answer is an envelope ``{"data": ..., "status": {"error_code", "error_message",
"credit_count", ...}}``; bars are ``data.quotes[]`` of ``{time_open, quote.USD.{open, high, low,
close, volume}}`` with ISO-8601 millisecond ``Z`` timestamps and JSON numbers.

Bars: CMC's own daily and hourly OHLCV periods, one row per period (``bar_kind`` ``traded``),
``ts`` = ``time_open`` (the UTC date at 00:00 for ``1d``, the hour's start for ``1h``).
``quote.USD.volume`` is the period's turnover in USD, so it is ``quote_volume``, as given;
CMC states no volume in coins, so ``volume`` is null (never USD divided by a price). ``vwap`` and
``trades`` are not reported. No bar is formed or resampled here: only
``1h`` and ``1d`` are offered, because ``interval=4h`` etc. would *sample* every fourth hourly bar,
not form a 4-hour bar.

Pitfalls handled:

- ``time_start`` is exclusive and ``time_end`` inclusive: each request sends ``time_start`` one
  period before its first bar and ``time_end`` = the open of its last bar, with ``count`` = the
  bars in between (daily requests send plain dates: CMC reads only the date part).
- ``interval`` defaults to ``daily`` whatever ``time_period`` says, which would sample one hourly
  bar a day; it is always sent equal to ``time_period``.
- Windows are split into pages of at most 10,000 periods (CMC's ``count`` maximum); periods that
  cannot have closed yet are never asked for, so no credits are spent on the live period.
- One id answers with ``data`` = the coin; several ids (or a symbol) answer keyed by id (or an
  array per symbol). Both the single and the keyed-by-id shape are read; map keys are strings.
- ``status.error_code`` is checked on every answer, HTTP 200 included (``check_body``):
  1001/1002/1005/1007 (key) and 1003/1004/1006 (plan) -> Unauthorized, 1008/1011 -> RateLimited
  (retried; CMC's window resets every 60 s), 1009/1010 -> QuotaExhausted (not retried), HTTP 400
  ``Invalid value for "id"`` -> UnknownSymbol. ``error_message`` may be ``null`` or ``""``.
- Credits: a request costs 1 credit per 100 points asked (``quota_cost``), reserved before it is
  sent; the quota counters are then settled to what CMC says it charged (``status.credit_count``).
- Hourly volume does not exist before 2020-09-22: a ``null`` volume stays missing (NaN), it is
  never turned into 0.
- Error messages may quote the key (``This API Key ... is invalid``): they are quoted as they
  come, and the registry of :mod:`.secrets` scrubs the key from every error.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
    QuotaExhausted,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.http import ProviderHttp, parse_retry_after
from fks_pipelines.providers.ratelimit import ProviderLimits, Quota, Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, get_runtime
from fks_pipelines.providers.secrets import clip

if TYPE_CHECKING:  # annotations only: the client's ProviderHttp imports httpx when it is built
    import httpx

log = logging.getLogger(__name__)

PROVIDER = "coinmarketcap"
DEFAULT_BASE_URL = "https://pro-api.coinmarketcap.com"
KEY_VARIABLE = "COINMARKETCAP_API_KEY"
KEY_HEADER = "X-CMC_PRO_API_KEY"
OHLCV_PATH = "/v2/cryptocurrency/ohlcv/historical"
QUOTES_PATH = "/v2/cryptocurrency/quotes/latest"
CONVERT = "USD"
MAX_COUNT = 10_000  # periods per ohlcv/historical request
POINTS_PER_CREDIT = 100
RATE_LIMIT_RESET_S = 60.0  # "resets every 60 seconds"
REQUESTS_PER_MINUTE = 30  # Basic plan
CREDITS_PER_MONTH = 10_000  # Basic plan
CREDITS_PER_DAY = 333  # Basic plan: the monthly credits spread over 30 days

_TIME_PERIOD = {3600: "hourly", 86400: "daily"}
_KEY_CODES = {
    1001: "API key invalid",
    1002: "API key missing",
    1005: "API key required",
    1007: "API key disabled",
}
_PLAN_CODES = {
    1003: "plan requires payment",
    1004: "plan expired",
    1006: "endpoint not in the key's plan",
}
_RATE_CODES = {1008: "per-minute rate limit hit", 1011: "IP rate limit hit"}
_QUOTA_CODES = {1009: "daily credit limit hit", 1010: "monthly credit limit hit"}
_INVALID_ID = re.compile(r'invalid value for "id"', re.IGNORECASE)
_PRICE_FIELDS = ("open", "high", "low", "close")


def time_period(interval: Interval) -> str:
    """CMC's ``time_period`` for ``interval`` (``hourly`` or ``daily``).

    Raises:
        ValueError: The interval is neither ``1h`` nor ``1d``.
    """
    period = _TIME_PERIOD.get(interval.seconds)
    if period is None:
        raise ValueError(
            f"coinmarketcap serves 1h and 1d bars only, not {interval} "
            "(its other intervals sample hourly or daily bars instead of forming them)"
        )
    return period


def credits_for(points: int) -> int:
    """Credits CMC charges for ``points`` OHLCV periods (1 per 100, rounded up, at least 1)."""
    return max(1, math.ceil(points / POINTS_PER_CREDIT))


def _vendor_status(body: Any) -> tuple[int | None, str | None]:
    """``(error_code, error_message)`` of an envelope; ``(None, None)`` when there is none."""
    status = body.get("status") if isinstance(body, dict) else None
    if not isinstance(status, dict):
        return None, None
    code = status.get("error_code")
    try:
        code = int(code) if code is not None and not isinstance(code, bool) else None
    except (TypeError, ValueError):
        code = None
    message = status.get("error_message")
    return code, (clip(message, 200) if message else None)


def error_from_status(
    status: int, code: int | None, message: str | None, retry_after: float | None = None
) -> ProviderError:
    """The typed error for CMC's ``status.error_code`` (or, without one, the HTTP status)."""
    text = message or f"HTTP {status}"
    kw: dict[str, Any] = {"status": status, "vendor_code": code}
    if code in _QUOTA_CODES:
        return QuotaExhausted(PROVIDER, f"{_QUOTA_CODES[code]}: {text}", **kw)
    if code in _RATE_CODES or status == 429:
        wait = RATE_LIMIT_RESET_S if retry_after is None else retry_after
        reason = _RATE_CODES.get(code, "rate limited")
        return RateLimited(PROVIDER, f"{reason}: {text}", retry_after=wait, **kw)
    if code in _KEY_CODES or code in _PLAN_CODES or status in (401, 402, 403):
        reason = _KEY_CODES.get(code) or _PLAN_CODES.get(code) or "not authorised"
        return Unauthorized(PROVIDER, f"{reason}: {text}", **kw)
    if message and _INVALID_ID.search(message):
        return UnknownSymbol(PROVIDER, f"unknown id: {text}", **kw)
    if status >= 500 or (code is not None and code >= 500):
        return Unavailable(PROVIDER, f"server error: {text}", **kw)
    return RequestRejected(PROVIDER, text, **kw)


def map_error(response: httpx.Response, body: Any) -> ProviderError:
    """Map a CMC error answer (HTTP >= 400) to a typed error."""
    code, message = _vendor_status(body)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error_from_status(response.status_code, code, message, retry_after)


def check_body(body: Any) -> ProviderError | None:
    """An error CMC reported inside an HTTP 200 answer (``status.error_code`` other than 0)."""
    code, message = _vendor_status(body)
    if not code:
        return None
    return error_from_status(200, code, message)


def credit_count(body: Any) -> int | None:
    """Credits CMC says the answer cost (``status.credit_count``), if it says."""
    status = body.get("status") if isinstance(body, dict) else None
    count = status.get("credit_count") if isinstance(status, dict) else None
    if isinstance(count, bool) or not isinstance(count, int | float) or count < 0:
        return None
    return int(count)


def _coin(payload: Any, symbol: str, endpoint: str) -> dict[str, Any]:
    """The coin object for ``symbol`` (a CMC id) in a ``data`` that is either the coin itself
    (one id asked) or keyed by id (several asked), where a key may hold an object or an array."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise BadPayload(PROVIDER, f"{endpoint}: answer has no data object")
    if "quotes" in data or "quote" in data:
        coin: Any = data
    elif symbol in data:
        coin = data[symbol]
        if isinstance(coin, list):
            coin = next((c for c in coin if isinstance(c, dict) and _id(c) == symbol), None)
    elif not data:
        # an id CMC skipped as invalid (skip_invalid) leaves nothing to read
        raise UnknownSymbol(PROVIDER, f"{endpoint}: no data for id {symbol}", status=200)
    else:
        raise BadPayload(PROVIDER, f"{endpoint}: answer is not keyed by the id {symbol}")
    if not isinstance(coin, dict):
        raise BadPayload(PROVIDER, f"{endpoint}: no coin object for id {symbol}")
    if "id" in coin and _id(coin) != symbol:
        raise BadPayload(PROVIDER, f"{endpoint}: answer is for id {coin['id']!r}, not {symbol}")
    return coin


def _id(coin: dict[str, Any]) -> str:
    value = coin.get("id")
    return str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""


def parse_ohlcv(payload: Any, symbol: str, interval: Interval) -> pd.DataFrame:
    """Parse an ``ohlcv/historical`` answer into a canonical frame, column by column.

    Raises:
        BadPayload: The answer is not in the documented shape, a price is missing or not a
            number, or a ``time_open`` is not on the interval's UTC grid.
        UnknownSymbol: The answer holds no data for the id.
    """
    coin = _coin(payload, symbol, "ohlcv")
    quotes = coin.get("quotes")
    if not isinstance(quotes, list):
        raise BadPayload(PROVIDER, "ohlcv: quotes is not a list")
    if not quotes:
        return empty_frame()
    try:
        if not all(isinstance(q, dict) for q in quotes):
            raise ValueError("a quote is not an object")
        rows = pd.json_normalize(quotes)
        ts = pd.to_datetime(rows["time_open"], utc=True, format="ISO8601")
        prices = {
            f: pd.to_numeric(rows[f"quote.{CONVERT}.{f}"], errors="raise").astype("float64")
            for f in _PRICE_FIELDS
        }
        turnover = pd.to_numeric(rows[f"quote.{CONVERT}.volume"], errors="raise").astype("float64")
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload(
            PROVIDER, f"ohlcv: malformed quotes ({type(exc).__name__}: {exc})"
        ) from None
    if ts.isna().any():
        raise BadPayload(PROVIDER, "ohlcv: a quote has no time_open")
    if not np.isfinite(pd.DataFrame(prices).to_numpy()).all():
        raise BadPayload(PROVIDER, "ohlcv: a quote lacks a price")
    if (ts.dt.as_unit("ns").astype("int64") % (interval.seconds * 1_000_000_000)).any():
        raise BadPayload(PROVIDER, f"ohlcv: time_open values are not on the {interval} grid")
    if ts.duplicated().any():
        raise BadPayload(PROVIDER, "ohlcv: the same period appears twice")
    return build_frame(
        provider=PROVIDER,
        symbol=symbol,
        interval=interval.name,
        ts=ts,
        quote_volume=turnover,
        **prices,
    )


def parse_quotes_latest(payload: Any, symbol: str) -> Quote:
    """Parse a ``quotes/latest`` answer for one id: ``quote.USD.price`` as of its
    ``last_updated`` (the coin's own ``last_updated`` when the quote has none)."""
    coin = _coin(payload, symbol, "quotes/latest")
    try:
        usd = coin["quote"][CONVERT]
        price = float(usd["price"])
        stamp = usd.get("last_updated") or coin["last_updated"]
        ts = pd.Timestamp(stamp)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadPayload(PROVIDER, f"quotes/latest: malformed answer ({exc!r})") from None
    if pd.isna(ts):
        raise BadPayload(PROVIDER, "quotes/latest: no last_updated")
    if not math.isfinite(price) or price <= 0:
        raise BadPayload(PROVIDER, f"quotes/latest: implausible price {price}")
    return Quote(provider=PROVIDER, symbol=symbol, price=price, ts=ts)


def _check_id(symbol: str) -> None:
    if not (symbol.isascii() and symbol.isdigit()):
        raise UnknownSymbol(
            PROVIDER, f"{symbol!r} is not a CMC numeric id (e.g. '1' for Bitcoin); not sent"
        )


class CoinMarketCapClient(ProviderClient):
    """CoinMarketCap Pro API; symbols are CMC ids as strings (``"1"``, ``"1027"``)."""

    name = PROVIDER
    LIMITS = ProviderLimits(
        # CMC counts requests per minute (30 on Basic): a 60 s window honours exactly that and,
        # unlike 1 per 2 s, lets the two requests of a long backfill go out together.
        requests=(Window(limit=REQUESTS_PER_MINUTE, period_s=60),),
        quotas=(
            Quota("credits", CREDITS_PER_DAY, "day"),
            Quota("credits", CREDITS_PER_MONTH, "month"),
        ),
    )

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
        super().__init__(
            ProviderHttp(
                PROVIDER,
                base_url,
                map_error,
                runtime or get_runtime(PROVIDER, self.LIMITS, RuntimeConfig()),
                headers={KEY_HEADER: api_key, "Accept": "application/json"},
                check_body=check_body,
                transport=transport,
                sleep=sleep,
            ),
            clock=clock,
        )

    def page_span(self, interval: Interval) -> pd.Timedelta:
        return MAX_COUNT * interval.offset

    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Closed bars opening in ``[start, end)``, in pages of at most 10,000 periods.

        Only periods that have closed by now are asked for (none: no request at all).
        """
        period = time_period(interval)
        _check_id(symbol)
        step = interval.offset
        first = start.tz_convert("UTC").ceil(step)
        last_in_window = end.tz_convert("UTC").ceil(step) - step
        last_closed = self.clock().tz_convert("UTC").floor(step) - step
        last = min(last_in_window, last_closed)
        pages = []
        page_first = first
        while page_first <= last:
            count = min(MAX_COUNT, (last - page_first) // step + 1)
            page_last = page_first + (count - 1) * step
            cost = credits_for(count)
            payload = self.http.get_json(
                "ohlcv",
                OHLCV_PATH,
                {
                    "id": symbol,
                    "time_period": period,
                    "interval": period,
                    "time_start": _stamp(page_first - step, period),
                    "time_end": _stamp(page_last, period),
                    "count": count,
                    "convert": CONVERT,
                },
                quota_cost=cost,
            )
            self._settle_credits(cost, payload)
            pages.append(parse_ohlcv(payload, symbol, interval))
            page_first = page_last + step
        return self.closed_bars(pages, interval, start, end)

    def _latest_price(self, symbol: str) -> Quote:
        _check_id(symbol)
        payload = self.http.get_json(
            "quotes_latest", QUOTES_PATH, {"id": symbol, "convert": CONVERT}, quota_cost=1
        )
        self._settle_credits(1, payload)
        return parse_quotes_latest(payload, symbol)

    def _settle_credits(self, reserved: int, payload: Any) -> None:
        """Bring the credit quotas to what CMC charged: ``refund`` gives back the difference
        (a negative difference takes more)."""
        charged = credit_count(payload)
        if charged is not None and charged != reserved:
            log.debug("%s: charged %d credits, %d reserved", PROVIDER, charged, reserved)
            self.http.runtime.limiter.refund(reserved - charged)


def _stamp(ts: pd.Timestamp, period: str) -> str:
    """A ``time_start``/``time_end`` value: a date for daily (CMC reads only the date part),
    an ISO-8601 UTC instant for hourly."""
    return ts.strftime("%Y-%m-%d") if period == "daily" else ts.strftime("%Y-%m-%dT%H:%M:%SZ")
