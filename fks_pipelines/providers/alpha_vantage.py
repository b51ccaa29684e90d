"""Alpha Vantage: US equity bars and the latest price (providers.md section 5).

Endpoints, all ``GET /query?function=...`` with the key as the ``apikey`` query parameter (Alpha
Vantage accepts no header; it is added at send time, so it reaches no cache key, log or error):

- ``1d``: ``TIME_SERIES_DAILY&outputsize=full``, the whole history in one request. The history is
  kept per symbol and UTC day (in the runtime cache when there is one, else in the client), so any
  number of daily windows of a symbol costs one request a day; each window is sliced from it.
- ``1m``, ``5m``, ``15m``, ``30m``, ``1h`` (Alpha Vantage ``60min``):
  ``TIME_SERIES_INTRADAY&month=YYYY-MM&outputsize=full&extended_hours=false&adjusted=false``, one
  request per calendar month the window touches (months before 2000-01, the start of Alpha
  Vantage's intraday history, and months that have not begun are not requested).
- Latest price: ``GLOBAL_QUOTE``.

Wire format: ``{"Meta Data": {..., "<n>. Time Zone": "US/Eastern"}, "Time Series (<x>)": {"<naive
local time>": {"1. open": "<str>", ..., "5. volume": "<str>"}}}``, newest first; every value is a
string and every key carries an ordinal prefix (``"1. open"``, ``"05. price"``).

Bars are Alpha Vantage's own bars, never re-formed: intraday keys are bar **starts** in the zone
named by the ``Meta Data`` entry ending in ``Time Zone`` (its number differs between functions),
localised with DST rules and converted to UTC; daily keys are trading dates and become 00:00 UTC
of that date (the daily-bar label, not a time of trading). ``volume`` is ``5. volume`` in shares
(base units), as given; no quote-currency volume is stated, so ``quote_volume`` is null, and
``vwap`` and ``trades`` are not reported. Both daily and intraday bars are as traded
(``bar_kind`` ``traded``; ``TIME_SERIES_DAILY`` is unadjusted, so intraday asks for
``adjusted=false`` to match it). Months are chosen on the UTC window: with
``extended_hours=false`` every bar lies between 13:30 and 21:00 UTC, on the same calendar date in
New York and in UTC.

``GLOBAL_QUOTE`` gives the trading date of its price (``07. latest trading day``) but no time. The
quote is stamped when that price was true: the regular close of that trading day on the XNYS
calendar (16:00 New York, 13:00 on half days), but never later than the answer arrived (the
client's clock), because during the session the price is the latest one, not the close. Stamping
00:00 UTC of the trading day instead would make a live price look up to 21 hours old, and a
closing price 17 to 21 hours older than it is.

Pitfalls handled:

1. Errors and throttling arrive as HTTP 200. A body is data only if the expected series key (or
   ``Global Quote``) is present; ``Error Message``, ``Note`` and ``Information`` are read by
   :func:`classify` through ``check_body``, so they are retried, paused and counted like the same
   error with its own status code (see :func:`classify` for which text becomes which error).
   Their text can quote the key (the daily cap: ``We have detected your API key as ...``), on
   HTTP 200 and on the rare non-200 answer alike: the registry of :mod:`.secrets` scrubs it from
   every error, and from httpx's logged URLs.
2. String values with ordinal-prefixed keys: prefixes are stripped, the whole table is converted
   at once (``pd.DataFrame.from_dict``); a non-numeric value is a :class:`BadPayload`.
3. Naive local timestamps: localised with the zone in ``Meta Data`` (DST), then UTC.
4. Newest-first dicts: sorted after parsing (:func:`build_frame`).
5. ``compact`` holds 100 points: ``outputsize=full`` is always sent.
6. Pre- and post-market bars: ``extended_hours=false`` is always sent.
7. The two ``DIGITAL_CURRENCY_DAILY`` layouts: not applicable, crypto is not served here.
8. CSV bodies (``datatype=csv``, CRLF, newest first) can be a JSON error document instead:
   :func:`parse_csv` sniffs the body before parsing. The client itself asks for JSON.

A non-JSON answer (an HTML outage page) with HTTP 200 is a :class:`BadPayload` (the shared HTTP
helper decides); with a 5xx status it is :class:`Unavailable`.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from fks_pipelines.market.calendars import session_closes
from fks_pipelines.market.frame import build_frame, empty_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.base import Clock, ProviderClient, utc_now
from fks_pipelines.providers.cache import FRAMES, cache_key
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

PROVIDER = "alpha_vantage"
DEFAULT_BASE_URL = "https://www.alphavantage.co"
KEY_VARIABLE = "ALPHA_VANTAGE_API_KEY"
QUERY_PATH = "/query"
FREE_REQUESTS_PER_DAY = 25
THROTTLE_PAUSE_S = 60.0  # the per-minute throttle (``Note``) names no wait; a minute clears it
BURST_PAUSE_S = 1.0  # "1 request per second" burst message
FIRST_INTRADAY_MONTH = pd.Period("2000-01", freq="M")

INTRADAY_INTERVALS = {"1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min", "1h": "60min"}
SUPPORTED_INTERVALS = (*INTRADAY_INTERVALS, "1d")
DAILY_SERIES = "Time Series (Daily)"
QUOTE_KEY = "Global Quote"
ERROR_KEYS = ("Error Message", "Note", "Information")
FIELDS = ("open", "high", "low", "close", "volume")
_ORDINAL = re.compile(r"^\d+[a-z]?\.\s*")
_DATE_FORMAT = "%Y-%m-%d"
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_MAX_REASON = 200
CALENDAR = "XNYS"
"""Whose regular close stamps a ``GLOBAL_QUOTE`` (the client serves US equities)."""
ZONE = "America/New_York"
DEFAULT_CLOSE = pd.Timedelta(hours=16)


def intraday_series_key(av_interval: str) -> str:
    """The data key of a ``TIME_SERIES_INTRADAY`` answer: ``Time Series (5min)``."""
    return f"Time Series ({av_interval})"


def classify(body: Any, *, status: int = 200) -> ProviderError | None:
    """The error an Alpha Vantage body reports, if any; ``None`` for anything else.

    Alpha Vantage answers every problem with HTTP 200 and one key (the vendor code here):

    - ``Note``: the per-minute throttle -> :class:`RateLimited`, retry after a minute.
    - ``Information``, decided by its text: a request-frequency message ("per second",
      "sparingly", "per minute", "frequency") -> :class:`RateLimited`; the daily cap ("per day",
      "daily") -> :class:`QuotaExhausted`; premium-only functions or parameters, demo, invalid or
      missing keys -> :class:`Unauthorized`; anything else -> :class:`RequestRejected`. The
      frequency test comes first because the burst message also advertises the daily limit.
    - ``Error Message``: a missing or invalid key -> :class:`Unauthorized`; "Invalid API call"
      -> :class:`UnknownSymbol`, because every call this client makes names a symbol with
      parameters it builds itself, and Alpha Vantage gives the same text for a ticker it does not
      know; anything else -> :class:`RequestRejected`.

    Messages are quoted as they come: the key they may echo is scrubbed by every error (see
    :mod:`.secrets`).

    Args:
        body: A decoded JSON body.
        status: The HTTP status the body came with.
    """
    if not isinstance(body, dict):
        return None
    code = next((k for k in ERROR_KEYS if k in body), None)
    if code is None:
        return None
    message = str(body[code])
    reason = clip(message, _MAX_REASON)
    text = message.lower()
    kw: dict[str, Any] = {"status": status, "vendor_code": code}
    if code == "Note":
        return RateLimited(PROVIDER, f"rate limited: {reason}", retry_after=THROTTLE_PAUSE_S, **kw)
    if code == "Information":
        if "per second" in text or "sparingly" in text:
            return RateLimited(PROVIDER, f"rate limited: {reason}", retry_after=BURST_PAUSE_S, **kw)
        if "per minute" in text or "frequency" in text:
            return RateLimited(
                PROVIDER, f"rate limited: {reason}", retry_after=THROTTLE_PAUSE_S, **kw
            )
        if "per day" in text or "daily" in text:
            return QuotaExhausted(PROVIDER, f"daily request quota used up: {reason}", **kw)
        if any(word in text for word in ("premium", "demo", "api key", "apikey")):
            return Unauthorized(PROVIDER, f"not entitled: {reason}", **kw)
        return RequestRejected(PROVIDER, reason, **kw)
    if "apikey" in text or "api key" in text:
        return Unauthorized(PROVIDER, f"API key rejected: {reason}", **kw)
    if "invalid api call" in text:
        return UnknownSymbol(PROVIDER, f"unknown symbol or invalid call: {reason}", **kw)
    return RequestRejected(PROVIDER, reason, **kw)


def map_error(response: httpx.Response, body: Any) -> ProviderError:
    """Map an answer with status >= 400 (rare at Alpha Vantage) to a typed error."""
    status = response.status_code
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimited(
            PROVIDER,
            f"rate limited (HTTP {status})",
            status=status,
            retry_after=retry_after if retry_after is not None else THROTTLE_PAUSE_S,
        )
    if status >= 500:
        return Unavailable(PROVIDER, "server error", status=status)
    if (error := classify(body, status=status)) is not None:
        return error
    if status in (401, 403):
        return Unauthorized(PROVIDER, "API key rejected", status=status)
    return RequestRejected(PROVIDER, "request rejected", status=status)


def _series(body: Any, key: str, endpoint: str) -> dict:
    if not isinstance(body, dict):
        raise BadPayload(PROVIDER, f"{endpoint}: expected an object, got {type(body).__name__}")
    series = body.get(key)
    if not isinstance(series, dict):
        keys = ", ".join(repr(clip(k, 40)) for k in list(body)[:5])
        raise BadPayload(PROVIDER, f"{endpoint}: no {key!r} object in the answer (keys: {keys})")
    return series


def _values(series: dict, endpoint: str) -> pd.DataFrame:
    """The OHLCV columns of a series dict as float64, index = the raw timestamp strings."""
    try:
        rows = pd.DataFrame.from_dict(series, orient="index")
        rows.columns = [_ORDINAL.sub("", str(c)).strip().lower() for c in rows.columns]
        missing = [f for f in FIELDS if f not in rows.columns]
        if missing:
            raise ValueError(f"rows lack {missing}")
        values = rows.loc[:, list(FIELDS)].apply(pd.to_numeric, errors="raise").astype("float64")
    except (ValueError, TypeError, AttributeError) as exc:
        raise BadPayload(PROVIDER, clip(f"{endpoint}: malformed rows ({exc})", 300)) from None
    if values.isna().to_numpy().any():
        raise BadPayload(PROVIDER, f"{endpoint}: rows with missing values")
    return values


def _meta_entry(body: dict, suffix: str) -> str | None:
    meta = body.get("Meta Data")
    if not isinstance(meta, dict):
        return None
    return next((str(v) for k, v in meta.items() if str(k).endswith(suffix)), None)


def _frame(values: pd.DataFrame, ts: pd.DatetimeIndex, symbol: str, interval: str) -> pd.DataFrame:
    return build_frame(
        provider=PROVIDER,
        symbol=symbol,
        interval=interval,
        ts=ts,
        open=values["open"].to_numpy(),
        high=values["high"].to_numpy(),
        low=values["low"].to_numpy(),
        close=values["close"].to_numpy(),
        volume=values["volume"].to_numpy(),
    )


def parse_daily(body: Any, symbol: str) -> pd.DataFrame:
    """Parse ``TIME_SERIES_DAILY`` into canonical 1d bars at 00:00 UTC of each trading date.

    Raises:
        BadPayload: ``Time Series (Daily)`` is missing or its rows are malformed.
    """
    series = _series(body, DAILY_SERIES, "daily")
    if not series:
        return empty_frame()
    values = _values(series, "daily")
    try:
        dates = pd.to_datetime(values.index, format=_DATE_FORMAT)
    except (ValueError, TypeError) as exc:
        raise BadPayload(PROVIDER, clip(f"daily: malformed dates ({exc})", 300)) from None
    return _frame(values, pd.DatetimeIndex(dates).tz_localize("UTC"), symbol, "1d")


def parse_intraday(body: Any, symbol: str, interval: Interval) -> pd.DataFrame:
    """Parse ``TIME_SERIES_INTRADAY`` into canonical bars opening at each key (in UTC).

    Raises:
        BadPayload: The series for ``interval`` is missing, the answer is for another interval,
            the zone is missing or unknown, or a time does not exist or is ambiguous in it.
    """
    av_interval = av_interval_name(interval)
    series = _series(body, intraday_series_key(av_interval), "intraday")
    stated = _meta_entry(body, "Interval")
    if stated is not None and stated != av_interval:
        raise BadPayload(PROVIDER, f"intraday: answer is for {stated!r}, not {av_interval!r}")
    if not series:
        return empty_frame()
    zone = _meta_entry(body, "Time Zone")
    if zone is None:
        raise BadPayload(PROVIDER, "intraday: no 'Time Zone' in 'Meta Data'")
    values = _values(series, "intraday")
    try:
        local = pd.DatetimeIndex(pd.to_datetime(values.index, format=_TIME_FORMAT))
        ts = local.tz_localize(zone, ambiguous="raise", nonexistent="raise").tz_convert("UTC")
    except (ValueError, TypeError, KeyError) as exc:
        raise BadPayload(
            PROVIDER, clip(f"intraday: bad times or zone {zone!r} ({exc})", 300)
        ) from None
    return _frame(values, ts, symbol, interval.name)


def parse_global_quote(body: Any, symbol: str, *, received_at: pd.Timestamp) -> Quote:
    """Parse ``GLOBAL_QUOTE``, stamped when its price was true (see the module docstring).

    Args:
        body: The decoded answer.
        symbol: The ticker asked for.
        received_at: When the answer arrived (the client's clock): the latest the price can be
            from, and the stamp while the trading day's session has not closed.

    Raises:
        UnknownSymbol: ``Global Quote`` is empty, Alpha Vantage's answer for an unknown ticker.
        BadPayload: Anything else malformed.
    """
    quote = _series(body, QUOTE_KEY, "global_quote")
    if not quote:
        raise UnknownSymbol(
            PROVIDER, f"unknown symbol {clip(symbol, 20)!r} (empty 'Global Quote')", status=200
        )
    fields = {_ORDINAL.sub("", str(k)).strip().lower(): v for k, v in quote.items()}
    try:
        if str(fields["symbol"]).upper() != symbol.upper():
            raise ValueError(f"answer is for {clip(fields['symbol'], 20)!r}")
        price = float(fields["price"])
        day = pd.Timestamp(pd.to_datetime(fields["latest trading day"], format=_DATE_FORMAT))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadPayload(PROVIDER, clip(f"global_quote: malformed answer ({exc})", 300)) from None
    if not math.isfinite(price) or price <= 0:
        raise BadPayload(PROVIDER, f"global_quote: implausible price {price}")
    return Quote(provider=PROVIDER, symbol=symbol, price=price, ts=min(_close(day), received_at))


def _close(day: pd.Timestamp) -> pd.Timestamp:
    """The regular close of trading day ``day`` on the XNYS calendar; 16:00 New York (logged)
    when the calendar has no session that day or does not cover it."""
    try:
        close = session_closes(CALENDAR, pd.DatetimeIndex([day]))[0]
    except ValueError as exc:
        close, why = pd.NaT, str(exc)
    else:
        why = f"{day:%Y-%m-%d} is not an {CALENDAR} session"
    if pd.isna(close):
        log.warning("%s: %s; global quote stamped at 16:00 New York", PROVIDER, why)
        return (day + DEFAULT_CLOSE).tz_localize(ZONE).tz_convert("UTC")
    return close


def parse_csv(text: str, symbol: str, interval: Interval, zone: str = "US/Eastern") -> pd.DataFrame:
    """Parse a ``datatype=csv`` body (header ``timestamp,open,high,low,close,volume``, CRLF,
    newest first). The CSV names no zone: ``zone`` is the one ``Meta Data`` would give (US/Eastern
    for US equities). Daily rows become 00:00 UTC of their date.

    Raises:
        ProviderError: The body is a JSON error document (see :func:`classify`).
        BadPayload: The body is neither that nor the expected CSV.
    """
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith(("{", "[")):
        try:
            body = json.loads(stripped)
        except ValueError:
            raise BadPayload(PROVIDER, "csv: answer is neither CSV nor JSON") from None
        raise classify(body) or BadPayload(PROVIDER, "csv: a JSON answer instead of CSV")
    try:
        rows = pd.read_csv(io.StringIO(text), dtype=str)
        rows.columns = [str(c).strip().lower() for c in rows.columns]
        stamp = "timestamp" if "timestamp" in rows.columns else "time"
        values = rows.set_index(stamp).loc[:, list(FIELDS)].apply(pd.to_numeric, errors="raise")
        if values.isna().to_numpy().any():
            raise ValueError("rows with missing values")
        if interval.name == "1d":
            ts = pd.DatetimeIndex(pd.to_datetime(values.index, format=_DATE_FORMAT)).tz_localize(
                "UTC"
            )
        else:
            local = pd.DatetimeIndex(pd.to_datetime(values.index, format=_TIME_FORMAT))
            ts = local.tz_localize(zone, ambiguous="raise", nonexistent="raise").tz_convert("UTC")
    except (ValueError, TypeError, KeyError, pd.errors.ParserError) as exc:
        raise BadPayload(PROVIDER, clip(f"csv: malformed body ({exc})", 300)) from None
    return _frame(values.astype("float64"), ts, symbol, interval.name)


def av_interval_name(interval: Interval) -> str:
    """Alpha Vantage's name of an intraday interval (``1h`` -> ``60min``).

    Raises:
        ValueError: The interval is not one Alpha Vantage serves.
    """
    try:
        return INTRADAY_INTERVALS[interval.name]
    except KeyError:
        supported = ", ".join(SUPPORTED_INTERVALS)
        raise ValueError(
            f"Alpha Vantage has no {interval.name} bars; supported: {supported}"
        ) from None


def months_touched(start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """``YYYY-MM`` of every calendar month (UTC) that ``[start, end)`` touches."""
    if end <= start:
        return []
    first = start.tz_convert("UTC").tz_localize(None).to_period("M")
    last = (end - pd.Timedelta(1, "ns")).tz_convert("UTC").tz_localize(None).to_period("M")
    return [str(p) for p in pd.period_range(first, last, freq="M")]


class AlphaVantageClient(ProviderClient):
    """Alpha Vantage US equities; the key travels as the ``apikey`` query parameter."""

    name = PROVIDER
    LIMITS = ProviderLimits(
        requests=(Window.per_second(5 / 60),),
        quotas=(Quota("requests", FREE_REQUESTS_PER_DAY, "day"),),
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
                auth_params={"apikey": api_key},
                check_body=classify,
                transport=transport,
                sleep=sleep,
            ),
            clock=clock,
        )
        self._histories: dict[str, tuple[pd.Timestamp, pd.DataFrame]] = {}

    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        if interval.name == "1d":
            return self.closed_bars([self._daily_history(symbol)], interval, start, end)
        av_interval = av_interval_name(interval)
        now_month = str(self.clock().tz_convert("UTC").tz_localize(None).to_period("M"))
        first = str(FIRST_INTRADAY_MONTH)
        pages = []
        for month in months_touched(start, end):
            if month < first or month > now_month:
                continue  # no history before 2000-01; a month that has not begun has no bars
            body = self.http.get_json(
                "intraday",
                QUERY_PATH,
                {
                    "function": "TIME_SERIES_INTRADAY",
                    "symbol": symbol,
                    "interval": av_interval,
                    "month": month,
                    "outputsize": "full",
                    "extended_hours": "false",
                    "adjusted": "false",
                },
            )
            pages.append(parse_intraday(body, symbol, interval))
        return self.closed_bars(pages, interval, start, end)

    def _daily_history(self, symbol: str) -> pd.DataFrame:
        """The symbol's whole daily history as of today (UTC): one request per symbol and day,
        shared through the runtime cache by every process, and kept by this client."""
        today = self.clock().tz_convert("UTC").floor("D")
        kept = self._histories.get(symbol)
        if kept is not None and kept[0] == today:
            return kept[1]

        def load() -> pd.DataFrame:
            body = self.http.get_json(
                "daily",
                QUERY_PATH,
                {"function": "TIME_SERIES_DAILY", "symbol": symbol, "outputsize": "full"},
            )
            return parse_daily(body, symbol)

        cache = self.http.runtime.cache
        if cache is None:
            history = load()
        else:
            history = cache.get_or_load(
                cache_key(PROVIDER, "daily_history", {"symbol": symbol, "day": today}),
                FRAMES,
                load,
                lambda _frame: max(
                    1.0, (today + pd.Timedelta(days=1) - self.clock()).total_seconds()
                ),
            ).value
        self._histories[symbol] = (today, history)
        return history

    def _latest_price(self, symbol: str) -> Quote:
        body = self.http.get_json(
            "global_quote", QUERY_PATH, {"function": "GLOBAL_QUOTE", "symbol": symbol}
        )
        return parse_global_quote(body, symbol, received_at=self.clock())
