"""The Redis stream of webhook events, on a real Redis, and on one that is not there."""

import json
import socket
from datetime import UTC, datetime

import pytest
import redis

from fks_pipelines.warehouse.webhook_events import StoredEvent
from fks_pipelines.webhooks.stream import STREAM, EventStream
from fks_pipelines_tests.services import LocalRedis

AT = datetime(2024, 7, 10, 12, tzinfo=UTC)


def stored(seq: int) -> StoredEvent:
    return StoredEvent(
        seq=seq,
        id=f"generic:id:e{seq}",
        received_at=AT,
        source="generic",
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        start=datetime(2024, 7, 9, tzinfo=UTC),
        end=datetime(2024, 7, 10, tzinfo=UTC),
        closed=True,
        status="pending",
        reason=None,
        published=False,
        payload={"event": "ohlcv.updated", "id": f"e{seq}"},
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_port() -> int:
    """A loopback port where nothing listens (a real unreachable Redis, not a mock)."""
    return free_port()


def test_events_reach_the_capped_stream_with_their_fields(
    redis_client: redis.Redis, redis_url: str
) -> None:
    stream = EventStream.from_url(redis_url, maxlen=1000)

    assert stream.publish([stored(1), stored(2)])

    entries = redis_client.xrange(STREAM)
    assert STREAM == "fks:v1:webhooks:events"
    assert [fields[b"id"] for _, fields in entries] == [b"generic:id:e1", b"generic:id:e2"]
    fields = entries[0][1]
    assert fields[b"seq"] == b"1"
    assert fields[b"start"] == b"2024-07-09T00:00:00+00:00"
    assert fields[b"closed"] == b"1"
    assert json.loads(fields[b"payload"]) == {"event": "ohlcv.updated", "id": "e1"}


def test_the_stream_is_capped_near_maxlen(redis_client: redis.Redis, redis_url: str) -> None:
    stream = EventStream.from_url(redis_url, maxlen=10)

    for seq in range(1, 2001):
        stream.publish([stored(seq)])

    # Approximate trimming removes whole macro nodes (100 entries by default).
    assert 10 <= redis_client.xlen(STREAM) <= 200


def test_an_unreachable_redis_is_reported_not_raised(dead_port: int) -> None:
    stream = EventStream.from_url(f"redis://127.0.0.1:{dead_port}/0", maxlen=1000)

    assert stream.publish([stored(1)]) is False


def test_after_a_failure_redis_rests_for_the_cooldown(dead_port: int) -> None:
    url = f"redis://127.0.0.1:{dead_port}/0"
    resting = EventStream.from_url(url, maxlen=1000)
    eager = EventStream.from_url(url, maxlen=1000, cooldown_s=0)
    assert not resting.publish([stored(1)])
    assert not eager.publish([stored(1)])

    server = LocalRedis.start(port=dead_port)
    try:
        assert not resting.publish([stored(2)])  # not even tried: within its cooldown
        assert eager.publish([stored(3)])
        client = redis.Redis.from_url(url)
        assert [f[b"seq"] for _, f in client.xrange(STREAM)] == [b"3"]
        client.close()
    finally:
        server.stop()
