"""A Binance USD-M futures REST server: klines, ticker/price, and Binance's error answers.

Bars are generated deterministically from their open time, so any window can be served and
checked. Like the real API, the bar containing the server's ``now`` is returned while still open.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np
import pandas as pd

from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

INTERVAL_MS = {
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
MAX_LIMIT = 1500


def bar_values(open_ms: np.ndarray, interval_ms: int) -> dict[str, np.ndarray]:
    """The deterministic bar that opens at each of ``open_ms``."""
    i = open_ms // interval_ms
    open_ = 100 + (i % 97) * 0.5
    close = open_ + ((i % 7) - 3) * 0.1
    volume = (i % 13) + 1.0
    return {
        "open": open_,
        "high": np.maximum(open_, close) + 0.3,
        "low": np.minimum(open_, close) - 0.3,
        "close": close,
        "volume": volume,
        "quote_volume": volume * (open_ + close) / 2,
        "trades": i % 50 + 1,
    }


def expected_frame(symbol: str, interval: str, start: str, end: str) -> pd.DataFrame:
    """Canonical-column values the server holds for ``[start, end)`` (for assertions)."""
    step = INTERVAL_MS[interval]
    begin = pd.Timestamp(start, tz="UTC").value // 1_000_000
    stop = pd.Timestamp(end, tz="UTC").value // 1_000_000
    opens = np.arange(math.ceil(begin / step) * step, stop, step, dtype=np.int64)
    values = bar_values(opens, step)
    return pd.DataFrame(
        {
            "symbol": symbol,
            "ts": pd.to_datetime(opens, unit="ms", utc=True).as_unit("ns"),
            **{
                k: values[k].astype(float)
                for k in ("open", "high", "low", "close", "volume", "quote_volume")
            },
            "trades": values["trades"],
        }
    )


class FakeBinance(LocalHttpServer):
    """Serves ``/fapi/v1/klines`` and ``/fapi/v1/ticker/price`` for ``symbols``.

    Attributes:
        now_ms: The server's clock; the bar containing it is returned as an open bar.
        symbols: Symbols that exist; any other gets Binance's -1121 answer.
        scripted: Answers to send instead of data, one per request, oldest first.
        failing_symbols: Symbols whose klines requests answer HTTP 500.
    """

    def __init__(self, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT")) -> None:
        super().__init__(self._handle)
        self.symbols = set(symbols)
        self.now_ms = pd.Timestamp("2030-01-01", tz="UTC").value // 1_000_000
        self.scripted: deque[Response] = deque()
        self.failing_symbols: set[str] = set()
        self.used_weight = 0

    @property
    def used_weight(self) -> int:
        """Weight used this minute, as the next answer's X-MBX-USED-WEIGHT-1M will count on."""
        return self._used_weight

    @used_weight.setter
    def used_weight(self, value: int) -> None:
        self._used_weight = value
        self._weight_minute = int(time.time() // 60)

    def _handle(self, request: Request) -> Response:
        if self.scripted:
            return self.scripted.popleft()
        if request.path == "/fapi/v1/klines":
            return self._klines(request.query)
        if request.path == "/fapi/v1/ticker/price":
            return self._ticker_price(request.query)
        return _error(404, -1000, "Not found.")

    def _klines(self, query: dict[str, str]) -> Response:
        symbol, interval = query.get("symbol"), query.get("interval")
        if not symbol or not interval:
            return _error(400, -1102, "Mandatory parameter was not sent, was empty/null.")
        if symbol not in self.symbols:
            return _error(400, -1121, "Invalid symbol.")
        if interval not in INTERVAL_MS:
            return _error(400, -1120, "Invalid interval.")
        if symbol in self.failing_symbols:
            return _error(500, -1000, "An unknown error occurred while processing the request.")
        limit = int(query.get("limit", 500))
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, -1130, "Data sent for parameter 'limit' is not valid.")
        step = INTERVAL_MS[interval]
        start = int(query.get("startTime", self.now_ms - limit * step))
        end = min(int(query.get("endTime", self.now_ms)), self.now_ms)
        first = math.ceil(start / step) * step
        opens = np.arange(first, end + 1, step, dtype=np.int64)[:limit]
        values = bar_values(opens, step)
        rows = [
            [
                int(o),
                f"{values['open'][k]:.2f}",
                f"{values['high'][k]:.2f}",
                f"{values['low'][k]:.2f}",
                f"{values['close'][k]:.2f}",
                f"{values['volume'][k]:.3f}",
                int(o) + step - 1,
                f"{values['quote_volume'][k]:.5f}",
                int(values["trades"][k]),
                f"{values['volume'][k] / 2:.3f}",
                f"{values['quote_volume'][k] / 2:.5f}",
                "0",
            ]
            for k, o in enumerate(opens)
        ]
        if int(time.time() // 60) != self._weight_minute:  # Binance counts weight per minute
            self.used_weight = 0
        self.used_weight += 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10
        return Response.json(rows, headers={"X-MBX-USED-WEIGHT-1M": str(self.used_weight)})

    def _ticker_price(self, query: dict[str, str]) -> Response:
        symbol = query.get("symbol")
        if symbol not in self.symbols:
            return _error(400, -1121, "Invalid symbol.")
        price = bar_values(np.array([self.now_ms]), 60_000)["close"][0]
        return Response.json({"symbol": symbol, "price": f"{price:.2f}", "time": self.now_ms})


def _error(status: int, code: int, msg: str) -> Response:
    return Response.json({"code": code, "msg": msg}, status=status)
