"""A CoinMarketCap Pro API server: ohlcv/historical, quotes/latest, and CMC's error answers.

Bars are generated deterministically from their open time, so any window can be served and
checked. It follows CMC's documented semantics: the key in ``X-CMC_PRO_API_KEY``, ``time_start``
exclusive and ``time_end`` inclusive (only the date part for daily), ``count`` at most 10,000,
``interval`` sampling ``time_period`` (default ``daily``, so hourly bars asked without
``interval=hourly`` come one a day), the period containing ``now`` returned while still open,
the single-id and keyed-by-id shapes, ``credit_count`` of 1 per 100 points, and every answer
wrapped in a ``status`` envelope.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np
import pandas as pd

from fks_pipelines_tests.fakes.server import LocalHttpServer, Request, Response

OHLCV = "/v2/cryptocurrency/ohlcv/historical"
QUOTES = "/v2/cryptocurrency/quotes/latest"
PERIOD_S = {"hourly": 3600, "daily": 86400}
SAMPLING_S = {"hourly": 3600, "1h": 3600, "daily": 86400, "1d": 86400, "2d": 172800}
MAX_COUNT = 10_000
COINS = {"1": ("Bitcoin", "BTC"), "1027": ("Ethereum", "ETH"), "5426": ("Solana", "SOL")}
RATE_LIMIT_MESSAGE = (
    "You've exceeded your API Key's HTTP request rate limit. Rate limits reset every minute."
)


def bar_values(open_s: np.ndarray, period_s: int) -> dict[str, np.ndarray]:
    """The deterministic bar that opens at each of ``open_s`` (Unix seconds), keyed as in
    ``quote.USD`` on the wire (``volume`` there is the period's USD turnover)."""
    i = open_s // period_s
    open_ = 20_000 + (i % 97) * 12.5
    close = open_ + ((i % 7) - 3) * 2.25
    return {
        "open": open_,
        "high": np.maximum(open_, close) + 5.5,
        "low": np.minimum(open_, close) - 5.5,
        "close": close,
        "volume": (i % 13 + 1) * 1_000_000.0,
    }


def expected_frame(start: str, end: str, interval: str) -> pd.DataFrame:
    """Bars the server holds opening in ``[start, end)`` (``interval`` 1h or 1d), in canonical
    columns: the wire's USD ``volume`` is ``quote_volume``."""
    step = {"1h": 3600, "1d": 86400}[interval]
    begin = pd.Timestamp(start, tz="UTC").value // 1_000_000_000
    stop = pd.Timestamp(end, tz="UTC").value // 1_000_000_000
    opens = np.arange(math.ceil(begin / step) * step, stop, step, dtype=np.int64)
    values = bar_values(opens, step)
    return pd.DataFrame(
        {
            "ts": pd.to_datetime(opens, unit="s", utc=True).as_unit("ns"),
            **{k: values[k] for k in ("open", "high", "low", "close")},
            "quote_volume": values["volume"],
        }
    )


def _iso(seconds: np.ndarray, suffix: str = ".000Z") -> list[str]:
    stamps = pd.to_datetime(seconds, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%S")
    return [f"{s}{suffix}" for s in stamps]


def envelope(data: object, credits: int = 1, *, error_code: int = 0, message: str | None = None):
    return {
        "status": {
            "timestamp": "2024-01-05T12:00:00.000Z",
            "error_code": error_code,
            "error_message": message,
            "elapsed": 7,
            "credit_count": credits,
            "notice": None,
        },
        **({"data": data} if data is not None else {}),
    }


def error(status: int, code: int, message: str | None) -> Response:
    """A CMC error answer: a status envelope and no data."""
    return Response.json(envelope(None, 0, error_code=code, message=message), status=status)


class FakeCoinMarketCap(LocalHttpServer):
    """Serves ``/v2/cryptocurrency/ohlcv/historical`` and ``/v2/cryptocurrency/quotes/latest``.

    Attributes:
        api_key: The only key accepted.
        now: The server's clock; the period containing it is returned as an open period.
        listed_from: First bar per id (none before it), like a coin listed late.
        scripted: Answers to send instead of data, one per request, oldest first.
        credits_charged: Sum of the ``credit_count`` of every successful answer.
    """

    def __init__(self, api_key: str = "test-cmc-key") -> None:
        super().__init__(self._handle)
        self.api_key = api_key
        self.now = pd.Timestamp("2030-01-01", tz="UTC")
        self.listed_from: dict[str, pd.Timestamp] = {}
        self.scripted: deque[Response] = deque()
        self.credits_charged = 0

    def _handle(self, request: Request) -> Response:
        if self.scripted:
            return self.scripted.popleft()
        key = request.headers.get("x-cmc_pro_api_key")
        if key is None:
            return error(401, 1002, "API key missing.")
        if key != self.api_key:
            return error(401, 1001, "This API Key is invalid.")
        if request.path == OHLCV:
            return self._ohlcv(request.query)
        if request.path == QUOTES:
            return self._quotes(request.query)
        return error(404, 404, "Not found")

    def _ids(self, query: dict[str, str]) -> list[str] | Response:
        if "id" not in query:
            return error(400, 400, '"value" must contain at least one of [id, slug, symbol]')
        ids = query["id"].split(",")
        for coin_id in ids:
            if not coin_id.isdigit():
                return error(400, 400, '"id" must only include numeric comma-separated values')
            if coin_id not in COINS:
                return error(400, 400, f'Invalid value for "id": "{coin_id}"')
        return ids

    def _ohlcv(self, query: dict[str, str]) -> Response:
        ids = self._ids(query)
        if isinstance(ids, Response):
            return ids
        period = query.get("time_period", "daily")
        sampling = query.get("interval", "daily")
        if period not in PERIOD_S:
            return error(400, 400, f'Invalid value for "time_period": "{period}"')
        if sampling not in SAMPLING_S:
            return error(400, 400, f'Invalid value for "interval": "{sampling}"')
        count = int(query.get("count", 10))
        if not 1 <= count <= MAX_COUNT:
            return error(400, 400, '"count" must be less than or equal to 10000')
        step = PERIOD_S[period]
        now_s = self.now.value // 1_000_000_000
        end_s = min(self._seconds(query.get("time_end"), period, now_s), now_s) // step * step
        if "time_start" in query:
            first = self._seconds(query["time_start"], period, 0) // step * step + step
            opens = np.arange(first, end_s + 1, step, dtype=np.int64)[:count]
        else:
            opens = np.arange(end_s - (count - 1) * step, end_s + 1, step, dtype=np.int64)
        opens = opens[opens % SAMPLING_S[sampling] == 0]
        coins = {}
        points = 0
        for coin_id in ids:
            listed = self.listed_from.get(coin_id)
            mine = opens if listed is None else opens[opens >= listed.value // 1_000_000_000]
            points += len(mine)
            coins[coin_id] = self._coin(coin_id, mine, step)
        credits = max(1, math.ceil(points / 100))
        self.credits_charged += credits
        data = coins[ids[0]] if len(ids) == 1 else coins
        return Response.json(envelope(data, credits))

    @staticmethod
    def _seconds(value: str | None, period: str, default: int) -> int:
        if value is None:
            return default
        if value.isdigit():
            ts = pd.Timestamp(int(value), unit="s", tz="UTC")
        else:
            ts = pd.Timestamp(value)
            ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        if period == "daily":
            ts = ts.floor("D")  # CMC reads only the date part
        return ts.value // 1_000_000_000

    @staticmethod
    def _coin(coin_id: str, opens: np.ndarray, step: int) -> dict[str, object]:
        name, symbol = COINS[coin_id]
        values = bar_values(opens, step)
        closes = _iso(opens + step - 1, ".999Z")
        quotes = [
            {
                "time_open": t_open,
                "time_close": t_close,
                "time_high": t_open,
                "time_low": t_open,
                "quote": {
                    "USD": {
                        **{k: float(values[k][n]) for k in values},
                        "market_cap": float(values["close"][n]) * 19_000_000,
                        "timestamp": t_close,
                    }
                },
            }
            for n, (t_open, t_close) in enumerate(zip(_iso(opens), closes, strict=True))
        ]
        return {"id": int(coin_id), "name": name, "symbol": symbol, "quotes": quotes}

    def _quotes(self, query: dict[str, str]) -> Response:
        ids = self._ids(query)
        if isinstance(ids, Response):
            return ids
        now_s = self.now.value // 1_000_000_000
        minute = now_s // 60 * 60
        updated = _iso(np.array([minute]))[0]
        data = {}
        for coin_id in ids:
            name, symbol = COINS[coin_id]
            price = float(bar_values(np.array([minute]), 60)["close"][0]) + int(coin_id)
            data[coin_id] = {
                "id": int(coin_id),
                "name": name,
                "symbol": symbol,
                "slug": name.lower(),
                "last_updated": updated,
                "quote": {"USD": {"price": price, "volume_24h": 1e9, "last_updated": updated}},
            }
        self.credits_charged += 1
        return Response.json(envelope(data, 1))

    def quote_price(self, coin_id: str) -> float:
        """The price ``quotes/latest`` answers for ``coin_id`` at the server's ``now``."""
        minute = self.now.value // 1_000_000_000 // 60 * 60
        return float(bar_values(np.array([minute]), 60)["close"][0]) + int(coin_id)
