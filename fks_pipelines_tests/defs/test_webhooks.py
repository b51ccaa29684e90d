"""The webhook_events sensor on events stored in a real warehouse, with a real instance."""

import json
import socket
from contextlib import closing
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import redis
from pydantic import SecretStr

from fks_pipelines.definitions import build_definitions
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import WarehouseResource
from fks_pipelines.defs.webhooks import WebhookStreamResource, build_webhook_sensor
from fks_pipelines.settings import Settings
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import StoredEvent, WebhookEventStore
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines.webhooks.stream import STREAM, EventStream
from fks_pipelines_tests.defs.support import repository, target
from fks_pipelines_tests.webhooks.samples import GENERIC, closed_kline, headers

SECRET = "whsec-sensor-tests"
NOW = datetime(2024, 7, 10, 12, 0, tzinfo=UTC)
JULY_9 = 1720483200000  # 2024-07-09T00:00Z, ms
HOUR = 3_600_000
TARGETS = [target("binance", "1h"), target("binance", "1d"), target("polygon", "1h")]


@pytest.fixture
def store(warehouse_url: str) -> WebhookEventStore:
    return WebhookEventStore(Warehouse.from_url(warehouse_url))


def deliver(
    warehouse_url: str, source: str, *payloads: object, redis_url: str | None = None
) -> None:
    """Store events the way the route does: through the intake, signed."""
    stream = EventStream.from_url(redis_url, maxlen=1000) if redis_url else None
    with closing(WebhookIntake(SecretStr(SECRET), warehouse_url, stream)) as intake:
        for payload in payloads:
            raw = json.dumps(payload).encode()
            signed = headers(SECRET, raw)
            timestamp = intake.check_timestamp(signed["X-FKS-Timestamp"])
            intake.receive(source, timestamp, signed["X-FKS-Signature"], raw)


def tick(
    instance: dg.DagsterInstance,
    warehouse_url: str,
    cursor: str | None = None,
    now: datetime = NOW,
    redis_url: str | None = None,
    retention_days: int = 30,
    missing_keys: dict[str, str] | None = None,
) -> dg.SensorResult:
    sensor = build_webhook_sensor(
        TARGETS, missing_keys, retention_days=retention_days, clock=lambda: now
    )
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        repository_def=repository(),
        resources={
            "warehouse": WarehouseResource(url=warehouse_url),
            "webhook_stream": WebhookStreamResource(redis_url=redis_url),
        },
    )
    return sensor(context)


def statuses(store: WebhookEventStore) -> dict[str, tuple[str, str | None]]:
    return {e.id: (e.status, e.reason) for e in all_events(store)}


def all_events(store: WebhookEventStore) -> list[StoredEvent]:
    events = []
    for e in store.to_handle(cursor=0, limit=10_000):
        stored = store.get(e.id)
        assert stored is not None
        events.append(stored)
    return events


def test_a_burst_becomes_one_run_request_per_partition_range(
    instance: dg.DagsterInstance, warehouse_url: str, store: WebhookEventStore
) -> None:
    # Every hour of 9 July closes for BTC and ETH, plus the 1d bar of BTC.
    deliver(
        warehouse_url,
        "binance",
        *(
            closed_kline(s, "1h", JULY_9 + h * HOUR)
            for h in range(24)
            for s in ("BTCUSDT", "ETHUSDT")
        ),
        closed_kline("BTCUSDT", "1d", JULY_9),
    )

    result = tick(instance, warehouse_url)

    daily, hourly = result.run_requests  # by asset: 1d sorts before 1h
    assert hourly.job_name == "ohlcv_binance_1h_job"
    assert (hourly.tags[RANGE_START_TAG], hourly.tags[RANGE_END_TAG]) == (
        "2024-07-09|BTCUSDT",
        "2024-07-09|ETHUSDT",
    )
    assert hourly.tags["fks/trigger"] == "webhook"
    assert hourly.tags["fks/webhook_seq"] == "48"
    assert hourly.run_key == "webhook:48:2024-07-09|BTCUSDT:2024-07-09|ETHUSDT"
    assert (daily.job_name, daily.partition_key) == ("ohlcv_binance_1d_job", "2024-07-09|BTCUSDT")
    assert daily.run_key == "webhook:49:2024-07-09|BTCUSDT:2024-07-09|BTCUSDT"
    assert result.cursor == "49"
    assert {status for status, _ in statuses(store).values()} == {"requested"}


