"""The freshness check and the freshness trigger sensor against a real instance."""

import json
from datetime import UTC, datetime

import dagster as dg

from fks_pipelines.defs.freshness import build_freshness_check, build_freshness_sensor
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource, WarehouseResource
from fks_pipelines.defs.schedules import DailyTarget
from fks_pipelines_tests.defs.support import repository, target


def tick(
    targets: list[DailyTarget], instance: dg.DagsterInstance, now: str, cursor: str | None = None
) -> dg.SensorResult:
    sensor = build_freshness_sensor(
        targets, clock=lambda: datetime.fromisoformat(now).replace(tzinfo=UTC)
    )
    context = dg.build_sensor_context(instance=instance, cursor=cursor, repository_def=repository())
    return sensor(context)


def stored(instance: dg.DagsterInstance, t: DailyTarget, *keys: str) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(t.key, partition=key))


def test_a_stale_symbol_fails_the_check_and_is_asked_for(instance: dg.DagsterInstance) -> None:
    binance = target("binance", "1h")  # freshness lag 30 min
    stored(instance, binance, "2024-07-09|BTCUSDT", "2024-07-09|ETHUSDT", "2024-07-08|SOLUSDT")

    early = tick([binance], instance, "2024-07-10T00:20")  # 9 July not due yet: 8 July is
    late = tick([binance], instance, "2024-07-10T00:45")
    again = tick([binance], instance, "2024-07-10T00:50", late.cursor)

    assert [e.passed for e in early.asset_events] == [False]  # 8 July is due: BTC, ETH lack it
    [evaluation] = late.asset_events
    assert (evaluation.check_name, evaluation.passed) == ("freshness", False)
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["stale_partitions"].value == ["2024-07-09|SOLUSDT"]
    assert evaluation.metadata["overdue_minutes"].value == 15.0
    [request] = late.run_requests
    assert request.partition_key == "2024-07-09|SOLUSDT"
    assert request.tags["fks/trigger"] == "freshness"
    assert again.asset_events == []  # unchanged: not recorded again
    assert [r.run_key for r in again.run_requests] == [request.run_key]


def test_a_stored_newest_session_is_fresh_and_weekends_are_not_due(
    instance: dg.DagsterInstance,
) -> None:
    polygon = target("polygon", "1d")  # lag 120 min; AAPL and SPY on XNYS, X:BTCUSD 24/7
    stored(instance, polygon, "2024-07-05|AAPL", "2024-07-05|SPY", "2024-07-07|X:BTCUSD")

    result = tick([polygon], instance, "2024-07-08T03:00")  # Monday morning

    [evaluation] = result.asset_events
    assert evaluation.passed
    assert result.run_requests == []
    assert json.loads(result.cursor) == {"ohlcv/polygon/1d": []}


def test_a_day_overdue_is_an_error_and_a_multi_symbol_day_is_one_range(
    instance: dg.DagsterInstance,
) -> None:
    binance = target("binance", "1d")

    result = tick([binance], instance, "2024-07-11T01:00")

    [evaluation] = result.asset_events
    # Neither 10 July nor 9 July is stored: more than a day behind, counted from 9 July's deadline.
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert evaluation.metadata["overdue_minutes"].value == 24 * 60 + 30
    [request] = result.run_requests
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == (
        "2024-07-10|BTCUSDT",
        "2024-07-10|SOLUSDT",
    )


def test_the_check_runs_in_process_with_the_same_verdict(instance: dg.DagsterInstance) -> None:
    binance = target("binance", "1d")
    stored(instance, binance, *(f"2024-07-10|{s}" for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")))
    check = build_freshness_check(binance, clock=lambda: datetime(2024, 7, 11, 1, 0, tzinfo=UTC))

    result = dg.materialize(
        [binance.asset, check],
        instance=instance,
        selection=dg.AssetSelection.checks(check),
        resources={"binance": BinanceResource(), "warehouse": WarehouseResource(url="sqlite://")},
    )

    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
