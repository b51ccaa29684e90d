"""The alert sensor against failed checks recorded in a real instance and a real receiver."""

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from fks_pipelines.definitions import build_definitions
from fks_pipelines.defs.alerts import AlertResource, build_alert_sensor
from fks_pipelines.defs.assets import AssetPolicy, build_ohlcv_asset
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG, day_symbol_partitions
from fks_pipelines.defs.resources import BinanceResource
from fks_pipelines.market.universe import load_universe
from fks_pipelines.settings import Settings
from fks_pipelines_tests.defs.support import warehouse_resources
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.receiver import WebhookReceiver
from fks_pipelines_tests.fakes.server import Response

UI = "http://dagster.example:3000"
ASSET = dg.AssetKey(["ohlcv", "binance", "1h"])
CHECKS = [dg.AssetCheckKey(ASSET, name) for name in ("schema", "outliers", "completeness")]
PARTITIONS = day_symbol_partitions(date(2024, 1, 1), ["BTCUSDT"])
BAD_KLINE = [1704412800000, "100", "90", "95", "99", "1", 1704416399999, "99", 1, "0", "0", "0"]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def fail_schema(instance: dg.DagsterInstance, binance: FakeBinance, tmp_path: Path) -> None:
    """A run whose bars break the schema: a failed ERROR check evaluation in the instance."""
    asset = build_ohlcv_asset("binance", "1h", load_universe(), AssetPolicy(retry=None))
    binance.scripted.append(Response.json([BAD_KLINE]))
    result = dg.materialize(
        [asset],
        partition_key="2024-01-05|BTCUSDT",
        instance=instance,
        resources={
            "binance": BinanceResource(base_url=binance.url, cache_dir=str(tmp_path / "c")),
            **warehouse_resources(f"sqlite:///{tmp_path / 'w.sqlite'}"),
        },
        raise_on_error=False,
    )
    assert not result.success


def tick(
    instance: dg.DagsterInstance, resource: AlertResource, cursor: str | None, now: float
) -> dg.SensorResult:
    sensor = build_alert_sensor(CHECKS, clock=lambda: now)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alerts": resource}
    )
    return sensor(context)


def test_a_failed_error_check_alerts_once_with_a_link(
    instance: dg.DagsterInstance, binance: FakeBinance, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    resource = AlertResource(webhook_url=receiver.hook, dagster_ui_url=UI)
    fail_schema(instance, binance, tmp_path)

    first = tick(instance, resource, None, now=1000.0)
    fail_schema(instance, binance, tmp_path)  # the same failure again
    second = tick(instance, resource, first.cursor, now=1060.0)
    third = tick(instance, resource, second.cursor, now=1120.0)

    [message] = receiver.messages()
    assert message["asset"] == "ohlcv/binance/1h"
    assert message["check"] == "schema"
    assert message["severity"] == "ERROR"
    assert message["partitions"] == ["2024-01-05|BTCUSDT"]
    assert "high_is_highest" in message["reason"]
    assert message["link"] == f"{UI}/assets/ohlcv/binance/1h?view=checks"
    assert message["text"].startswith("ERROR ohlcv/binance/1h [2024-01-05|BTCUSDT] check schema")
    assert json.loads(third.cursor)["pending"] == []
    # Each tick says what it did.
    assert first.skip_reason.skip_message == "1 new failed check evaluations, 1 alerts raised"
    assert third.skip_reason.skip_message == "0 new failed check evaluations, 0 alerts raised"


def test_a_receiver_that_is_down_gets_the_alert_when_it_comes_back(
    instance: dg.DagsterInstance, binance: FakeBinance, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    resource = AlertResource(webhook_url=receiver.hook, dagster_ui_url=UI)
    fail_schema(instance, binance, tmp_path)
    receiver.down = True

    first = tick(instance, resource, None, now=1000.0)
    receiver.down = False
    early = tick(instance, resource, first.cursor, now=1010.0)  # before the 30 s backoff
    later = tick(instance, resource, early.cursor, now=1031.0)

    attempts = receiver.messages()
    assert len(attempts) == 2  # one refused, one accepted; none during the backoff
    assert len(json.loads(first.cursor)["pending"]) == 1
    assert json.loads(later.cursor)["pending"] == []
    assert attempts[1]["check"] == "schema"


def test_an_unreachable_receiver_never_blocks_the_sensor(
    instance: dg.DagsterInstance, binance: FakeBinance, tmp_path: Path
) -> None:
    with WebhookReceiver() as gone:
        url = gone.hook
    fail_schema(instance, binance, tmp_path)

    result = tick(instance, AlertResource(webhook_url=url, timeout_s=1.0), None, now=1000.0)

    [pending] = json.loads(result.cursor)["pending"]
    assert pending["attempts"] == 1 and pending["next_at"] == 1030.0


def test_warn_checks_alert_only_when_asked(
    instance: dg.DagsterInstance, receiver: WebhookReceiver
) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=ASSET,
            check_name="completeness",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description="2 missing of 24 expected bars",
            partition="2024-01-05|BTCUSDT",
        )
    )
    quiet = AlertResource(webhook_url=receiver.hook)
    loud = AlertResource(webhook_url=receiver.hook, alert_on_warn=True)

    tick(instance, quiet, None, now=1000.0)
    assert receiver.messages() == []
    tick(instance, loud, None, now=1000.0)
    [message] = receiver.messages()
    assert (message["severity"], message["partitions"]) == ("WARN", ["2024-01-05|BTCUSDT"])


