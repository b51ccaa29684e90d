"""EODHD (EOD Historical Data): daily and intraday bars, and the latest price (providers.md 6).

Endpoints per interval (every request carries ``fmt=json``; without it EODHD answers CSV):

- ``1d``: ``GET /eod/{SYMBOL.EXCHANGE}?from=YYYY-MM-DD&to=YYYY-MM-DD&period=d``, the whole window
  in one request (1 API call).
- ``1m``, ``5m``, ``1h``: ``GET /intraday/{SYMBOL.EXCHANGE}?interval=..&from=<s>&to=<s>``, split
  into spans of at most 120, 600 and 7200 days (the per-request maxima); 5 API calls each.
- latest price: ``GET /real-time/{SYMBOL.EXCHANGE}`` (1 API call); its ``close`` is the price.

Wire format: JSON arrays of objects with numeric ``open``/``high``/``low``/``close``/``volume``;
EOD rows carry ``date`` (the exchange's trading date), intraday rows ``timestamp`` (the bar's
start, Unix seconds UTC).

Bars are the provider's own bars, never derived. A ``1d`` bar's ``ts`` is its trading date at
00:00 UTC; an intraday bar's ``ts`` is its ``timestamp``. Prices are the raw (unadjusted)
``open``/``high``/``low``/``close``; ``adjusted_close`` is not used, because it adjusts the
close alone and mixing it with raw open/high/low would give inconsistent bars. ``volume`` is
EODHD's ``volume`` in shares (base units), as given; no quote-currency volume is stated, so
``quote_volume`` is null, as are ``vwap`` and ``trades``.

Pitfalls handled:

- ``fmt=json`` is always sent; a CSV or HTML body is :class:`BadPayload`, never a crash.
- ``from``/``to`` are dates for ``/eod`` and Unix seconds for ``/intraday``; intraday ``to`` is
  sent as the last second before the window's end, so consecutive spans never overlap.
- ``volume: null``: the closing-auction print of a US session (an intraday bar starting exactly
  at the regular close on the XNYS calendar, 16:00 New York or 13:00 on half days, whose open
  equals high, low and close; recorded at 20:00Z on 2026-06-01) is kept with ``bar_kind``
  ``auction``: its price as given and its volume null (EODHD states none, and 0 would be a claim
  it did not make). Any other bar without a volume is kept as ``traded`` with a null volume (a
  null is not a claim either); their count is logged at WARNING. Only ``*.US`` tickers are
  matched to a calendar: on other exchanges no bar is taken for an auction print.
- The free tier's trailing ``{"warning": ...}`` element (history capped at a year) is dropped
  and its text logged at WARNING; any other element without a date or timestamp is
  :class:`BadPayload`.
- ``/real-time`` answers an object for one ticker and an array with ``s=``; both are read. An
  unknown ticker there comes back as HTTP 200 with ``"NA"`` values: :class:`UnknownSymbol`.
- Error bodies (401/402/403/404/429) are often text or HTML: errors are mapped by status; a text
  body never reaches an error message (a JSON ``message`` is quoted, with any ``api_token=``
  value cut and the registered token scrubbed, see :mod:`.secrets`). 429 is
  :class:`QuotaExhausted` when the daily calls are used up (the body says "daily", or
  ``X-RateLimit-Remaining`` shows the per-minute window is not what ran out), else
  :class:`RateLimited` with ``Retry-After``.
- ``X-RateLimit-Remaining: 0`` pauses every process until the next minute (shared pacing).
- Each request's cost in API calls (1 or 5) is charged to the daily quota.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from fks_pipelines.market.calendars import session_closes
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

PROVIDER = "eodhd"
DEFAULT_BASE_URL = "https://eodhd.com/api"
KEY_VARIABLE = "EODHD_API_KEY"

REQUESTS_PER_MINUTE = 1000
DAILY_CALLS = 100_000  # every paid plan (the free plan allows 20)
EOD_CALLS = 1
INTRADAY_CALLS = 5
REAL_TIME_CALLS = 1

DAILY = "1d"
EOD_PAGE_DAYS = 36_500
MAX_SPAN_DAYS = {"1m": 120, "5m": 600, "1h": 7200}
"""Longest ``to - from`` one intraday request may span, per interval."""
SUPPORTED_INTERVALS = (*MAX_SPAN_DAYS, DAILY)

_PRICES = ("open", "high", "low", "close")
_TOKEN_IN_TEXT = re.compile(r"(api_token=)[^&\s\"'<>]*", re.IGNORECASE)
_NA = "NA"
_EXCHANGE_CALENDARS = {"US": "XNYS"}
"""EODHD exchange suffix -> exchange calendar; US listings share NYSE's regular hours."""


# --- errors ----------------------------------------------------------------------------------


