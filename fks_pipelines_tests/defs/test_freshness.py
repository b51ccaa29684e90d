"""Freshness of the provider assets: the freshness sensor and its alerts, on a real instance."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from fks_pipelines.defs.alerts import AlertResource, build_alert_sensor
from fks_pipelines.defs.freshness import build_freshness_sensor
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource
from fks_pipelines.defs.schedules import DailyTarget
from fks_pipelines_tests.defs.support import repository, target, warehouse_resources
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.receiver import WebhookReceiver

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


def tick(
    targets: list[DailyTarget],
    instance: dg.DagsterInstance,
    now: str,
    cursor: str | None = None,
    missing_keys: dict[str, str] | None = None,
    retry_grace: timedelta = timedelta(0),
) -> dg.SensorResult:
    """One evaluation of the sensor at ``now`` (UTC); its check evaluations are stored in the
    instance as the daemon stores them."""
    sensor = build_freshness_sensor(
        targets,
        missing_keys or {},
        clock=lambda: datetime.fromisoformat(now).replace(tzinfo=UTC),
        retry_grace=retry_grace,
    )
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repository())
    result = sensor(context)
    for event in getattr(result, "asset_events", None) or []:
        instance.report_runless_asset_event(event)
    return result


def stored(instance: dg.DagsterInstance, t: DailyTarget, *keys: str) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(t.key, partition=key))


def verdicts(result: dg.SensorResult) -> dict[str, dg.AssetCheckSeverity]:
    return {e.partition: e.severity for e in result.asset_events if not e.passed}


def test_a_missing_due_partition_fails_once_and_is_asked_for(
    instance: dg.DagsterInstance,
) -> None:
    binance = target("binance", "1h")  # freshness lag 30 min
    days = range(5, 10)
    stored(instance, binance, *(f"2024-07-0{d}|{s}" for d in days for s in ("BTCUSDT", "ETHUSDT")))
    stored(instance, binance, *(f"2024-07-0{d}|SOLUSDT" for d in days if d < 9))

    early = tick([binance], instance, "2024-07-10T00:20")  # 9 July not due yet, 8 July is
    late = tick([binance], instance, "2024-07-10T00:45", early.cursor)
    again = tick([binance], instance, "2024-07-10T00:50", late.cursor)
    next_day = tick([binance], instance, "2024-07-11T00:40", again.cursor)

    assert early.asset_events == [] and early.run_requests == []
    [evaluation] = late.asset_events
    assert (evaluation.check_name, evaluation.partition) == ("freshness", "2024-07-09|SOLUSDT")
    assert evaluation.severity == WARN
    assert evaluation.description == (
        "not stored 15 min past its deadline (its day's close + 30 min)"
    )
    assert evaluation.metadata["overdue_minutes"].value == 15.0
    [request] = late.run_requests
    assert request.partition_key == "2024-07-09|SOLUSDT"
    assert request.tags["fks/trigger"] == "freshness"
    assert again.asset_events == []  # unchanged: not recorded again
    assert [r.run_key for r in again.run_requests] == [request.run_key]
    # A day later 10 July is due: SOLUSDT, still without 9 July, is more than a day behind.
    assert verdicts(next_day) == {
        "2024-07-10|BTCUSDT": WARN,
        "2024-07-10|ETHUSDT": WARN,
        "2024-07-10|SOLUSDT": ERROR,
    }
    # A cursor lost (the sensor reset) does not record a partition twice.
    assert tick([binance], instance, "2024-07-11T00:45").asset_events == []


def test_a_partition_whose_run_just_failed_is_left_to_the_catchup_for_its_grace(
    instance: dg.DagsterInstance, binance: FakeBinance, tmp_path: Path
) -> None:
    """A run that held BTCUSDT failed (another symbol broke it, say): for ``retry_grace`` after
    it the catch-up may relaunch it, so the sensor neither reports it late nor asks for it."""
    t = target("binance", "1d")  # lag 30 min
    # A day closed more than an hour before the failure: due whatever the hour of the test.
    day = (datetime.now(UTC) - timedelta(hours=25)).date()
    days = [day - timedelta(days=1), day, day + timedelta(days=1)]
    stored(instance, t, *(f"{d}|{s}" for d in days for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")))
    binance.failing_symbols.add("BTCUSDT")
    failed = dg.materialize(
        [t.asset],
        partition_key=f"{day}|BTCUSDT",
        instance=instance,
        resources={
            "binance": BinanceResource(base_url=binance.url, cache_dir=str(tmp_path / "cache")),
            **warehouse_resources(f"sqlite:///{tmp_path / 'w.sqlite'}"),
        },
        raise_on_error=False,
    )
    assert not failed.success
    ended = datetime.fromtimestamp(
        instance.get_run_record_by_id(failed.run_id).end_time, tz=UTC
    ).replace(tzinfo=None)
    grace = timedelta(minutes=10)

    soon = tick([t], instance, (ended + timedelta(minutes=1)).isoformat(), retry_grace=grace)
    later = tick([t], instance, (ended + grace).isoformat(), soon.cursor, retry_grace=grace)

    assert soon.asset_events == [] and soon.run_requests == []
    assert verdicts(later) == {f"{day}|BTCUSDT": WARN}
    assert [r.partition_key for r in later.run_requests] == [f"{day}|BTCUSDT"]


def test_stored_sessions_are_fresh_and_a_weekend_is_not_due(instance: dg.DagsterInstance) -> None:
    polygon = target("polygon", "1d")  # lag 120 min; AAPL and SPY on XNYS, X:BTCUSD 24/7
    stored(
        instance,
        polygon,
        *(f"2024-07-0{d}|{s}" for d in (3, 5) for s in ("AAPL", "SPY")),  # 4 July: a holiday
        "2024-07-06|X:BTCUSD",
        "2024-07-07|X:BTCUSD",
    )

    result = tick([polygon], instance, "2024-07-08T03:00")  # Monday morning

    assert result.asset_events == []
    assert result.run_requests == []
    assert result.skip_reason.skip_message == "1 configured assets up to date"
    assert json.loads(result.cursor) == {}


def test_a_day_behind_is_an_error_and_a_day_of_symbols_is_one_range(
    instance: dg.DagsterInstance,
) -> None:
    binance = target("binance", "1d")
    stored(instance, binance, "2024-07-01|BTCUSDT")  # it has run before

    result = tick([binance], instance, "2024-07-11T01:00")

    assert verdicts(result) == {
        f"2024-07-{d:02}|{s}": ERROR for d in (9, 10) for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    }
    [overdue] = [e for e in result.asset_events if e.partition == "2024-07-09|BTCUSDT"]
    assert overdue.metadata["overdue_minutes"].value == 24 * 60 + 30
    assert overdue.description.endswith(
        "the due day before it is missing too: more than a day behind"
    )
    # Two days of three symbols: one range run per day beats one per symbol.
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in result.run_requests] == [
        ("2024-07-09|BTCUSDT", "2024-07-09|SOLUSDT"),
        ("2024-07-10|BTCUSDT", "2024-07-10|SOLUSDT"),
    ]
    assert [r.tags["fks/date"] for r in result.run_requests] == ["2024-07-09", "2024-07-10"]


def test_an_asset_never_materialised_is_asked_for_but_not_judged(
    instance: dg.DagsterInstance,
) -> None:
    binance = target("binance", "1d")

    result = tick([binance], instance, "2024-07-11T01:00")

    assert result.asset_events == []
    assert len(result.run_requests) == 2


def test_a_provider_without_its_key_is_skipped_naming_the_variable(
    instance: dg.DagsterInstance,
) -> None:
    polygon, binance = target("polygon", "1d"), target("binance", "1d")
    stored(instance, polygon, "2024-07-01|AAPL")
    stored(
        instance,
        binance,
        *(f"2024-07-{d:02}|{s}" for d in (9, 10) for s in target_symbols(binance)),
    )

    result = tick(
        [polygon, binance], instance, "2024-07-11T03:00", missing_keys={"polygon": "POLYGON_API"}
    )

    assert result.asset_events == [] and result.run_requests == []
    assert result.skip_reason.skip_message == (
        "1 configured assets up to date; skipped: ohlcv/polygon/1d skipped: polygon is not "
        "configured (POLYGON_API is not set)"
    )


def target_symbols(t: DailyTarget) -> list[str]:
    return list(t.instruments)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def test_an_asset_really_behind_alerts_once(
    instance: dg.DagsterInstance, receiver: WebhookReceiver
) -> None:
    binance = target("binance", "1d")
    symbols = sorted(target_symbols(binance))
    stored(instance, binance, *(f"2024-07-09|{s}" for s in symbols))
    alerts = build_alert_sensor(list(binance.asset.check_keys), clock=lambda: 1000.0)
    resource = AlertResource(webhook_url=receiver.hook)

    def alert_tick(cursor: str | None) -> str | None:
        context = dg.build_sensor_context(
            instance=instance, cursor=cursor, resources={"alerts": resource}
        )
        return alerts(context).cursor

    first = tick([binance], instance, "2024-07-11T00:45")  # 10 July missing: WARN
    cursor = alert_tick(None)
    second = tick([binance], instance, "2024-07-12T00:45", first.cursor)  # 11 July too: ERROR
    cursor = alert_tick(cursor)
    tick([binance], instance, "2024-07-12T00:55", second.cursor)  # unchanged
    alert_tick(cursor)

    assert set(verdicts(first).values()) == {WARN}
    assert set(verdicts(second).values()) == {ERROR}
    [message] = receiver.messages()  # WARN does not alert by default; the ERROR alerts once
    assert (message["check"], message["severity"]) == ("freshness", "ERROR")
    assert message["partitions"] == [f"2024-07-11|{s}" for s in symbols]
    assert message["reason"].startswith("3 partitions; 2024-07-11|BTCUSDT: not stored")