def test_the_cursor_advances_and_a_repeated_tick_asks_for_nothing_new(
    instance: dg.DagsterInstance, warehouse_url: str
) -> None:
    deliver(warehouse_url, "binance", closed_kline("SOLUSDT", "1h", JULY_9 + 5 * HOUR))

    first = tick(instance, warehouse_url)
    again = tick(instance, warehouse_url, cursor=None)  # the tick's cursor was not saved
    after = tick(instance, warehouse_url, cursor=first.cursor)
    deliver(warehouse_url, "binance", closed_kline("SOLUSDT", "1h", JULY_9 + 6 * HOUR))
    later = tick(instance, warehouse_url, cursor=first.cursor)

    [request] = first.run_requests
    assert request.partition_key == "2024-07-09|SOLUSDT"
    assert [r.run_key for r in again.run_requests] == [request.run_key]  # same key: no new run
    assert after.run_requests == []
    assert after.skip_reason is not None
    assert after.skip_reason.skip_message == "no new webhook events"
    assert after.cursor == first.cursor
    [newer] = later.run_requests
    assert newer.partition_key == "2024-07-09|SOLUSDT"
    assert newer.run_key != request.run_key  # new information: a new run
    assert later.cursor == "2"


@pytest.mark.parametrize(("retention_days", "kept"), [(30, 0), (0, 1)])
def test_handled_events_are_deleted_after_the_retention(
    instance: dg.DagsterInstance,
    warehouse_url: str,
    store: WebhookEventStore,
    retention_days: int,
    kept: int,
) -> None:
    deliver(warehouse_url, "binance", closed_kline("SOLUSDT", "1h", JULY_9 + 5 * HOUR))
    first = tick(instance, warehouse_url, retention_days=retention_days)
    deliver(warehouse_url, "binance", closed_kline("SOLUSDT", "1h", JULY_9 + 6 * HOUR))

    tick(
        instance,
        warehouse_url,
        cursor=first.cursor,
        now=NOW + timedelta(days=31),
        retention_days=retention_days,
    )

    assert [e.symbol for e in all_events(store)] == ["SOLUSDT"] * (1 + kept)
    assert all_events(store)[-1].seq == 2  # the newer event, handled by the second tick


def test_a_generic_window_asks_for_each_finished_day_as_one_range_run(
    instance: dg.DagsterInstance, warehouse_url: str, store: WebhookEventStore
) -> None:
    notice = {
        **GENERIC,
        "provider": "polygon",
        "symbol": "AAPL",
        "interval": "1h",
        "start": "2024-07-05T00:00:00Z",
        "end": "2024-07-12T00:00:00Z",
    }
    deliver(warehouse_url, "generic", notice)

    result = tick(instance, warehouse_url)

    [request] = result.run_requests
    assert request.job_name == "ohlcv_polygon_1h_job"
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        "2024-07-05|AAPL",
        "2024-07-09|AAPL",
    )
    [(status, reason)] = statuses(store).values()
    assert status == "requested"
    assert reason is not None and "left out: days from 2024-07-10 (not closed)" in reason


def test_an_event_for_a_provider_without_its_key_is_marked_not_launched(
    instance: dg.DagsterInstance, warehouse_url: str, store: WebhookEventStore
) -> None:
    polygon = {**GENERIC, "provider": "polygon", "symbol": "AAPL", "interval": "1h"}
    deliver(warehouse_url, "generic", polygon)
    deliver(warehouse_url, "binance", closed_kline("BTCUSDT", "1h", JULY_9))

    result = tick(instance, warehouse_url, missing_keys={"polygon": "POLYGON_API_KEY"})

    [request] = result.run_requests
    assert request.job_name == "ohlcv_binance_1h_job"
    assert sorted(statuses(store).values())[0] == (
        "ignored",
        "ohlcv/polygon/1h skipped: polygon is not configured (POLYGON_API_KEY is not set)",
    )


