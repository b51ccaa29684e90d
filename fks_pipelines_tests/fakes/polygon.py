"""A Polygon.io REST server: aggregates, last trades, and Polygon's error answers.

Base aggregates (minute bars, and day bars) are generated deterministically from their start
time, so any window can be served and checked. Like the real API:

- stocks trade 04:00-20:00 New York on weekdays (minute bars only then) and their day bars start
  at midnight New York; crypto (``X:``) trades around the clock with days starting at 00:00 UTC;
- ``limit`` (default 5000, at most 50,000) counts *base* bars; when a page is cut short, the
  trailing partial output bar is left out and ``next_url`` (same host, ``from`` replaced by a ms
  timestamp, a ``cursor`` added, no key) continues after the last full bar;
- an unknown ticker or an empty window is ``resultsCount: 0`` without a ``results`` key;
- the key is accepted as ``Authorization: Bearer`` or ``?apiKey=``; missing or wrong keys get
  HTTP 401, a rate-limit overrun HTTP 429 with the quoted body (no ``Retry-After``);
- the bar containing ``now`` is served while still open.

The 404 body of an unknown last-trade ticker (``NOT_FOUND``/``message``) follows the documented
error envelope; no recording of it was found.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections import deque
from urllib.parse import parse_qsl, unquote

import numpy as np
import pandas as pd

from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

NEW_YORK = "America/New_York"
MINUTE_MS = 60_000
DAY_MS = 86_400_000
UNIT_MS = {"minute": MINUTE_MS, "hour": 3_600_000, "day": DAY_MS}
DEFAULT_LIMIT = 5000
MAX_LIMIT = 50_000
RATE_LIMIT_ERROR = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your subscription"
)
_AGGS = re.compile(r"^/v2/aggs/ticker/([^/]+)/range/(\d+)/([a-z]+)/([^/]+)/([^/]+)$")
_LAST_TRADE = re.compile(r"^/v2/last/trade/([^/]+)$")
_LAST_CRYPTO = re.compile(r"^/v1/last/crypto/([^/]+)/([^/]+)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def is_crypto(ticker: str) -> bool:
    return ticker.startswith("X:")


def base_values(starts_ms: np.ndarray, unit_ms: int, crypto: bool) -> pd.DataFrame:
    """The deterministic base bar (minute or day) starting at each of ``starts_ms``."""
    i = starts_ms // unit_ms
    open_ = 100 + (i % 97) * 0.5
    close = open_ + ((i % 7) - 3) * 0.125
    volume = ((i % 13) + 1) * (0.125 if crypto else 100.0)
    return pd.DataFrame(
        {
            "t": starts_ms,
            "o": open_,
            "h": np.maximum(open_, close) + 0.25,
            "l": np.minimum(open_, close) - 0.25,
            "c": close,
            "v": volume,
            "vw": (open_ + close) / 2,
            "n": i % 50 + 1,
        }
    )


def base_bars(ticker: str, timespan: str, first_ms: int, last_ms: int) -> pd.DataFrame:
    """Every base bar of ``ticker`` starting in ``[first_ms, last_ms]``, oldest first."""
    crypto = is_crypto(ticker)
    if timespan == "day":
        zone = "UTC" if crypto else NEW_YORK
        local_first = pd.Timestamp(first_ms, unit="ms", tz="UTC").tz_convert(zone)
        local_last = pd.Timestamp(last_ms, unit="ms", tz="UTC").tz_convert(zone)
        dates = pd.date_range(local_first.date(), local_last.date(), freq="D")
        if not crypto:
            dates = dates[dates.day_of_week < 5]
        starts = dates.tz_localize(zone).tz_convert("UTC").as_unit("ms").asi8
        keep = (starts >= first_ms) & (starts <= last_ms)
        # a day bar's values are keyed by its trading date (days since 1970-01-01)
        day_numbers = dates[keep].as_unit("ms").asi8 // DAY_MS
        return base_values(day_numbers, 1, crypto).assign(t=starts[keep])
    first = -(-first_ms // MINUTE_MS) * MINUTE_MS
    starts = np.arange(first, last_ms + 1, MINUTE_MS, dtype=np.int64)
    if not crypto:
        local = pd.to_datetime(starts, unit="ms", utc=True).tz_convert(NEW_YORK)
        minutes = local.hour * 60 + local.minute
        starts = starts[(local.day_of_week < 5) & (minutes >= 4 * 60) & (minutes < 20 * 60)]
    return base_values(starts, MINUTE_MS, crypto)


def aggregate(base: pd.DataFrame, window_ms: int) -> pd.DataFrame:
    """Output bars of ``window_ms`` formed from ``base``, as Polygon forms them."""
    if base.empty:
        return base
    key = base["t"] // window_ms * window_ms
    grouped = base.assign(pv=base["vw"] * base["v"]).groupby(key.to_numpy(), sort=True)
    out = grouped.agg(
        o=("o", "first"),
        h=("h", "max"),
        l=("l", "min"),
        c=("c", "last"),
        v=("v", "sum"),
        pv=("pv", "sum"),
        n=("n", "sum"),
    )
    out["vw"] = (out.pop("pv") / out["v"]).round(4)
    return out.rename_axis("t").reset_index()[["t", "o", "h", "l", "c", "v", "vw", "n"]]


def expected_bars(
    ticker: str, multiplier: int, timespan: str, first_ms: int, last_ms: int
) -> pd.DataFrame:
    """The bars the server holds for ``[first_ms, last_ms]`` (no limit), for assertions."""
    base = base_bars(ticker, timespan, first_ms, last_ms)
    return base if timespan == "day" else aggregate(base, multiplier * UNIT_MS[timespan])


class FakePolygon(LocalHttpServer):
    """Serves aggregates and last trades for ``tickers`` to holders of ``api_key``.

    Attributes:
        now_ms: The server's clock; no bar starts after it, the bar containing it is open.
        status_word: The success ``status`` of aggregates and last trades (``OK``/``DELAYED``).
        page_cap: Serve at most this many base bars per page whatever ``limit`` says, to make
            pagination happen on small windows.
        next_url_origin: Origin written into ``next_url`` (default: this server).
        requests_per_minute: Answer HTTP 429 beyond this many requests in any 60 s.
        scripted: Answers to send instead of data, one per request, oldest first.
    """

    def __init__(
        self,
        api_key: str = "test-polygon-key",
        tickers: tuple[str, ...] = ("AAPL", "MSFT", "X:BTCUSD", "X:ETHUSD"),
    ) -> None:
        super().__init__(self._handle)
        self.api_key = api_key
        self.tickers = set(tickers)
        self.now_ms = pd.Timestamp("2030-01-01", tz="UTC").value // 1_000_000
        self.status_word = "OK"
        self.page_cap: int | None = None
        self.next_url_origin: str | None = None
        self.requests_per_minute: int | None = None
        self.scripted: deque[Response] = deque()
        self._served: deque[float] = deque()
        self._count_lock = threading.Lock()
        self._ids = 0

    def _request_id(self) -> str:
        self._ids += 1
        return f"{self._ids:032x}"

    def _handle(self, request: Request) -> Response:
        if self.scripted:
            return self.scripted.popleft()
        offered = request.headers.get("authorization", "").removeprefix("Bearer ")
        offered = offered or request.query.get("apiKey", "")
        if not offered:
            return self._error(401, "ERROR", "error", "API Key was not provided")
        if offered != self.api_key:
            return self._error(401, "ERROR", "error", "Unknown API Key")
        if self._over_rate():
            return self._error(429, "ERROR", "error", RATE_LIMIT_ERROR)
        if match := _AGGS.match(request.path):
            return self._aggs(*match.groups(), query=request.query)
        if match := _LAST_TRADE.match(request.path):
            return self._last_trade(unquote(match.group(1)))
        if match := _LAST_CRYPTO.match(request.path):
            return self._last_crypto(unquote(match.group(1)), unquote(match.group(2)))
        return self._error(404, "NOT_FOUND", "message", "Not found")

    def _over_rate(self) -> bool:
        if self.requests_per_minute is None:
            return False
        now = time.monotonic()
        with self._count_lock:
            while self._served and self._served[0] <= now - 60:
                self._served.popleft()
            if len(self._served) >= self.requests_per_minute:
                return True
            self._served.append(now)
            return False

    def _aggs(
        self, raw_ticker: str, multiplier: str, timespan: str, start: str, end: str, *, query: dict
    ) -> Response:
        ticker = unquote(raw_ticker)
        if timespan not in UNIT_MS or int(multiplier) < 1:
            return self._error(400, "ERROR", "error", f"Invalid timespan '{timespan}'")
        if timespan == "day" and int(multiplier) != 1:
            return self._error(400, "ERROR", "error", "this fake serves 1-day bars only")
        cursor = query.get("cursor")
        options = dict(parse_qsl(base64.urlsafe_b64decode(cursor).decode())) if cursor else query
        try:
            zone = "UTC" if is_crypto(ticker) else NEW_YORK
            first_ms = _bound(start, zone, last=False)
            last_ms = min(_bound(end, zone, last=True), self.now_ms)
            limit = int(options.get("limit", DEFAULT_LIMIT))
        except ValueError:
            return self._error(400, "ERROR", "error", "Could not parse the time parameter")
        if not 1 <= limit <= MAX_LIMIT:
            return self._error(400, "ERROR", "error", f"limit must be between 1 and {MAX_LIMIT}")
        envelope = {"ticker": ticker, "adjusted": options.get("adjusted", "true") == "true"}
        base = (
            base_bars(ticker, timespan, first_ms, last_ms)
            if ticker in self.tickers
            else base_bars(ticker, timespan, 0, -1)
        )
        cap = min(limit, self.page_cap or limit)
        window_ms = int(multiplier) * UNIT_MS[timespan]
        page, rest = base.iloc[:cap], base.iloc[cap:]
        bars = page if timespan == "day" else aggregate(page, window_ms)
        if not rest.empty and timespan != "day":
            rest_first = int(rest["t"].iloc[0])
            if int(bars["t"].iloc[-1]) == rest_first // window_ms * window_ms:
                bars = bars.iloc[:-1]  # the trailing partial bar is left out
        answer: dict = {
            **envelope,
            "queryCount": len(page),
            "resultsCount": len(bars),
            "status": self.status_word,
            "request_id": self._request_id(),
        }
        if len(bars):
            answer["results"] = [
                {k: (int(v) if k in ("t", "n") else float(v)) for k, v in row.items()}
                for row in bars.to_dict("records")
            ]
            answer["count"] = len(bars)
        if not rest.empty:
            next_from = int(bars["t"].iloc[-1]) + window_ms if len(bars) else int(rest["t"].iloc[0])
            token = f"limit={limit}&sort={options.get('sort', 'asc')}"
            token += f"&adjusted={options.get('adjusted', 'true')}"
            answer["next_url"] = (
                f"{self.next_url_origin or self.url}/v2/aggs/ticker/{raw_ticker}/range/"
                f"{multiplier}/{timespan}/{next_from}/{end}"
                f"?cursor={base64.urlsafe_b64encode(token.encode()).decode()}"
            )
        return Response.json(answer)

    def _last_trade(self, ticker: str) -> Response:
        if ticker not in self.tickers or is_crypto(ticker):
            return self._error(404, "NOT_FOUND", "message", "Data not found.")
        ns = self.now_ms * 1_000_000 - 689_382_699  # not representable in a float64
        price = float(base_values(np.array([self.now_ms]), MINUTE_MS, False)["c"].iloc[0])
        result = {
            "T": ticker,
            "c": [12, 37],
            "i": "237688",
            "p": price,
            "s": 2,
            "x": 4,
            "r": 202,
            "z": 3,
            "t": ns,
            "y": ns - 2_617_300,
            "f": ns - 28_900,
            "q": 7084210,
        }
        body = {"results": result, "status": self.status_word, "request_id": self._request_id()}
        return Response.json(body)

    def _last_crypto(self, base: str, quote: str) -> Response:
        if f"X:{base}{quote}" not in self.tickers:
            return self._error(404, "NOT_FOUND", "message", "Data not found.")
        price = float(base_values(np.array([self.now_ms]), MINUTE_MS, True)["c"].iloc[0])
        body = {
            "last": {
                "conditions": [2],
                "exchange": 2,
                "price": price,
                "size": 0.005,
                "timestamp": self.now_ms - 1234,
            },
            "request_id": self._request_id(),
            "status": "success",
            "symbol": f"{base}-{quote}",
        }
        return Response.json(body)

    def _error(self, status: int, word: str, key: str, text: str) -> Response:
        return Response.json(
            {"status": word, "request_id": self._request_id(), key: text}, status=status
        )


def _bound(value: str, zone: str, *, last: bool) -> int:
    """A ``from``/``to`` path value in ms: a ms timestamp, or a date in the ticker's zone
    (``to`` dates are inclusive: up to the end of that day)."""
    if _DATE.match(value):
        day = pd.Timestamp(value).tz_localize(zone)
        if last:
            day = (pd.Timestamp(value) + pd.Timedelta(days=1)).tz_localize(zone)
            return day.tz_convert("UTC").value // 1_000_000 - 1
        return day.tz_convert("UTC").value // 1_000_000
    return int(value)
