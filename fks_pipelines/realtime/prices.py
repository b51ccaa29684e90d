"""Live prices from the stream, kept in Redis for the HTTP service.

One hash per symbol, ``fks:v1:<provider>:live:<symbol>``, holding the latest price and the event
time Binance stamped on it (ms). Frames of one symbol can arrive out of order (two connections,
a gap fill racing the stream), so a write lands only when its event time is newer than the
stored one: one Lua script, atomic on the server. Entries expire after ``keep_s``, so a symbol
that left the universe does not linger; whether a price is fresh enough to answer with is the
reader's call (:meth:`LivePrice.age_s`). The HTTP service reads the same hashes with an asyncio
client: :func:`live_key` and :func:`decode` are what both readers share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import redis

from fks_pipelines.providers.state import key

KEEP_S = 3600.0
"""How long an entry outlives its last update."""
PROVIDER = "binance"
"""The provider whose prices fks-stream keeps live."""
FIELDS = ("price", "event_ms")
"""The hash's fields, in the order :func:`decode` takes them."""

# KEYS[1] the hash; ARGV: price, event time (ms), expiry (ms). 1 when written, 0 when older.
_PUT_IF_NEWER = """
local stored = redis.call('HGET', KEYS[1], 'event_ms')
if stored and tonumber(stored) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'price', ARGV[1], 'event_ms', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class LivePrice:
    """The latest streamed price of a symbol and when Binance stamped it."""

    symbol: str
    price: float
    event_time: pd.Timestamp

    def age_s(self, now: pd.Timestamp) -> float:
        """Seconds from the event to ``now`` (0 when the clocks disagree the other way)."""
        return max(0.0, (now - self.event_time).total_seconds())


def live_key(symbol: str, provider: str = PROVIDER) -> str:
    """The hash holding the live price of ``symbol``."""
    return key(provider, "live", symbol)


def decode(symbol: str, stored: Sequence[bytes | str | None]) -> LivePrice | None:
    """The live price in :data:`FIELDS` as ``HMGET`` returns them; None when there is none.

    Raises:
        ValueError: A field is not the number the writer stores (a price, an event time in ms).
    """
    price, event_ms = stored
    if price is None or event_ms is None:
        return None
    return LivePrice(
        symbol=symbol,
        price=float(price),
        event_time=pd.Timestamp(int(event_ms), unit="ms", tz="UTC"),
    )


class LivePrices:
    """Latest prices per symbol of one provider, in Redis."""

    def __init__(self, client: redis.Redis, provider: str = PROVIDER, keep_s: float = KEEP_S):
        self._client = client
        self._provider = provider
        self._keep_ms = round(keep_s * 1000)
        self._put = client.register_script(_PUT_IF_NEWER)

    def _key(self, symbol: str) -> str:
        return live_key(symbol, self._provider)

    def put(self, symbol: str, price: float, event_time: pd.Timestamp) -> bool:
        """Keep ``price`` unless a newer one is stored; whether it was kept."""
        event_ms = event_time.value // 1_000_000
        written = self._put(keys=[self._key(symbol)], args=[repr(price), event_ms, self._keep_ms])
        return bool(written)

    def get(self, symbol: str) -> LivePrice | None:
        """The stored price of ``symbol``, None when there is none."""
        return decode(symbol, self._client.hmget(self._key(symbol), FIELDS))
