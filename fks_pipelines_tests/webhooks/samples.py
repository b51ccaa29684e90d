"""Webhook bodies: documented provider examples, and events of the default universe."""

import json
import time

from fks_pipelines.webhooks.signing import signed_headers

# The kline event of Binance's USD-M futures stream documentation (fields beyond the ones we
# read included), and the AM event of Polygon's WebSocket documentation.
BINANCE_DOCS_KLINE = {
    "e": "kline",
    "E": 1638747660000,
    "s": "BTCUSDT",
    "k": {
        "t": 1638747660000,
        "T": 1638747719999,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "0.0010",
        "c": "0.0020",
        "h": "0.0025",
        "l": "0.0015",
        "v": "1000",
        "n": 100,
        "x": False,
        "q": "1.0000",
        "V": "500",
        "Q": "0.500",
        "B": "123456",
    },
}
POLYGON_DOCS_AM = {
    "ev": "AM",
    "sym": "GTE",
    "v": 4110,
    "av": 9470157,
    "op": 0.4372,
    "vw": 0.4488,
    "o": 0.4488,
    "c": 0.4486,
    "h": 0.4489,
    "l": 0.4486,
    "a": 0.4352,
    "z": 685,
    "s": 1610144640000,
    "e": 1610144700000,
}
GENERIC = {
    "event": "ohlcv.updated",
    "provider": "eodhd",
    "symbol": "AAPL.US",
    "interval": "1d",
    "start": "2024-01-05T00:00:00+00:00",
    "end": "2024-01-09T00:00:00Z",
}


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def closed_kline(symbol: str, interval: str, open_ms: int, event_ms: int | None = None) -> dict:
    """A closed Binance kline event (1h or 1d bars) opening at ``open_ms``."""
    length = {"1h": 3_600_000, "1d": 86_400_000, "1m": 60_000}[interval]
    return {
        "e": "kline",
        "E": event_ms if event_ms is not None else open_ms + length + 7,
        "s": symbol,
        "k": {
            "t": open_ms,
            "T": open_ms + length - 1,
            "s": symbol,
            "i": interval,
            "o": "100.5",
            "c": "101.5",
            "h": "102",
            "l": "99",
            "v": "12.5",
            "x": True,
        },
    }


def headers(secret: str, raw: bytes, at: float | None = None) -> dict[str, str]:
    """Signed headers for ``raw`` at ``at`` (now by default), with the JSON content type."""
    timestamp = int(time.time() if at is None else at)
    return {"Content-Type": "application/json", **signed_headers(secret, raw, timestamp)}
