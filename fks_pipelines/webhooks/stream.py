"""The Redis stream other services read webhook events from: ``fks:v1:webhooks:events``.

Each stored event is added (``XADD``, capped near ``maxlen`` entries) after it is committed to
the warehouse, with its ``id`` and ``seq`` and the fields of :class:`StoredEvent`. Delivery is
at least once: an event whose publication failed, or whose ``published`` flag could not be
recorded, is published again by the webhook sensor, so readers de-duplicate by ``id``.

A Redis that is down does not hold the intake up: the client does not retry, has short
timeouts, and after a failure the stream is not tried again for :data:`COOLDOWN_S` seconds
(those events stay unpublished until the sensor's next tick).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fks_pipelines.providers.state import WarnOnce, key
from fks_pipelines.warehouse.webhook_events import StoredEvent

if TYPE_CHECKING:
    # redis takes ~0.05 s to import, and loading the code location (the webhook sensor) makes no
    # stream without REDIS_URL: it is imported where a client is made or used.
    import redis

log = logging.getLogger(__name__)

STREAM = key("webhooks", "events")
COOLDOWN_S = 5.0


class EventStream:
    """Publishes stored events to the capped Redis stream :data:`STREAM`."""

    def __init__(
        self, client: redis.Redis, maxlen: int, name: str = STREAM, cooldown_s: float = COOLDOWN_S
    ) -> None:
        self.client = client
        self.maxlen = maxlen
        self.name = name
        self.cooldown_s = cooldown_s
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._warn = WarnOnce(log)

    @classmethod
    def from_url(cls, url: str, maxlen: int, cooldown_s: float = COOLDOWN_S) -> EventStream:
        """A stream on the Redis at ``url``; connects on first use."""
        import redis  # see the imports at the top
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url, socket_connect_timeout=1, socket_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        return cls(client, maxlen, cooldown_s=cooldown_s)

    def publish(self, events: Sequence[StoredEvent]) -> bool:
        """Add ``events`` (with their payloads) in one round trip; False if Redis failed.

        Never raises for Redis: the events are stored already, and the sensor publishes what
        this could not.
        """
        import redis  # loaded with the client already; see the imports at the top

        if not events:
            return True
        with self._lock:
            if time.monotonic() < self._retry_at:
                return False
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            pipe.xadd(self.name, _fields(event), maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            with self._lock:
                self._retry_at = time.monotonic() + self.cooldown_s
            self._warn("down", "webhook stream unavailable, events stay unpublished: %s", exc)
            return False
        return True

    def close(self) -> None:
        self.client.close()


def _fields(event: StoredEvent) -> dict[str, str | int]:
    return {
        "id": event.id,
        "seq": event.seq,
        "source": event.source,
        "provider": event.provider,
        "symbol": event.symbol,
        "interval": event.interval,
        "start": event.start.isoformat(),
        "end": event.end.isoformat(),
        "closed": int(event.closed),
        "received_at": event.received_at.isoformat(),
        "payload": json.dumps(event.payload, separators=(",", ":")),
    }