def test_events_that_cannot_be_mapped_are_marked_with_the_reason_not_lost(
    instance: dg.DagsterInstance, warehouse_url: str, store: WebhookEventStore
) -> None:
    open_bar = closed_kline("BTCUSDT", "1h", JULY_9)
    open_bar["k"]["x"] = False  # type: ignore[index]
    deliver(
        warehouse_url,
        "binance",
        open_bar,
        closed_kline("BTCUSDT", "1m", JULY_9),  # no 1m asset
        closed_kline("DOGEUSDT", "1h", JULY_9),  # not in the universe
        closed_kline("BTCUSDT", "1h", JULY_9 + 34 * HOUR),  # 10 July: not closed yet
        closed_kline("BTCUSDT", "1h", 1672531200000),  # 2023: before the first partition
    )
    deliver(warehouse_url, "generic", {**GENERIC, "provider": "kraken"})

    result = tick(instance, warehouse_url)

    assert result.run_requests == []
    assert result.skip_reason is not None
    assert result.skip_reason.skip_message == "no partition to refresh (2 ignored, 4 unmapped)"
    assert result.cursor == "6"
    assert sorted(statuses(store).values()) == [
        (
            "ignored",
            "UTC day 2024-07-10 has not closed: its partition exists once it has, and "
            "the daily schedule fetches it",
        ),
        ("ignored", "open bar: not final yet; its close comes as another event"),
        ("unmapped", "'DOGEUSDT' is not a symbol of ohlcv/binance/1h"),
        ("unmapped", "before the first partition of ohlcv/binance/1h (2024-01-01)"),
        ("unmapped", "no OHLCV asset of provider 'kraken'"),
        ("unmapped", "ohlcv/binance keeps no 1m bars (intervals: 1d, 1h)"),
    ]


def test_nothing_stored_is_a_skip(instance: dg.DagsterInstance, warehouse_url: str) -> None:
    result = tick(instance, warehouse_url, cursor="7")

    assert result.run_requests == []
    assert result.skip_reason is not None
    assert (result.skip_reason.skip_message, result.cursor) == ("no new webhook events", "7")


@pytest.fixture
def dead_redis_url() -> str:
    """A Redis URL on a loopback port where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_with_redis_down_events_are_stored_mapped_and_published_later(
    instance: dg.DagsterInstance,
    warehouse_url: str,
    store: WebhookEventStore,
    dead_redis_url: str,
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    deliver(
        warehouse_url, "binance", closed_kline("ETHUSDT", "1d", JULY_9), redis_url=dead_redis_url
    )
    soon = datetime.now(UTC) + timedelta(seconds=5)
    later = datetime.now(UTC) + timedelta(minutes=5)

    during = tick(instance, warehouse_url, now=soon, redis_url=dead_redis_url)
    early = tick(instance, warehouse_url, during.cursor, now=soon, redis_url=redis_url)
    after = tick(instance, warehouse_url, during.cursor, now=later, redis_url=redis_url)

    [request] = during.run_requests
    assert request.partition_key == "2024-07-09|ETHUSDT"
    assert early.run_requests == after.run_requests == []
    [event] = all_events(store)
    assert (event.status, event.published) == ("requested", True)
    [(_, fields)] = redis_client.xrange(STREAM)  # not published by the early tick: too recent
    assert fields[b"id"] == event.id.encode()


def test_the_code_location_runs_the_sensor_on_its_settings() -> None:
    settings = Settings.model_validate(
        {
            "FKS_WEBHOOK_SENSOR_INTERVAL_S": 45,
            "FKS_WEBHOOK_STREAM_MAXLEN": 500,
            "REDIS_URL": "redis://:s3cret-pass@127.0.0.1:6379/3",
        }
    )

    defs = build_definitions(settings)

    sensor = defs.resolve_sensor_def("webhook_events")
    assert sensor.minimum_interval_seconds == 45
    # Only the jobs of configured providers: an event for another is marked, not launched.
    assert {job.name for job in sensor.jobs} == {
        f"ohlcv_{p}_{i}_job"
        for p, spec in settings.universe.providers.items()
        for i in spec.intervals
        if p not in settings.missing_keys()
    }
    stream = defs.resources["webhook_stream"]
    assert isinstance(stream, WebhookStreamResource)
    assert stream.maxlen == 500
    assert stream.redis_url == dg.EnvVar("REDIS_URL")  # bound by name: the password stays out