def test_the_code_location_alerts_only_for_configured_providers(
    instance: dg.DagsterInstance, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without POLYGON_API_KEY, a failed Polygon check (an old run's, say) does not alert; a
    failed Binance check does."""
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    repository = build_definitions(Settings()).get_repository_def()
    sensor = repository.get_sensor_def("check_alerts")
    for provider in ("polygon", "binance"):
        instance.report_runless_asset_event(
            dg.AssetCheckEvaluation(
                asset_key=dg.AssetKey(["ohlcv", provider, "1d"]),
                check_name="outliers",
                passed=False,
                severity=dg.AssetCheckSeverity.ERROR,
                description="high-severity outliers",
                partition="2024-01-05|X",
            )
        )
    context = dg.build_sensor_context(
        instance=instance,
        resources={"alerts": AlertResource(webhook_url=receiver.hook)},
    )

    sensor(context)

    [message] = receiver.messages()
    assert message["asset"] == "ohlcv/binance/1d"


def test_failures_of_a_running_run_alert_together_once_it_has_finished(
    instance: dg.DagsterInstance, receiver: WebhookReceiver
) -> None:
    """A range run records one evaluation per partition as it goes: a tick while it runs sends
    nothing, and the tick after it has finished sends one alert naming its failed partitions."""
    partitions = [f"2024-01-0{d}|BTCUSDT" for d in (4, 5, 6)]
    spec = dg.AssetCheckSpec("outliers", asset=ASSET, partitions_def=PARTITIONS)
    resource = AlertResource(webhook_url=receiver.hook)
    cursors: list[str | None] = [None]

    @dg.asset(key=ASSET, partitions_def=PARTITIONS, check_specs=[spec])
    def ranged(context: dg.AssetExecutionContext):
        yield dg.MaterializeResult()
        for i, partition in enumerate(context.partition_keys):
            yield dg.AssetCheckEvaluation(
                asset_key=ASSET,
                check_name="outliers",
                passed=i == 0,
                description="high-severity outliers",
                partition=partition,
            )
            if i == 1:  # a tick in the middle of the run
                cursors.append(tick(context.instance, resource, cursors[-1], 1000.0).cursor)
        yield dg.Output(None, output_name=next(iter(context.assets_def.check_specs_by_output_name)))

    result = dg.materialize(
        [ranged],
        instance=instance,
        tags={RANGE_START_TAG: partitions[0], RANGE_END_TAG: partitions[-1]},
    )
    assert result.success
    assert receiver.messages() == []  # nothing while the run was running
    tick(instance, resource, cursors[-1], 1060.0)

    [message] = receiver.messages()
    assert message["partitions"] == partitions[1:]
    assert message["reason"] == f"2 partitions; {partitions[1]}: high-severity outliers"
