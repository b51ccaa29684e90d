"""OHLCV assets materialised in process, against the local Binance server and a real warehouse."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fks_pipelines.defs.assets import AssetPolicy, build_ohlcv_asset
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource
from fks_pipelines.market.universe import Universe, load_universe
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines_tests.defs.support import warehouse_resources
from fks_pipelines_tests.fakes.binance import FakeBinance, expected_frame
from fks_pipelines_tests.fakes.server import Response

PARTITION = "2024-01-05|BTCUSDT"
DAY_START, DAY_END = pd.Timestamp("2024-01-05", tz="UTC"), pd.Timestamp("2024-01-06", tz="UTC")


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


@pytest.fixture
def hourly() -> dg.AssetsDefinition:
    return build_ohlcv_asset("binance", "1h", load_universe())


def run(
    asset: dg.AssetsDefinition,
    server: FakeBinance,
    warehouse_url: str,
    partition: str = PARTITION,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        partition_key=partition,
        instance=instance,
        resources={
            "binance": BinanceResource(base_url=server.url),
            **warehouse_resources(warehouse_url),
        },
        raise_on_error=False,
    )


def stored(warehouse_url: str, symbol: str = "BTCUSDT") -> pd.DataFrame:
    return Warehouse.from_url(warehouse_url).read_ohlcv(
        "binance", "1h", [symbol], DAY_START, DAY_END
    )


def test_a_partition_fetches_its_utc_day_and_stores_it(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    result = run(hourly, server, warehouse_url)

    assert result.success
    rows = stored(warehouse_url)
    expected = expected_frame("BTCUSDT", "1h", "2024-01-05", "2024-01-06")
    assert rows["ts"].tolist() == expected["ts"].tolist()
    assert rows["close"].tolist() == pytest.approx(expected["close"].round(2).tolist())
    [materialization] = result.asset_materializations_for_node(hourly.node_def.name)
    assert materialization.asset_key == dg.AssetKey(["ohlcv", "binance", "1h"])
    assert materialization.partition == PARTITION
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["rows"] == 24
    assert meta["expected_bars"] == 24
    assert meta["missing_bars"] == 0
    assert meta["requests"] == 1
    assert meta["first_bar"] == DAY_START.timestamp()
    assert meta["last_bar"] == pd.Timestamp("2024-01-05T23:00Z").timestamp()
    [request] = server.requests_to("/fapi/v1/klines")
    assert request.query["symbol"] == "BTCUSDT"


def test_rematerialising_a_partition_is_idempotent(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    assert run(hourly, server, warehouse_url).success
    first = stored(warehouse_url)
    assert run(hourly, server, warehouse_url).success
    assert run(hourly, server, warehouse_url, "2024-01-05|ETHUSDT").success

    pd.testing.assert_frame_equal(stored(warehouse_url), first)
    assert Warehouse.from_url(warehouse_url).count_ohlcv() == 48


def test_a_failed_fetch_fails_the_run_and_keeps_the_stored_rows(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    assert run(hourly, server, warehouse_url).success
    before = stored(warehouse_url)
    server.failing_symbols.add("BTCUSDT")

    # A 500 is transient: the production asset would retry it after 60 s and more, so this run
    # uses the same asset without a retry policy.
    once = build_ohlcv_asset("binance", "1h", load_universe(), AssetPolicy(retry=None))
    result = run(once, server, warehouse_url)

    assert not result.success
    failure = result.failure_data_for_node(once.node_def.name)
    assert "binance: server error" in str(failure.error)
    pd.testing.assert_frame_equal(stored(warehouse_url), before)


def test_bars_that_break_the_schema_are_not_stored(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    open_ms = DAY_START.value // 1_000_000
    high_below_low = [
        open_ms,
        "100",
        "90",
        "95",
        "99",
        "1",
        open_ms + 3_599_999,
        "99",
        1,
        "0",
        "0",
        "0",
    ]
    server.scripted.append(Response.json([high_below_low]))

    result = run(hourly, server, warehouse_url)

    assert not result.success
    assert "high_is_highest" in str(result.failure_data_for_node(hourly.node_def.name).error)
    assert Warehouse.from_url(warehouse_url).count_ohlcv() == 0
    [schema] = result.get_asset_check_evaluations()
    assert (schema.check_name, schema.passed, schema.partition) == ("schema", False, PARTITION)
    assert schema.severity == dg.AssetCheckSeverity.ERROR and schema.blocking
    meta = {k: v.value for k, v in schema.metadata.items()}
    assert meta["schema_check_high_is_highest"] == 1
    [example] = meta["schema_examples"]
    assert example["ts"] == DAY_START.isoformat() and example["high"] == 90


def test_a_good_partition_passes_its_checks_and_is_scored(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    result = run(hourly, server, warehouse_url)

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert sorted(checks) == ["completeness", "freshness", "outliers", "schema"]
    assert {e.partition for e in checks.values()} == {PARTITION}
    # The fake's prices saw-tooth (a 32% drop every 97 bars), which the outlier check may flag.
    assert checks["schema"].passed and checks["completeness"].passed
    assert checks["completeness"].metadata["bars_expected"].value == 24
    # A day of 2024 fetched today is history: stored, and not judged for lateness.
    assert checks["freshness"].passed
    assert checks["freshness"].description.startswith("stored; history")
    [materialization] = result.asset_materializations_for_node(hourly.node_def.name)
    assert materialization.metadata["quality_completeness"].value == 100.0
    assert materialization.metadata["quality_validity"].value == 100.0
    failed = [f"{e.check_name}:{e.severity.value}" for e in checks.values() if not e.passed]
    assert materialization.metadata["failed_checks"].value == (", ".join(failed) or "none")


def hourly_klines(start: pd.Timestamp, hours: int, spikes: tuple[int, ...] = ()) -> list:
    """Calm hourly klines from ``start`` (a random walk, each bar opening at the last true
    close); the bars at the hours in ``spikes`` close 30% higher."""
    open_ms = start.value // 1_000_000
    walk = 100.0 + np.cumsum(np.random.default_rng(7).normal(0.0, 0.05, hours))
    klines = []
    for hour in range(hours):
        opened = round(walk[hour - 1] if hour else 100.0, 4)
        close = round(walk[hour] + (30.0 if hour in spikes else 0.0), 4)
        begin = open_ms + hour * 3_600_000
        high, low = max(close, opened) + 0.2, min(close, opened) - 0.2
        kline = [
            begin,
            f"{opened}",
            f"{high:.4f}",
            f"{low:.4f}",
            f"{close}",
            "5",
            begin + 3_599_999,
        ]
        klines.append([*kline, "500", 10, "0", "0", "0"])
    return klines


def test_a_spiked_close_fails_the_outlier_check_as_an_error(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    server.scripted.append(Response.json(hourly_klines(DAY_START, 24, spikes=(12,))))

    result = run(hourly, server, warehouse_url)

    assert result.success  # stored: an outlier is reported, not dropped
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    outliers = checks["outliers"]
    assert not outliers.passed and outliers.severity == dg.AssetCheckSeverity.ERROR
    assert outliers.partition == PARTITION
    assert outliers.description.startswith("high-severity data errors: close (1, worst score")
    assert outliers.metadata["outliers_close_count"].value == 1  # the spike, not the bar after
    [materialization] = result.asset_materializations_for_node(hourly.node_def.name)
    assert materialization.metadata["quality_outliers"].value == 0.0
    assert "outliers:ERROR" in materialization.metadata["failed_checks"].value


def test_a_failed_partition_stays_failed_after_later_runs_pass(
    server: FakeBinance, warehouse_url: str
) -> None:
    """A range run of three days with a spike in the middle one: only that partition fails its
    outlier check, and it still shows failed after a later run of another partition passes."""
    asset = build_ohlcv_asset("binance", "1h", load_universe(), AssetPolicy(retry=None))
    first = pd.Timestamp("2024-01-04", tz="UTC")
    server.scripted.append(Response.json(hourly_klines(first, 72, spikes=(36,))))
    key = dg.AssetCheckKey(asset.key, "outliers")
    with dg.instance_for_test() as instance:
        ranged = dg.materialize(
            [asset],
            instance=instance,
            tags={RANGE_START_TAG: "2024-01-04|BTCUSDT", RANGE_END_TAG: "2024-01-06|BTCUSDT"},
            resources={
                "binance": BinanceResource(base_url=server.url),
                **warehouse_resources(warehouse_url),
            },
        )
        server.scripted.append(Response.json(hourly_klines(first + pd.Timedelta(days=2), 24)))
        later = run(asset, server, warehouse_url, "2024-01-06|BTCUSDT", instance=instance)
        info = instance.event_log_storage.get_asset_check_partition_info([key])
        [latest] = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [key]
        ).values()

    verdicts = {
        e.partition: e.passed
        for e in ranged.get_asset_check_evaluations()
        if e.check_name == "outliers"
    }
    assert verdicts == {
        "2024-01-04|BTCUSDT": True,
        "2024-01-05|BTCUSDT": False,
        "2024-01-06|BTCUSDT": True,
    }
    materializations = {
        m.partition: m.metadata["failed_checks"].value
        for m in ranged.asset_materializations_for_node(asset.node_def.name)
    }
    assert materializations["2024-01-05|BTCUSDT"] == "outliers:ERROR"
    assert materializations["2024-01-04|BTCUSDT"] == "none"
    assert later.success
    # The later run also records the final verdict of the day before it (judged now that its
    # last bar's next bar is known): still the failure, on that partition.
    assert (latest.partition, latest.status.value) == ("2024-01-05|BTCUSDT", "FAILED")
    statuses = {i.partition_key: i.latest_execution_status.value for i in info}
    # Each evaluation targets its partition's materialisation: the UI shows it as current.
    assert all(i.is_current for i in info)
    assert statuses == {
        "2024-01-04|BTCUSDT": "SUCCEEDED",
        "2024-01-05|BTCUSDT": "FAILED",
        "2024-01-06|BTCUSDT": "SUCCEEDED",
    }


def test_a_spike_in_a_days_last_bar_is_blamed_on_that_day_by_the_next_days_run(
    server: FakeBinance, warehouse_url: str
) -> None:
    """Daily runs: the last bar of 4 January closes 30 % high. Its run cannot tell a spike from a
    move (no next bar: provisional pass); the run of 5 January records the final verdict on 4
    January, check and quality row, and 5 January itself stays clean."""
    asset = build_ohlcv_asset("binance", "1h", load_universe(), AssetPolicy(retry=None))
    klines = hourly_klines(pd.Timestamp("2024-01-04", tz="UTC"), 48, spikes=(23,))
    server.scripted.append(Response.json(klines[:24]))
    server.scripted.append(Response.json(klines[24:]))
    with dg.instance_for_test() as instance:
        first = run(asset, server, warehouse_url, "2024-01-04|BTCUSDT", instance=instance)
        second = run(asset, server, warehouse_url, "2024-01-05|BTCUSDT", instance=instance)

    def outliers(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
        return {
            e.partition: e
            for e in result.get_asset_check_evaluations()
            if e.check_name == "outliers"
        }

    [provisional] = outliers(first).values()
    assert provisional.passed and provisional.metadata["verdict"].value == "provisional"
    final = outliers(second)
    assert not final["2024-01-04|BTCUSDT"].passed
    assert final["2024-01-04|BTCUSDT"].severity == dg.AssetCheckSeverity.ERROR
    assert final["2024-01-04|BTCUSDT"].metadata["verdict"].value == "final"
    assert final["2024-01-05|BTCUSDT"].passed
    rows = Warehouse.from_url(warehouse_url).read_quality(
        pd.Timestamp("2024-01-04").date(), pd.Timestamp("2024-01-06").date(), ["binance"]
    )
    by_day = {r["day"].date().isoformat(): r for r in rows.to_dict("records")}
    assert by_day["2024-01-04"]["failed_checks"] == "outliers:ERROR"
    assert by_day["2024-01-04"]["quality_outliers"] == 0.0
    assert by_day["2024-01-04"]["run_id"] == second.run_id
    assert by_day["2024-01-05"]["failed_checks"] == ""


def test_a_permanent_failure_is_not_retried(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    """The production asset, retry policy included: an unknown symbol fails at once."""
    server.symbols.discard("BTCUSDT")

    result = run(hourly, server, warehouse_url)

    assert not result.success
    assert len(server.requests_to("/fapi/v1/klines")) == 1
    assert "unknown symbol" in str(result.failure_data_for_node(hourly.node_def.name).error)


def test_a_day_before_its_calendar_fails_before_fetching_and_is_not_retried(
    server: FakeBinance, warehouse_url: str
) -> None:
    """The Saudi Exchange calendar starts in 2021: a 2020 partition of an instrument on it can be
    configured (the universe refuses only dates before 1990), but its run fails at once, before
    any request or write, and its retry policy does not run it again."""
    universe = Universe.model_validate(
        {
            "instruments": {"2222.SR": {"asset_class": "equity", "calendar": "XSAU"}},
            "priority": ["binance"],
            "providers": {
                "binance": {
                    "start_date": "2020-01-01",
                    "intervals": ["1d"],
                    "symbols": {"BTCUSDT": "2222.SR"},
                }
            },
        }
    )
    asset = build_ohlcv_asset("binance", "1d", universe)  # the production retry policy

    result = run(asset, server, warehouse_url, "2020-06-01|BTCUSDT")

    assert not result.success
    assert server.requests_to("/fapi/v1/klines") == []
    error = str(result.failure_data_for_node(asset.node_def.name).error)
    assert "outside the range the trading calendar covers" in error
    retries = [
        e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY
    ]
    assert retries == []
    assert (
        Warehouse.from_url(warehouse_url)
        .read_ohlcv("binance", "1d", ["BTCUSDT"], pd.Timestamp("2020-01-01", tz="UTC"), DAY_END)
        .empty
    )


def test_only_a_day_just_closed_is_scored_for_timeliness(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    yesterday = (pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=1)).date()

    old = run(hourly, server, warehouse_url)
    recent = run(hourly, server, warehouse_url, partition=f"{yesterday.isoformat()}|BTCUSDT")

    [old_meta] = old.asset_materializations_for_node(hourly.node_def.name)
    [recent_meta] = recent.asset_materializations_for_node(hourly.node_def.name)
    assert "quality_timeliness" not in old_meta.metadata
    assert 0.0 <= recent_meta.metadata["quality_timeliness"].value <= 100.0
    # Its freshness says how long after the day's close it was stored.
    [fresh] = [e for e in recent.get_asset_check_evaluations() if e.check_name == "freshness"]
    assert fresh.passed and "min after its day's close (lag allowed: 30 min)" in fresh.description
    assert fresh.metadata["stored_minutes_after_close"].value > 0


def test_check_results_are_recorded_in_the_instance(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str
) -> None:
    with dg.instance_for_test() as instance:
        run(hourly, server, warehouse_url, instance=instance)
        records = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            list(hourly.check_keys)
        )

    statuses = {key.name: record.status.value for key, record in records.items()}
    assert statuses["schema"] == statuses["completeness"] == statuses["freshness"] == "SUCCEEDED"
    assert {record.partition for record in records.values()} == {PARTITION}
    # The fake's saw-tooth prices may or may not put an outlier in a given day.
    assert statuses["outliers"] in ("SUCCEEDED", "FAILED")
