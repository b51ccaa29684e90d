"""The stream bridge against a local combined-stream server, the real intake, warehouse and Redis.

Each test runs the bridge with a clock set to a morning of 2024 (real seconds still pass), a
Binance REST fake for gap fills, and the webhook intake storing into a real warehouse. The
claim throughout: every kline that closed is stored exactly once, however the connection ends,
and what the stream carries reaches Redis while the warehouse cannot keep up.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pandas as pd
import pytest
import redis
import sqlalchemy as sa
from prometheus_client import REGISTRY

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.clients import ProviderOptions, build_client
from fks_pipelines.providers.runtime import RuntimeConfig
from fks_pipelines.realtime.binance import connection_urls
from fks_pipelines.realtime.bridge import Backoff, BridgeOptions, StreamBridge, kline_events
from fks_pipelines.realtime.prices import LivePrices
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import WebhookEventStore
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.binance_stream import FakeBinanceStream, kline

T0 = pd.Timestamp("2024-01-05T10:00:00.500Z")
MINUTE_MS = 60_000
T0_MS = pd.Timestamp("2024-01-05T10:00Z").value // 1_000_000
SYMBOLS = ("BTCUSDT", "ETHUSDT")
ONE_MINUTE = Interval.parse("1m")
FAST = BridgeOptions(
    flush_s=0.02,
    backoff=Backoff(0.02, 0.1),
    store_backoff=Backoff(0.05, 0.2),
)


def at(minute: int) -> int:
    """Open time (ms) of the 1m bar ``minute`` minutes after 10:00."""
    return T0_MS + minute * MINUTE_MS


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Clock:
    """Unix seconds, starting at :data:`T0`; :meth:`advance` jumps (real seconds still pass)."""

    def __init__(self) -> None:
        self.offset = T0.value / 1e9 - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Rig:
    stream: FakeBinanceStream
    rest: FakeBinance
    store: WebhookEventStore
    redis: redis.Redis
    clock: Clock
    warehouse_url: str

    def bridge(self, options: BridgeOptions = FAST, checkpoints: bool = False) -> StreamBridge:
        client = build_client("binance", ProviderOptions(base_url=self.rest.url), RuntimeConfig())
        intake = WebhookIntake(None, self.warehouse_url, store_timeout_s=0.5)
        loader = None
        if checkpoints:

            def loader() -> dict[tuple[str, str], pd.Timestamp]:
                since = pd.Timestamp(self.clock(), unit="s", tz="UTC") - pd.Timedelta(hours=24)
                stored = self.store.latest_closed("binance", since.to_pydatetime(warn=False))
                return {k: pd.Timestamp(v) for k, v in stored.items()}

        return StreamBridge(
            connection_urls(self.stream.url, SYMBOLS, [ONE_MINUTE]),
            intake,
            client,
            LivePrices(self.redis),
            loader,
            options,
            self.clock,
        )

    def stored(self) -> Counter[tuple[str, int]]:
        """(symbol, open ms) of every closed kline event stored, counted."""
        return Counter(
            (e.symbol, int(e.start.timestamp() * 1000))
            for e in self.store.to_handle(0, 10_000)
            if e.closed
        )

    def klines_requests(self) -> list[dict[str, str]]:
        return [r.query for r in self.rest.requests_to("/fapi/v1/klines")]


@pytest.fixture
def rig(redis_client: redis.Redis, tmp_path) -> Iterator[Rig]:
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    store = WebhookEventStore(Warehouse.from_url(url))
    with FakeBinanceStream() as stream, FakeBinance(SYMBOLS) as rest:
        yield Rig(stream, rest, store, redis_client, Clock(), url)
    store.warehouse.engine.dispose()


@asynccontextmanager
async def running(bridge: StreamBridge) -> AsyncIterator[StreamBridge]:
    task = asyncio.create_task(bridge.run())
    try:
        yield bridge
    finally:
        bridge.stop()
        await asyncio.wait_for(task, 30)
        bridge.sink.close()
        bridge.rest.close()


async def until(condition: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def connected(rig: Rig, count: int) -> None:
    """Until the server has seen ``count`` connections and one is open."""
    await until(
        lambda: len(rig.stream.connects) >= count and rig.stream.open_connections == 1,
        f"connection {count}",
    )


def test_closed_klines_become_events_once_and_open_ones_only_move_the_live_price(rig: Rig) -> None:
    duplicates = metric("fks_stream_messages_total", kind="duplicate")

    async def scenario() -> None:
        async with running(rig.bridge()) as bridge:
            await connected(rig, 1)
            rig.stream.send(
                [
                    kline("BTCUSDT", "1m", at(0), closed=False, price=101.23),
                    kline("BTCUSDT", "1m", at(0), closed=True),
                    kline("BTCUSDT", "1m", at(0), closed=True, event_ms=at(1) + 5),  # again
                    kline("BTCUSDT", "1m", at(1), closed=False, event_ms=at(1) + 250, price=99.5),
                ]
            )
            await until(lambda: rig.stored(), "the closed kline stored")
            await until(lambda: LivePrices(rig.redis).get("BTCUSDT") is not None, "live price")
            assert bridge.health()["status"] == "ok"

    asyncio.run(scenario())

    assert rig.stored() == {("BTCUSDT", at(0)): 1}
    live = LivePrices(rig.redis).get("BTCUSDT")
    assert live is not None
    assert (live.price, live.event_time.value // 1_000_000) == (99.5, at(1) + 250)
    assert metric("fks_stream_messages_total", kind="duplicate") == duplicates + 1
    assert rig.klines_requests() == []  # nothing closed while it was not listening


def test_no_closed_kline_is_lost_or_stored_twice_across_drops_and_closes(rig: Rig) -> None:
    async def scenario() -> None:
        async with running(rig.bridge()):
            await connected(rig, 1)
            rig.clock.advance(60)  # 10:01:00.5
            rig.stream.send([kline(s, "1m", at(0), closed=True) for s in SYMBOLS])
            await until(lambda: len(rig.stored()) == 2, "10:00 stored")

            # The connection drops; four bars close before it is back.
            rig.clock.advance(4 * 60)  # 10:05:00.5
            rig.stream.drop_all()
            await connected(rig, 2)
            await until(lambda: len(rig.stored()) == 10, "the gap 10:01-10:04 filled")
            # Binance had sent 10:04's close as the connection opened: the same fact again.
            rig.stream.send([kline("BTCUSDT", "1m", at(4), closed=True)])
            rig.clock.advance(60)  # 10:06:00.5
            rig.stream.send([kline(s, "1m", at(5), closed=True) for s in SYMBOLS])
            await until(lambda: len(rig.stored()) == 12, "10:05 stored")

            # A close like Binance's 24-hour one, then two more bars close meanwhile.
            rig.clock.advance(2 * 60)  # 10:08:00.5
            rig.stream.close_all(1000, "24 hours")
            await connected(rig, 3)
            await until(lambda: len(rig.stored()) == 16, "the gap 10:06-10:07 filled")

    asyncio.run(scenario())

    expected = {(s, at(m)): 1 for s in SYMBOLS for m in range(8)}
    assert rig.stored() == expected  # each bar once, none missing
    # The ideal request count: one per stream and gap.
    requests = sorted((q["symbol"], int(q["startTime"])) for q in rig.klines_requests())
    assert requests == sorted((s, at(m)) for s in SYMBOLS for m in (1, 6))


def test_a_connection_is_rotated_before_binances_24_hour_cut_without_a_gap(rig: Rig) -> None:
    rotated = metric("fks_stream_reconnects_total", reason="rotated")
    options = BridgeOptions(**{**FAST.__dict__, "max_age_s": 0.3})

    async def scenario() -> None:
        async with running(rig.bridge(options)):
            await until(lambda: len(rig.stream.connects) >= 4, "three rotations")
            rig.stream.send([kline("ETHUSDT", "1m", at(0), closed=True)])
            await until(lambda: rig.stored(), "a kline after the rotations")

    asyncio.run(scenario())

    assert metric("fks_stream_reconnects_total", reason="rotated") >= rotated + 3
    assert rig.klines_requests() == []  # nothing closed in between: nothing fetched
    assert rig.stored() == {("ETHUSDT", at(0)): 1}


def test_a_burst_with_malformed_frames_keeps_the_connection_and_every_closed_kline(
    rig: Rig,
) -> None:
    malformed = metric("fks_stream_messages_total", kind="malformed")
    wrong_stream = {"stream": "ethusdt@kline_1m", "data": kline("BTCUSDT", "1m", at(0), False)}
    bad = ["not json", '{"stream": "btcusdt@kline_1m"}', b"\x00\xff\x10", json.dumps(wrong_stream)]
    frames: list[dict | str | bytes] = []
    for n in range(5000):
        minute, tick = divmod(n, 500)
        frames.append(
            kline("BTCUSDT", "1m", at(minute), False, event_ms=at(minute) + tick + 1, price=n)
        )
        if tick == 499:
            frames.append(kline("BTCUSDT", "1m", at(minute), closed=True))
        if n % 1000 == 0:
            frames.extend(bad)
    last_close = float(kline("BTCUSDT", "1m", at(9), closed=True)["k"]["c"])

    async def scenario() -> None:
        async with running(rig.bridge()):
            await connected(rig, 1)
            rig.stream.send(frames)
            await until(lambda: len(rig.stored()) == 10, "ten closed klines", 60)
            await until(
                lambda: (live := LivePrices(rig.redis).get("BTCUSDT")) and live.price == last_close,
                "the last price",
            )

    asyncio.run(scenario())

    assert rig.stored() == {("BTCUSDT", at(m)): 1 for m in range(10)}
    assert metric("fks_stream_messages_total", kind="malformed") == malformed + 5 * len(bad)
    assert len(rig.stream.connects) == 1  # never reconnected


def test_a_stalled_warehouse_holds_back_only_the_events_and_loses_none(
    redis_client: redis.Redis, pg_warehouse_url: str
) -> None:
    store = WebhookEventStore(Warehouse.from_url(pg_warehouse_url))
    with FakeBinanceStream() as stream, FakeBinance(SYMBOLS) as rest:
        rig = Rig(stream, rest, store, redis_client, Clock(), pg_warehouse_url)
        locker = sa.create_engine(
            pg_warehouse_url.replace("postgresql://", "postgresql+psycopg://")
        )

        async def scenario() -> None:
            async with running(rig.bridge()) as bridge:
                await connected(rig, 1)
                with locker.connect() as conn:
                    conn.exec_driver_sql("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
                    rig.stream.send([kline(s, "1m", at(0), closed=True) for s in SYMBOLS])
                    # Still locked after several store timeouts: nothing stored, nothing lost,
                    # and the stream keeps flowing into Redis.
                    for n in range(1, 30):
                        rig.stream.send([kline("BTCUSDT", "1m", at(1), False, at(1) + n, 200 + n)])
                        await asyncio.sleep(0.05)
                    await until(
                        lambda: LivePrices(rig.redis).get("BTCUSDT").price == 229.0, "prices"
                    )
                    assert bridge.pending_events == 2
                    conn.rollback()
                await until(lambda: len(rig.stored()) == 2, "stored once the lock is gone")

        asyncio.run(scenario())
        locker.dispose()

    assert rig.stored() == {(s, at(0)): 1 for s in SYMBOLS}
    store.warehouse.engine.dispose()


def test_after_a_restart_the_klines_closed_meanwhile_are_fetched_from_the_last_stored(
    rig: Rig,
) -> None:
    async def first() -> None:
        async with running(rig.bridge(checkpoints=True)):
            await connected(rig, 1)
            rig.clock.advance(60)
            rig.stream.send([kline("BTCUSDT", "1m", at(0), closed=True)])
            await until(lambda: rig.stored(), "10:00 stored")

    async def second() -> None:
        rig.clock.advance(5 * 60)  # down until 10:06:00.5
        async with running(rig.bridge(checkpoints=True)):
            await until(lambda: len(rig.stored()) == 6, "10:01-10:05 fetched")

    asyncio.run(first())
    asyncio.run(second())

    assert rig.stored() == {("BTCUSDT", at(m)): 1 for m in range(6)}
    # ETHUSDT had stored nothing: no history is invented for it on a restart.
    assert [q["symbol"] for q in rig.klines_requests()] == ["BTCUSDT"]


def test_refused_connections_and_a_failing_gap_fill_are_retried(rig: Rig) -> None:
    failed = metric("fks_stream_reconnects_total", reason="failed")
    gap_failures = metric("fks_stream_gap_failures_total")
    rig.rest.failing_symbols.add("ETHUSDT")

    async def scenario() -> None:
        async with running(rig.bridge()):
            await connected(rig, 1)
            rig.clock.advance(3 * 60)  # 10:03:00.5: 10:00-10:02 closed, unseen
            rig.stream.refuse = 3
            rig.stream.drop_all()
            await connected(rig, 2)
            await until(lambda: len(rig.stored()) == 3, "BTCUSDT's gap")
            await until(
                lambda: metric("fks_stream_gap_failures_total") >= gap_failures + 2, "retries"
            )
            rig.rest.failing_symbols.clear()
            await until(lambda: len(rig.stored()) == 6, "ETHUSDT's gap, once REST answers")

    asyncio.run(scenario())

    assert rig.stored() == {(s, at(m)): 1 for s in SYMBOLS for m in range(3)}
    assert metric("fks_stream_reconnects_total", reason="failed") == failed + 3
    assert len(rig.stream.connects) == 2  # the refused ones never opened


def test_backoff_delays_grow_to_the_cap_with_full_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=8.0)
    for failures, bound in [(0, 0.5), (1, 1.0), (3, 4.0), (4, 8.0), (60, 8.0)]:
        delays = [backoff.delay(failures) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in delays)
        assert max(delays) > bound / 2  # spread over the range, not fixed


def test_a_fetched_kline_carries_exactly_the_rest_values_and_the_streamed_klines_meaning() -> None:
    """Gap-filled events hold the REST frame's numbers exactly, and mean what a streamed
    closed kline means: same open, close time, interval and values as the stream's copy."""
    with FakeBinance(SYMBOLS) as rest:
        client = build_client("binance", ProviderOptions(base_url=rest.url), RuntimeConfig())
        start = pd.Timestamp(at(0), unit="ms", tz="UTC")
        bars = client.fetch_ohlcv("BTCUSDT", ONE_MINUTE, start, start + pd.Timedelta(minutes=3))
        client.close()

    events = kline_events("BTCUSDT", ONE_MINUTE, bars)

    assert len(events) == 3
    for event, bar in zip(events, bars.itertuples(), strict=True):
        k = event["k"]
        assert [float(k[f]) for f in "ochlv"] == [
            bar.open,
            bar.close,
            bar.high,
            bar.low,
            bar.volume,
        ]
        assert pd.Timestamp(k["t"], unit="ms", tz="UTC") == bar.ts
        streamed = kline("BTCUSDT", "1m", k["t"], closed=True)
        assert {f: k[f] for f in "tTsix"} == {f: streamed["k"][f] for f in "tTsix"}
        assert [float(k[f]) for f in "ochlv"] == [float(streamed["k"][f]) for f in "ochlv"]


class BrokenIntake(WebhookIntake):
    """An intake with a bug: submitting raises what the bridge does not expect."""

    def submit(self, events):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in the intake")


def test_a_task_that_ends_unexpectedly_ends_the_bridge_with_its_error(rig: Rig) -> None:
    """A bridge half-working (reading on, storing nothing) would look alive: it stops, and its
    supervisor (compose's restart) starts it again."""
    bridge = rig.bridge()
    bridge.sink = BrokenIntake(None, rig.warehouse_url)

    async def scenario() -> None:
        task = asyncio.create_task(bridge.run())
        await connected(rig, 1)
        rig.stream.send([kline("BTCUSDT", "1m", at(0), closed=True)])
        with pytest.raises(RuntimeError, match="a bug in the intake"):
            await asyncio.wait_for(task, 30)

    asyncio.run(scenario())
    bridge.rest.close()
    assert rig.stream.open_connections == 0