def map_error(response: httpx.Response, body: Any) -> ProviderError:
    """Map an EODHD error answer (status >= 400) to a typed error, by its status.

    Bodies are often text or HTML, so only a JSON body's ``message`` is quoted (with any
    ``api_token=`` value cut); EODHD sends no vendor error codes.
    """
    return _error_for(response.status_code, response.headers, body, response.text)


def check_body(body: Any) -> ProviderError | None:
    """Errors EODHD reports with HTTP 200: ``"NA"`` real-time values (unknown ticker) and a
    JSON error envelope ``{"status": 4xx, "error": .., "message": ..}``."""
    if not isinstance(body, dict):
        return None
    if body.get("close") == _NA or body.get("timestamp") == _NA:
        return UnknownSymbol(
            PROVIDER, "unknown symbol: real-time answered 'NA'", status=200, vendor_code=_NA
        )
    status = body.get("status")
    if (
        isinstance(status, int)
        and not isinstance(status, bool)
        and status >= 400
        and ("error" in body or "message" in body)
    ):
        return _error_for(status, {}, body, "")
    return None


def _error_for(status: int, headers: Mapping[str, str], body: Any, text: str) -> ProviderError:
    detail = _message(body)
    suffix = f": {detail}" if detail else ""
    if status == 401:
        return Unauthorized(PROVIDER, f"invalid or missing API token{suffix}", status=status)
    if status in (402, 403):
        return Unauthorized(PROVIDER, f"the plan does not include this data{suffix}", status=status)
    if status == 404:
        return UnknownSymbol(PROVIDER, f"unknown symbol{suffix}", status=status)
    if status == 429:
        if _daily_calls_used_up(headers, body, text):
            return QuotaExhausted(PROVIDER, f"daily API calls used up{suffix}", status=status)
        return RateLimited(
            PROVIDER,
            f"rate limited (requests per minute){suffix}",
            status=status,
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )
    if status >= 500:
        return Unavailable(PROVIDER, f"server error{suffix}", status=status)
    return RequestRejected(PROVIDER, f"request rejected{suffix}", status=status)


def _daily_calls_used_up(headers: Mapping[str, str], body: Any, text: str) -> bool:
    """A 429 is the daily quota when the body says so, or when the per-minute window (which
    ``X-RateLimit-Remaining`` counts) still has requests left."""
    said = (json.dumps(body) if body is not None else text[:2000]).lower()
    if "daily" in said or "per day" in said:
        return True
    remaining = headers.get("X-RateLimit-Remaining")
    return remaining is not None and remaining.strip().isdigit() and int(remaining) > 0


def _message(body: Any) -> str | None:
    """The JSON body's own message (``api_token=`` values cut, one short line); ``None`` for
    text bodies."""
    if not isinstance(body, dict):
        return None
    message = body.get("message") or body.get("error")
    if not isinstance(message, str) or not message.strip():
        return None
    return clip(_TOKEN_IN_TEXT.sub(r"\1***", " ".join(message.split())), 200)


# --- parsing ---------------------------------------------------------------------------------


def parse_eod(payload: Any, symbol: str) -> pd.DataFrame:
    """Parse an ``/eod`` answer into canonical ``1d`` bars (ts = trading date 00:00 UTC).

    Raises:
        BadPayload: The answer is not a list of daily rows.
    """
    rows = _rows(payload, "eod", "date")
    if rows is None:
        return empty_frame()
    try:
        if pd.api.types.infer_dtype(rows["date"], skipna=False) != "string":
            raise TypeError("dates must be YYYY-MM-DD strings")
        ts = pd.to_datetime(rows["date"], format="%Y-%m-%d", utc=True)
    except (ValueError, TypeError) as exc:
        raise BadPayload(PROVIDER, f"eod: malformed date ({exc})") from None
    return _frame(rows, ts, symbol, DAILY, "eod")


def parse_intraday(payload: Any, symbol: str, interval: Interval) -> pd.DataFrame:
    """Parse an ``/intraday`` answer into canonical bars (ts = ``timestamp``, the bar start).

    Raises:
        BadPayload: The answer is not a list of intraday rows.
    """
    rows = _rows(payload, "intraday", "timestamp")
    if rows is None:
        return empty_frame()
    try:
        seconds = pd.to_numeric(rows["timestamp"], errors="raise").astype("float64")
        if not (seconds % 1 == 0).all():
            raise ValueError("timestamps must be whole seconds")
        ts = pd.to_datetime(seconds.astype("int64"), unit="s", utc=True)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadPayload(PROVIDER, f"intraday: malformed timestamp ({exc})") from None
    return _frame(rows, ts, symbol, interval.name, "intraday")


