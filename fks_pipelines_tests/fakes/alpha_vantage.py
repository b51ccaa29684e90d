"""An Alpha Vantage server: ``/query`` with TIME_SERIES_DAILY, TIME_SERIES_INTRADAY and
GLOBAL_QUOTE, and Alpha Vantage's HTTP 200 error bodies.

Sessions are every weekday (no holidays) from 09:30 to 16:00 New York time, 04:00 to 20:00 with
``extended_hours`` on (the default, as at Alpha Vantage). Bars are generated deterministically
from their open instant, so any window can be served and checked; like the real API the answer is
a dict keyed by naive New York time strings, newest first, values as 4-decimal strings. Intraday
bars are laid from the session start at the interval's step (60min: 09:30, 10:30, ..., 15:30; the
real alignment of Alpha Vantage's 60min bars is unverified).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

import numpy as np
import pandas as pd

from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

ZONE = "US/Eastern"
INTERVAL_MINUTES = {"1min": 1, "5min": 5, "15min": 15, "30min": 30, "60min": 60}
DAILY_HISTORY_START = "2023-01-02"
DAILY_INFO = "Daily Prices (open, high, low, close) and Volumes"
INVALID_CALL = (
    "Invalid API call. Please retry or visit the documentation "
    "(https://www.alphavantage.co/documentation/) for {function}."
)
MISSING_KEY = (
    "the parameter apikey is invalid or missing. Please claim your free API key on "
    "(https://www.alphavantage.co/support/#api-key). It should take less than 20 seconds."
)
DAILY_CAP = (
    "We have detected your API key as {key} and our standard API rate limit is 25 requests per "
    "day. Please subscribe to any of the premium plans at https://www.alphavantage.co/premium/ "
    "to instantly remove all daily rate limits."
)
THROTTLE_NOTE = (
    "Thank you for using Alpha Vantage! Our standard API call frequency is 5 calls per minute "
    "and 500 calls per day. Please visit https://www.alphavantage.co/premium/ if you would like "
    "to target a higher API call frequency."
)


def bar_values(open_s: np.ndarray, step_s: int) -> dict[str, np.ndarray]:
    """The deterministic bar that opens at each of ``open_s`` (epoch seconds)."""
    i = open_s // step_s
    open_ = 100 + (i % 97) * 0.5
    close = open_ + ((i % 7) - 3) * 0.1
    return {
        "open": open_,
        "high": np.maximum(open_, close) + 0.25,
        "low": np.minimum(open_, close) - 0.25,
        "close": close,
        "volume": (i % 13 + 1) * 1000.0,
    }


def intraday_local(month: str, minutes: int, extended: bool) -> pd.DatetimeIndex:
    """Naive New York bar opens of every weekday session of ``month`` (``YYYY-MM``)."""
    first = pd.Timestamp(f"{month}-01")
    days = pd.bdate_range(first, first + pd.offsets.MonthEnd(0))
    open_min, close_min = (4 * 60, 20 * 60) if extended else (9 * 60 + 30, 16 * 60)
    offsets = pd.to_timedelta(np.arange(open_min, close_min, minutes), unit="min")
    return pd.DatetimeIndex((days.to_numpy()[:, None] + offsets.to_numpy()[None, :]).ravel())


def intraday_opens(av_interval: str, start: str, end: str) -> pd.DatetimeIndex:
    """UTC opens of the regular-session bars in ``[start, end)`` (for assertions)."""
    lo, hi = pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")
    months = pd.period_range(lo.tz_localize(None), hi.tz_localize(None), freq="M")
    local = intraday_local(str(months[0]), INTERVAL_MINUTES[av_interval], extended=False)
    for month in months[1:]:
        local = local.append(intraday_local(str(month), INTERVAL_MINUTES[av_interval], False))
    utc = local.tz_localize(ZONE).tz_convert("UTC")
    return utc[(utc >= lo) & (utc < hi)]


def expected_values(opens_utc: pd.DatetimeIndex, step_s: int) -> dict[str, list[float]]:
    """The values the server sends for bars opening at ``opens_utc``, rounded as on the wire."""
    values = bar_values(opens_utc.as_unit("s").asi8, step_s)
    return {k: [round(float(x), 4) for x in v] for k, v in values.items()}


class FakeAlphaVantage(LocalHttpServer):
    """Serves ``/query`` for ``symbols``.

    Attributes:
        now: The server's clock; bars opening after it are not served (the one containing it is,
            while still open, as at Alpha Vantage).
        symbols: Tickers that exist; any other gets ``Error Message`` ("Invalid API call") or,
            for GLOBAL_QUOTE, an empty ``Global Quote``.
        scripted: Answers to send instead of data, one per request, oldest first.
        daily_cap: After this many data answers, every request gets the ``Information`` daily-cap
            body (``None``: no cap).
        per_minute: After this many data answers, every request gets the ``Note`` throttle
            (``None``: no throttle). The fake never resets it: tests script a minute's end.
    """

    def __init__(self, symbols: Iterable[str] = ("AAPL", "MSFT", "IBM")) -> None:
        super().__init__(self._handle)
        self.symbols = set(symbols)
        self.now = pd.Timestamp("2024-06-28T20:00:00Z")
        self.scripted: deque[Response] = deque()
        self.daily_cap: int | None = None
        self.per_minute: int | None = None
        self.served = 0

    def _handle(self, request: Request) -> Response:
        if self.scripted:
            return self.scripted.popleft()
        if request.path != "/query":
            return Response(status=404, body=b"<html>Not Found</html>")
        query = request.query
        key = query.get("apikey")
        if not key:
            return Response.json({"Error Message": MISSING_KEY})
        if self.daily_cap is not None and self.served >= self.daily_cap:
            return Response.json({"Information": DAILY_CAP.format(key=key)})
        if self.per_minute is not None and self.served >= self.per_minute:
            return Response.json({"Note": THROTTLE_NOTE})
        function = query.get("function", "")
        handler = {
            "TIME_SERIES_DAILY": self._daily,
            "TIME_SERIES_INTRADAY": self._intraday,
            "GLOBAL_QUOTE": self._global_quote,
        }.get(function)
        if handler is None:
            return Response.json({"Error Message": "This API function () does not exist."})
        response = handler(query)
        self.served += 1
        return response

    def _daily(self, query: dict[str, str]) -> Response:
        symbol = query.get("symbol", "")
        if symbol not in self.symbols:
            return _invalid("TIME_SERIES_DAILY")
        now_ny = self.now.tz_convert(ZONE)
        dates = pd.bdate_range(DAILY_HISTORY_START, now_ny.tz_localize(None).normalize())
        if query.get("outputsize", "compact") == "compact":
            dates = dates[-100:]
        opens_utc = dates.tz_localize("UTC")
        series = _series(dates.strftime("%Y-%m-%d"), opens_utc, 86400)
        meta = {
            "1. Information": DAILY_INFO,
            "2. Symbol": symbol,
            "3. Last Refreshed": dates[-1].strftime("%Y-%m-%d"),
            "4. Output Size": "Full size" if query.get("outputsize") == "full" else "Compact",
            "5. Time Zone": ZONE,
        }
        return Response.json({"Meta Data": meta, "Time Series (Daily)": series})

    def _intraday(self, query: dict[str, str]) -> Response:
        symbol, av_interval = query.get("symbol", ""), query.get("interval", "")
        month = query.get("month")
        if symbol not in self.symbols or av_interval not in INTERVAL_MINUTES or not month:
            return _invalid("TIME_SERIES_INTRADAY")
        try:
            pd.Period(month, freq="M")
        except ValueError:
            return _invalid("TIME_SERIES_INTRADAY")
        minutes = INTERVAL_MINUTES[av_interval]
        extended = query.get("extended_hours", "true") != "false"
        local = intraday_local(month, minutes, extended)
        opens_utc = local.tz_localize(ZONE).tz_convert("UTC")
        served = opens_utc <= self.now
        local, opens_utc = local[served], opens_utc[served]
        if query.get("outputsize", "compact") == "compact":
            local, opens_utc = local[-100:], opens_utc[-100:]
        series = _series(local.strftime("%Y-%m-%d %H:%M:%S"), opens_utc, minutes * 60)
        meta = {
            "1. Information": f"Intraday ({av_interval}) open, high, low, close prices and volume",
            "2. Symbol": symbol,
            "3. Last Refreshed": local[-1].strftime("%Y-%m-%d %H:%M:%S") if len(local) else "",
            "4. Interval": av_interval,
            "5. Output Size": "Full size" if query.get("outputsize") == "full" else "Compact",
            "6. Time Zone": ZONE,
        }
        return Response.json({"Meta Data": meta, f"Time Series ({av_interval})": series})

    def _global_quote(self, query: dict[str, str]) -> Response:
        symbol = query.get("symbol", "")
        if symbol not in self.symbols:
            return Response.json({"Global Quote": {}})
        last = bar_values(np.array([self.now.value // 10**9]), 60)
        day = latest_trading_day(self.now).strftime("%Y-%m-%d")
        return Response.json(
            {
                "Global Quote": {
                    "01. symbol": symbol,
                    "02. open": f"{last['open'][0]:.4f}",
                    "03. high": f"{last['high'][0]:.4f}",
                    "04. low": f"{last['low'][0]:.4f}",
                    "05. price": f"{last['close'][0]:.4f}",
                    "06. volume": f"{last['volume'][0]:.0f}",
                    "07. latest trading day": day,
                    "08. previous close": f"{last['open'][0]:.4f}",
                    "09. change": f"{last['close'][0] - last['open'][0]:.4f}",
                    "10. change percent": "0.0000%",
                }
            }
        )


def latest_trading_day(now: pd.Timestamp) -> pd.Timestamp:
    """``07. latest trading day`` at ``now``: today in New York once its session has opened,
    else the weekday before (naive date)."""
    local = now.tz_convert(ZONE).tz_localize(None)
    day = local.normalize()
    if local - day < pd.Timedelta(hours=9, minutes=30):
        day -= pd.Timedelta(days=1)
    while day.day_of_week >= 5:
        day -= pd.Timedelta(days=1)
    return day


def _series(keys: pd.Index, opens_utc: pd.DatetimeIndex, step_s: int) -> dict[str, dict]:
    """A newest-first series dict of the bars opening at ``opens_utc``, keyed by ``keys``."""
    values = bar_values(opens_utc.as_unit("s").asi8, step_s)
    columns = {
        "1. open": [f"{x:.4f}" for x in values["open"]],
        "2. high": [f"{x:.4f}" for x in values["high"]],
        "3. low": [f"{x:.4f}" for x in values["low"]],
        "4. close": [f"{x:.4f}" for x in values["close"]],
        "5. volume": [f"{x:.0f}" for x in values["volume"]],
    }
    rows = pd.DataFrame(columns, index=keys).iloc[::-1]
    return rows.to_dict(orient="index")


def _invalid(function: str) -> Response:
    return Response.json({"Error Message": INVALID_CALL.format(function=function)})
