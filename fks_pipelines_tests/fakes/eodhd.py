"""An EODHD REST server: ``/api/eod``, ``/api/intraday``, ``/api/real-time`` and EODHD's errors.

Bars are generated deterministically from their open time, so any window can be served and
checked. Like the real API:

- the key arrives as the ``api_token`` query parameter; a missing or wrong one gets 401 with an
  HTML body; without ``fmt=json`` the answer is CSV;
- equities (``*.US``) trade on weekdays, 09:30-16:00 New York (DST observed; no holidays or
  half days); each session's intraday bars end with a zero-range closing print at 16:00 New
  York with ``volume: null`` (its price here: the close of the bar before it; in the recording
  ``intraday_AAPL.US_5m_2026-06-01_selected_rows_tradeseven.json`` it is near, not equal);
  crypto (``*.CC``) trades around the clock;
- intraday ``from``/``to`` are Unix seconds (both ends included here) and a request may span at
  most 120/600/7200 days for 1m/5m/1h; the bar containing ``now`` is served while still open;
- an unknown ticker gets 404 with a text body at ``/eod`` and ``/intraday``, and HTTP 200 with
  ``"NA"`` values at ``/real-time``;
- every answer carries ``X-RateLimit-Limit``/``X-RateLimit-Remaining`` (per minute, as in the
  recorded ``user_response_headers_rockbound.json``); past the minute limit the answer is 429
  with ``Retry-After``, past the daily calls it is 429 with calls left in the minute window.

Invented by this fake (no recording exists): the exact text of error bodies, and the 422 answer
to an intraday span longer than the maximum.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from pathlib import Path

import numpy as np
import pandas as pd

from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

API = "/api"
INTERVAL_S = {"1m": 60, "5m": 300, "1h": 3600}
MAX_SPAN_DAYS = {"1m": 120, "5m": 600, "1h": 7200}
CALLS = {"eod": 1, "intraday": 5, "real-time": 1}
NEW_YORK = "America/New_York"
FREE_TIER_WARNING = "Data is limited by one year as you have free subscription."
_HEADERS = json.loads(
    (
        Path(__file__).parent.parent / "fixtures" / "eodhd" / "user_response_headers_rockbound.json"
    ).read_text()
)["headers"]


def bar_values(open_s: np.ndarray, step_s: int) -> dict[str, np.ndarray]:
    """The deterministic bar that opens at each of ``open_s`` (Unix seconds)."""
    i = open_s // step_s
    open_ = 100 + (i % 97) * 0.5
    close = open_ + ((i % 7) - 3) * 0.25
    return {
        "open": open_,
        "high": np.maximum(open_, close) + 0.75,
        "low": np.minimum(open_, close) - 0.5,
        "close": close,
        "volume": (i % 13 + 1) * 1000,
    }


def is_crypto(symbol: str) -> bool:
    return symbol.endswith(".CC")


def trading_days(symbol: str, first: str, last: str) -> pd.DatetimeIndex:
    """Trading dates in ``[first, last]`` (naive dates)."""
    days = pd.date_range(first, last, freq="D")
    return days if is_crypto(symbol) else days[days.day_of_week < 5]


def session_opens(symbol: str, interval: str, start_s: int, end_s: int) -> np.ndarray:
    """Open times (s) of the regular bars of ``interval`` in ``[start_s, end_s]``."""
    step = INTERVAL_S[interval]
    opens = np.arange(math.ceil(start_s / step) * step, end_s + 1, step, dtype=np.int64)
    if is_crypto(symbol):
        return opens
    local = pd.to_datetime(opens, unit="s", utc=True).tz_convert(NEW_YORK)
    minutes = local.hour * 60 + local.minute
    keep = (local.day_of_week < 5) & (minutes >= 9 * 60 + 30) & (minutes < 16 * 60)
    return opens[np.asarray(keep)]


def closing_prints(symbol: str, start_s: int, end_s: int) -> np.ndarray:
    """Times (s) of the 16:00 New York closing prints in ``[start_s, end_s]``."""
    if is_crypto(symbol):
        return np.array([], dtype=np.int64)
    first = pd.Timestamp(start_s, unit="s", tz="UTC").tz_convert(NEW_YORK).date()
    last = pd.Timestamp(end_s, unit="s", tz="UTC").tz_convert(NEW_YORK).date()
    days = trading_days(symbol, str(first), str(last))
    closes = (days + pd.Timedelta(hours=16)).tz_localize(NEW_YORK).tz_convert("UTC")
    seconds = np.asarray(closes.as_unit("s").asi8, dtype=np.int64)
    return seconds[(seconds >= start_s) & (seconds <= end_s)]


def expected_intraday(symbol: str, interval: str, start: str, end: str) -> pd.DataFrame:
    """The bars the server holds opening in ``[start, end)`` (for assertions): the regular bars
    (``bar_kind`` ``traded``) and each session's closing print (``auction``, volume null, its
    price the close of the bar before it)."""
    begin = pd.Timestamp(start, tz="UTC").value // 1_000_000_000
    stop = pd.Timestamp(end, tz="UTC").value // 1_000_000_000
    step = INTERVAL_S[interval]
    opens = session_opens(symbol, interval, begin, stop - 1)
    prints = closing_prints(symbol, begin, stop - 1)
    regular = pd.DataFrame(
        {
            "ts": pd.to_datetime(opens, unit="s", utc=True).as_unit("ns"),
            **{k: v.astype(float) for k, v in bar_values(opens, step).items()},
            "bar_kind": "traded",
        }
    )
    price = bar_values(prints - step, step)["close"].astype(float)
    auction = pd.DataFrame(
        {
            "ts": pd.to_datetime(prints, unit="s", utc=True).as_unit("ns"),
            **dict.fromkeys(("open", "high", "low", "close"), price),
            "volume": np.full(len(prints), np.nan),
            "bar_kind": "auction",
        }
    )
    frames = [f for f in (regular, auction) if len(f)]
    if not frames:
        return regular
    both = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return both.sort_values("ts", kind="stable").reset_index(drop=True)


def expected_daily(symbol: str, first: str, last: str) -> pd.DataFrame:
    """The daily bars the server holds for trading dates in ``[first, last]``."""
    days = trading_days(symbol, first, last)
    values = bar_values(np.asarray(days.asi8 // 1_000_000_000, dtype=np.int64), 86400)
    return pd.DataFrame(
        {
            "ts": days.tz_localize("UTC").as_unit("ns"),
            **{k: v.astype(float) for k, v in values.items()},
        }
    )


class FakeEodhd(LocalHttpServer):
    """Serves EODHD's price endpoints under ``/api`` for ``symbols`` to holders of ``api_key``.

    Attributes:
        base_url: What to give the client (``<url>/api``).
        now: The server's clock: no bar opens after it; the bar containing it is still open.
        scripted: Answers to send instead of data, one per request, oldest first.
        listed: Per symbol, the first and last date with data (others: every date).
        failing_symbols: Symbols whose data requests answer HTTP 500.
        free_tier_since: With a date, ``/eod`` serves nothing before it and appends the free
            tier's ``warning`` element when asked for more.
        minute_limit: Requests per minute before 429 (``X-RateLimit-*`` count down from it).
        daily_calls: API calls per day before 429; ``calls_used`` counts them.
    """

    def __init__(
        self,
        api_key: str = "fake-eodhd-token",
        symbols: tuple[str, ...] = ("AAPL.US", "SPY.US", "BTC-USD.CC"),
    ) -> None:
        super().__init__(self._handle)
        self.api_key = api_key
        self.symbols = set(symbols)
        self.now = pd.Timestamp("2030-01-01", tz="UTC")
        self.scripted: deque[Response] = deque()
        self.listed: dict[str, tuple[str, str]] = {}
        self.failing_symbols: set[str] = set()
        self.free_tier_since: str | None = None
        self.minute_limit = 1000
        self.daily_calls = 100_000
        self.calls_used = 0
        self._minute = int(time.time() // 60)
        self._in_minute = 0

    @property
    def base_url(self) -> str:
        return self.url + API

    def _handle(self, request: Request) -> Response:
        if self.scripted:
            return self.scripted.popleft()
        if request.query.get("api_token") != self.api_key:
            return _text(401, "<html><body><h1>401 Unauthorized</h1></body></html>", "text/html")
        endpoint, _, symbol = request.path.removeprefix(API + "/").partition("/")
        if endpoint not in CALLS or not symbol:
            return _text(404, "<html><body><h1>404 Not Found</h1></body></html>", "text/html")
        limited = self._count(CALLS[endpoint])
        if limited is not None:
            return limited
        if symbol in self.failing_symbols:
            return self._answer(_text(500, "<html><body>Internal Server Error</body></html>"))
        if endpoint == "real-time":
            return self._answer(self._real_time(symbol, request.query))
        if symbol not in self.symbols:
            return self._answer(_text(404, "Ticker Not Found."))
        rows = (
            self._eod(symbol, request.query)
            if endpoint == "eod"
            else self._intraday(symbol, request.query)
        )
        if isinstance(rows, Response):
            return self._answer(rows)
        if request.query.get("fmt") != "json":
            return self._answer(_csv(rows))
        return self._answer(Response.json(rows))

    def _count(self, cost: int) -> Response | None:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute, self._in_minute = minute, 0
        self._in_minute += 1
        if self._in_minute > self.minute_limit:
            return _text(
                429,
                "<html><body><h1>429 Too Many Requests</h1></body></html>",
                "text/html",
                {
                    "X-RateLimit-Limit": str(self.minute_limit),
                    "X-RateLimit-Remaining": "0",
                    "Retry-After": "60",
                },
            )
        if self.calls_used + cost > self.daily_calls:
            return self._answer(
                _text(429, "You have exceeded your daily API requests limit.", "text/html")
            )
        self.calls_used += cost
        return None

    def _answer(self, response: Response) -> Response:
        response.headers = {
            "Server": _HEADERS["Server"],
            "X-RateLimit-Limit": str(self.minute_limit),
            "X-RateLimit-Remaining": str(max(self.minute_limit - self._in_minute, 0)),
            **response.headers,
        }
        return response

    def _window(self, symbol: str, first: str, last: str) -> tuple[str, str]:
        listed_first, listed_last = self.listed.get(symbol, ("1970-01-01", "2100-12-31"))
        today = str(self.now.date())
        return max(first, listed_first), min(last, listed_last, today)

    def _eod(self, symbol: str, query: dict[str, str]) -> list[dict[str, object]] | Response:
        first, last = query.get("from", "1970-01-01"), query.get("to", str(self.now.date()))
        if query.get("period", "d") != "d":
            return _text(422, "Only period=d is served by this fake.")
        clipped = self.free_tier_since is not None and first < self.free_tier_since
        if clipped:
            first = str(self.free_tier_since)
        first, last = self._window(symbol, first, last)
        if first > last:
            return [{"warning": FREE_TIER_WARNING}] if clipped else []
        frame = expected_daily(symbol, first, last)
        rows: list[dict[str, object]] = [
            {
                "date": ts.strftime("%Y-%m-%d"),
                "open": round(o, 4),
                "high": round(h, 4),
                "low": round(lo, 4),
                "close": round(c, 4),
                "adjusted_close": round(c * 0.98, 4),
                "volume": int(v),
            }
            for ts, o, h, lo, c, v in frame[
                ["ts", "open", "high", "low", "close", "volume"]
            ].itertuples(index=False)
        ]
        if clipped:
            rows.append({"warning": FREE_TIER_WARNING})
        return rows

    def _intraday(self, symbol: str, query: dict[str, str]) -> list[dict[str, object]] | Response:
        interval = query.get("interval", "5m")
        if interval not in INTERVAL_S:
            return _text(422, f"Unsupported interval {interval}.")
        try:
            start = int(query["from"])
            end = int(query["to"])
        except (KeyError, ValueError):
            return _text(422, "from and to must be Unix timestamps.")
        if end - start > MAX_SPAN_DAYS[interval] * 86400:
            return _text(422, f"The maximum period for {interval} is {MAX_SPAN_DAYS[interval]} d.")
        listed_first, listed_last = self.listed.get(symbol, ("1970-01-01", "2100-12-31"))
        start = max(start, int(pd.Timestamp(listed_first, tz="UTC").timestamp()))
        listed_end = pd.Timestamp(listed_last, tz="UTC") + pd.Timedelta(days=1)
        end = min(end, int(listed_end.timestamp()) - 1, int(self.now.timestamp()))
        if end < start:
            return []
        step = INTERVAL_S[interval]
        opens = session_opens(symbol, interval, start, end)
        values = bar_values(opens, step)
        rows: list[dict[str, object]] = [
            {
                "timestamp": int(t),
                "gmtoffset": 0,
                "datetime": pd.Timestamp(int(t), unit="s").strftime("%Y-%m-%d %H:%M:%S"),
                "open": round(float(values["open"][k]), 6),
                "high": round(float(values["high"][k]), 6),
                "low": round(float(values["low"][k]), 6),
                "close": round(float(values["close"][k]), 6),
                "volume": int(values["volume"][k]),
            }
            for k, t in enumerate(opens)
        ]
        for t in closing_prints(symbol, start, end):
            last = bar_values(np.array([t - step]), step)["close"][0]
            rows.append(
                {
                    "timestamp": int(t),
                    "gmtoffset": 0,
                    "datetime": pd.Timestamp(int(t), unit="s").strftime("%Y-%m-%d %H:%M:%S"),
                    **dict.fromkeys(("open", "high", "low", "close"), round(float(last), 6)),
                    "volume": None,
                }
            )
        return sorted(rows, key=lambda row: int(str(row["timestamp"])))

    def _real_time(self, symbol: str, query: dict[str, str]) -> Response:
        symbols = [symbol, *[s for s in query.get("s", "").split(",") if s]]
        quotes = [self._quote(s) for s in symbols]
        if query.get("fmt") != "json":
            return _csv(quotes)
        return Response.json(quotes if len(quotes) > 1 else quotes[0])

    def _quote(self, symbol: str) -> dict[str, object]:
        if symbol not in self.symbols:
            fields = ("timestamp", "open", "high", "low", "close", "volume", "previousClose")
            return {"code": symbol, "gmtoffset": 0, **dict.fromkeys(fields, "NA")}
        stamp = int(self.now.timestamp()) // 60 * 60 - 15 * 60  # delayed about 15 minutes
        values = bar_values(np.array([stamp]), 60)
        return {
            "code": symbol,
            "timestamp": stamp,
            "gmtoffset": 0,
            **{k: round(float(values[k][0]), 4) for k in ("open", "high", "low", "close")},
            "volume": int(values["volume"][0]),
            "previousClose": 100.0,
            "change": round(float(values["close"][0]) - 100.0, 4),
            "change_p": round(float(values["close"][0]) - 100.0, 4),
        }


def _text(
    status: int,
    body: str,
    content_type: str = "text/plain",
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        status=status,
        body=body.encode(),
        headers={"Content-Type": f"{content_type}; charset=UTF-8", **(headers or {})},
    )


def _csv(rows: list[dict[str, object]]) -> Response:
    columns = list(rows[0]) if rows else ["Date", "Open", "High", "Low", "Close", "Volume"]
    lines = [",".join(c.capitalize() for c in columns)]
    lines += [
        ",".join("" if row.get(c) is None else str(row.get(c)) for c in columns) for row in rows
    ]
    return _text(200, "\n".join(lines) + "\n", "text/csv")