def parse_real_time(payload: Any, symbol: str) -> Quote:
    """Parse a ``/real-time`` answer (an object, or an array when ``s=`` was sent).

    Raises:
        UnknownSymbol: The answer holds ``"NA"`` values (EODHD's HTTP 200 for unknown tickers).
        BadPayload: The answer has no usable price for ``symbol``.
    """
    if isinstance(payload, list):
        matches = [
            item
            for item in payload
            if isinstance(item, dict) and str(item.get("code", "")).upper() == symbol.upper()
        ]
        if len(matches) != 1:
            raise BadPayload(PROVIDER, f"real-time: no single entry for {symbol!r} in the array")
        payload = matches[0]
    if not isinstance(payload, dict):
        raise BadPayload(PROVIDER, f"real-time: expected an object, got {type(payload).__name__}")
    if (error := check_body(payload)) is not None:
        raise error
    try:
        code = payload.get("code")
        if code is not None and str(code).upper() != symbol.upper():
            raise ValueError(f"answer is for {code!r}")
        price, stamp = payload["close"], payload["timestamp"]
        if isinstance(price, bool) or isinstance(stamp, bool):
            raise TypeError("boolean where a number was expected")
        price = float(price)
        seconds = float(stamp)
        if not math.isfinite(seconds) or seconds % 1:
            raise ValueError(f"timestamp {stamp!r} is not whole seconds")
        ts = pd.Timestamp(int(seconds), unit="s", tz="UTC")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise BadPayload(PROVIDER, f"real-time: malformed answer ({exc})") from None
    if not math.isfinite(price) or price <= 0:
        raise BadPayload(PROVIDER, f"real-time: implausible price {price}")
    return Quote(provider=PROVIDER, symbol=symbol, price=price, ts=ts)


def _rows(payload: Any, endpoint: str, key: str) -> pd.DataFrame | None:
    """The answer's rows as a frame, without the free tier's undated ``warning`` elements;
    ``None`` when no rows remain."""
    if not isinstance(payload, list):
        raise BadPayload(
            PROVIDER, f"{endpoint}: expected a list of rows, got {type(payload).__name__}"
        )
    if not payload:
        return None
    try:
        rows = pd.DataFrame.from_records(payload)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadPayload(PROVIDER, f"{endpoint}: rows are not objects ({exc})") from None
    if key not in rows.columns:
        if "warning" in rows.columns and rows["warning"].notna().all():
            _log_warnings(rows["warning"], endpoint)
            return None
        raise BadPayload(PROVIDER, f"{endpoint}: rows lack {key!r}")
    undated = rows[key].isna()
    if undated.any():
        notes = rows["warning"].loc[undated] if "warning" in rows.columns else None
        if notes is None or notes.isna().any():
            raise BadPayload(PROVIDER, f"{endpoint}: {int(undated.sum())} row(s) lack {key!r}")
        _log_warnings(notes, endpoint)
        rows = rows.loc[~undated].reset_index(drop=True)
    missing = [c for c in (*_PRICES, "volume") if c not in rows.columns]
    if missing:
        raise BadPayload(PROVIDER, f"{endpoint}: rows lack {missing}")
    return rows


def _log_warnings(notes: pd.Series, endpoint: str) -> None:
    text = "; ".join(sorted({clip(n, 200) for n in notes.dropna()}))
    log.warning(
        "%s %s: dropped %d element(s) without data: %s", PROVIDER, endpoint, len(notes), text
    )


def _frame(
    rows: pd.DataFrame, ts: pd.Series, symbol: str, interval: str, endpoint: str
) -> pd.DataFrame:
    try:
        prices = rows[list(_PRICES)].apply(pd.to_numeric, errors="raise").astype("float64")
        volume = pd.to_numeric(rows["volume"], errors="raise").astype("float64")
    except (ValueError, TypeError) as exc:
        raise BadPayload(PROVIDER, f"{endpoint}: non-numeric values ({exc})") from None
    if prices.isna().to_numpy().any():
        raise BadPayload(PROVIDER, f"{endpoint}: rows with null prices")
    starts = pd.DatetimeIndex(ts)
    no_volume = volume.isna().to_numpy()
    auction = np.zeros(len(rows), dtype=bool)
    if no_volume.any() and interval != DAILY:
        zero_range = prices.eq(prices["open"], axis=0).all(axis=1).to_numpy()
        candidates = np.flatnonzero(no_volume & zero_range)
        auction[candidates] = _at_regular_close(starts[candidates], symbol)
    others = int(no_volume.sum() - auction.sum())
    if others:
        log.warning(
            "%s %s %s: %d bar(s) without volume kept with a null volume",
            PROVIDER,
            symbol,
            interval,
            others,
        )
    return build_frame(
        provider=PROVIDER,
        symbol=symbol,
        interval=interval,
        ts=starts,
        open=prices["open"].to_numpy(),
        high=prices["high"].to_numpy(),
        low=prices["low"].to_numpy(),
        close=prices["close"].to_numpy(),
        volume=volume.to_numpy(),
        bar_kind=np.where(auction, "auction", "traded"),
    )


def _at_regular_close(starts: pd.DatetimeIndex, symbol: str) -> np.ndarray:
    """Which bars start exactly at their session's regular close (the closing-auction print),
    on the exchange calendar of ``symbol``'s exchange suffix; all false for an exchange without
    a known calendar, or for dates the calendar does not cover."""
    code = _EXCHANGE_CALENDARS.get(symbol.rsplit(".", 1)[-1].upper()) if "." in symbol else None
    if code is None:
        return np.zeros(len(starts), dtype=bool)
    # A regular close lies in the exchange's afternoon, which is the same date in UTC.
    days = starts.tz_convert("UTC").tz_localize(None).normalize()
    try:
        closes = session_closes(code, days)
    except ValueError as exc:
        log.warning("%s %s: no closing-auction check (%s)", PROVIDER, symbol, exc)
        return np.zeros(len(starts), dtype=bool)
    return np.asarray(closes == starts)


# --- client ----------------------------------------------------------------------------------


def intraday_spans(
    interval: Interval, start: pd.Timestamp, end: pd.Timestamp
) -> list[tuple[int, int]]:
    """``(from, to)`` Unix seconds of the requests covering bar opens in ``[start, end)``.

    ``to`` is the last second before the span's end, so spans never overlap, and no span
    exceeds the interval's maximum.
    """
    span = MAX_SPAN_DAYS[interval.name] * 86400
    begin = math.ceil(pd.Timestamp(start).value / 1e9)
    stop = math.ceil(pd.Timestamp(end).value / 1e9)
    return [(cursor, min(cursor + span, stop) - 1) for cursor in range(begin, stop, span)]


class EodhdClient(ProviderClient):
    """EODHD end-of-day and intraday bars and real-time prices (key: ``EODHD_API_KEY``)."""

    name = PROVIDER
    LIMITS = ProviderLimits(
        requests=(Window.per_second(REQUESTS_PER_MINUTE / 60),),
        quotas=(Quota("calls", DAILY_CALLS, "day"),),
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
                headers={"Accept": "application/json"},
                auth_params={"api_token": api_key},
                check_body=check_body,
                transport=transport,
                sleep=sleep,
            ),
            clock=clock,
        )

    def page_span(self, interval: Interval) -> pd.Timedelta:
        """Intraday: the longest span one request may cover; daily: any range is one request,
        so a century stands for "everything"."""
        days = MAX_SPAN_DAYS.get(interval.name, EOD_PAGE_DAYS)
        return pd.Timedelta(days=days)

    def _fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Closed bars opening in ``[start, end)``: one ``/eod`` request for ``1d``, one
        ``/intraday`` request per maximal span otherwise."""
        if interval.name == DAILY:
            pages = self._eod(symbol, start, end)
        elif interval.name in MAX_SPAN_DAYS:
            pages = [
                parse_intraday(
                    self.http.get_json(
                        "intraday",
                        f"/intraday/{_path(symbol)}",
                        {"interval": interval.name, "from": begin, "to": last, "fmt": "json"},
                        quota_cost=INTRADAY_CALLS,
                    ),
                    symbol,
                    interval,
                )
                for begin, last in intraday_spans(interval, start, end)
            ]
        else:
            raise ValueError(
                f"{PROVIDER}: unsupported interval {interval.name!r}; "
                f"supported: {', '.join(SUPPORTED_INTERVALS)}"
            )
        return self.closed_bars(pages, interval, start, end)

    def _eod(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> list[pd.DataFrame]:
        first = pd.Timestamp(start).tz_convert("UTC").ceil("D")
        last = (pd.Timestamp(end).tz_convert("UTC") - pd.Timedelta(1, "ns")).floor("D")
        if first > last:
            return []
        payload = self.http.get_json(
            "eod",
            f"/eod/{_path(symbol)}",
            {
                "from": first.strftime("%Y-%m-%d"),
                "to": last.strftime("%Y-%m-%d"),
                "period": "d",
                "fmt": "json",
            },
            quota_cost=EOD_CALLS,
        )
        return [parse_eod(payload, symbol)]

    def _latest_price(self, symbol: str) -> Quote:
        payload = self.http.get_json(
            "real_time", f"/real-time/{_path(symbol)}", {"fmt": "json"}, quota_cost=REAL_TIME_CALLS
        )
        return parse_real_time(payload, symbol)


def _path(symbol: str) -> str:
    return quote(symbol, safe="")
