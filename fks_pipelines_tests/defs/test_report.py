"""The ``quality/daily_report`` asset and its schedule, over a real SQLite or PostgreSQL."""

from __future__ import annotations

from datetime import UTC, date, datetime

import dagster as dg
import pandas as pd
import pytest

from fks_pipelines.defs.assets import build_ohlcv_assets
from fks_pipelines.defs.consolidated import build_consolidated_assets
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.report import (
    REPORT_KEY,
    build_quality_report_asset,
    build_report_schedule,
)
from fks_pipelines.market.universe import Universe, load_universe
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines_tests.defs.support import warehouse_resources

START = date(2024, 1, 1)
BINANCE_1H = dg.AssetKey(["ohlcv", "binance", "1h"])
CONSOLIDATED_1H = dg.AssetKey(["ohlcv", "consolidated", "1h"])


@pytest.fixture(scope="module")
def universe() -> Universe:
    return load_universe()


@pytest.fixture(scope="module")
def upstream(universe: Universe) -> list[dg.AssetSpec]:
    """The specs of the project's provider and consolidated OHLCV assets, as the report sees
    them (their bodies, resources and checks are not needed here)."""
    assets = build_ohlcv_assets(universe) + build_consolidated_assets(universe)
    return [spec for asset in assets for spec in asset.specs]


@pytest.fixture
def report(universe: Universe, upstream: list[dg.AssetSpec]) -> dg.AssetsDefinition:
    return build_quality_report_asset(universe, [spec.key for spec in upstream], START)


def seed(warehouse_url: str) -> None:
    """Quality rows of 2024-01-04..06: Binance BTC/ETH, Polygon's X:BTCUSD, consolidated BTC."""
    frame = pd.DataFrame(
        {
            "provider": ["binance"] * 6 + ["polygon"] * 2 + ["consolidated"] * 3,
            "interval": "1h",
            "symbol": ["BTCUSDT"] * 3 + ["ETHUSDT"] * 3 + ["X:BTCUSD"] * 2 + ["BTC-USD"] * 3,
            "day": ["2024-01-04", "2024-01-05", "2024-01-06"] * 2
            + ["2024-01-04", "2024-01-06"]
            + ["2024-01-04", "2024-01-05", "2024-01-06"],
            "quality_score": [100, 62.5, 95, 90, 80, 70, 50, 40, 99, 98, 97],
            "expected_bars": 24,
            "missing_bars": [0, 6, 0, 0, 1, 2, 0, 12, 0, 0, 0],
            "outlier_count": [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            "outlier_severity": ["none", "high"] + ["none"] * 9,
            "agreement_max_bps": [None] * 8 + [4.0, None, 6.0],
            "bars_compared": [None] * 8 + [24, 0, 24],
            "failed_checks": [""] * 11,
        }
    )
    frame.loc[1, "failed_checks"] = "outliers:ERROR, completeness:WARN"
    frame.loc[7, "failed_checks"] = "completeness:ERROR"
    Warehouse.from_url(warehouse_url).write_quality(frame)


def partition_metadata(
    result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition
) -> dict[str, dict[str, object]]:
    return {
        str(m.partition): {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node(asset.node_def.name)
    }


def resources(warehouse_url: str) -> dict[str, object]:
    return dict(warehouse_resources(warehouse_url))


def test_one_day_materialises_its_report(report: dg.AssetsDefinition, warehouse_url: str) -> None:
    seed(warehouse_url)

    result = dg.materialize(
        [report], partition_key="2024-01-05", resources=resources(warehouse_url)
    )

    assert result.success
    [materialization] = result.asset_materializations_for_node(report.node_def.name)
    assert materialization.partition == "2024-01-05"
    assert isinstance(materialization.metadata["report"], dg.MarkdownMetadataValue)
    meta = partition_metadata(result, report)["2024-01-05"]
    markdown = str(meta["report"])
    assert markdown.startswith("# Data quality report: 2024-01-05 (UTC)")
    lines = markdown.splitlines()
    rows = [line for line in lines if line.startswith(("| binance", "| polygon", "| consol"))]
    assert rows == [
        "| binance 1h | BTCUSDT | 62.5 | 6 / 24 | **3 (high)** | — "
        "| outliers:ERROR, completeness:WARN | ·········" + "·" * 3 + "█▆ |",
        "| binance 1h | ETHUSDT | 80.0 | 1 / 24 | 0 | — | none | ············█▇ |",
        "| polygon 1h | X:BTCUSD | — | — | — | — | — | ············▅· |",
        "| consolidated 1h | BTC-USD | 98.0 | 0 / 24 | 0 | nothing compared | none "
        "| ············██ |",
    ]
    assert {k: meta[k] for k in meta if k != "report"} == {
        "run_partitions": 1,
        "partitions": 3,
        "missing_bars": 7,
        "outliers_high": 1,
        "failed_checks": 2,
        "mean_quality_score": pytest.approx((62.5 + 80 + 98) / 3),
        "min_quality_score": 62.5,
        "score_binance_1h": 71.25,
        "score_consolidated_1h": 98.0,
        "score_consolidated_1h_BTC-USD": 98.0,
    }


def test_a_range_run_gives_each_day_its_own_materialisation(
    report: dg.AssetsDefinition, warehouse_url: str
) -> None:
    seed(warehouse_url)

    result = dg.materialize(
        [report],
        tags={RANGE_START_TAG: "2024-01-04", RANGE_END_TAG: "2024-01-06"},
        resources=resources(warehouse_url),
    )

    assert result.success
    meta = partition_metadata(result, report)
    assert sorted(meta) == ["2024-01-04", "2024-01-05", "2024-01-06"]
    figures = {
        day: (m["partitions"], m["missing_bars"], m["failed_checks"], m["min_quality_score"])
        for day, m in meta.items()
    }
    assert figures == {
        "2024-01-04": (4, 0, 0, 50.0),
        "2024-01-05": (3, 7, 2, 62.5),
        "2024-01-06": (4, 14, 1, 40.0),
    }
    assert meta["2024-01-06"]["score_polygon_1h"] == 40.0
    assert "score_polygon_1h" not in meta["2024-01-05"]
    for day, m in meta.items():
        assert str(m["report"]).startswith(f"# Data quality report: {day} (UTC)")
        assert m["run_partitions"] == 3
    # The first day's history is read too: 2024-01-06's sparkline shows all three days.
    assert "| binance 1h | BTCUSDT | 95.0 |" in str(meta["2024-01-06"]["report"])
    assert "···········█▆█ |" in str(meta["2024-01-06"]["report"])


def test_a_day_without_quality_rows_still_reports(
    report: dg.AssetsDefinition, warehouse_url: str
) -> None:
    result = dg.materialize(
        [report], partition_key="2024-01-02", resources=resources(warehouse_url)
    )

    assert result.success
    meta = partition_metadata(result, report)["2024-01-02"]
    assert "No quality rows stored from 2023-12-20 to 2024-01-02." in str(meta["report"])
    assert meta["partitions"] == 0


def test_definition_partitions_dependencies_and_backfill_policy(
    report: dg.AssetsDefinition, upstream: list[dg.AssetSpec]
) -> None:
    assert report.key == REPORT_KEY == dg.AssetKey(["quality", "daily_report"])
    assert report.group_names_by_key[REPORT_KEY] == "quality"
    assert report.specs_by_key[REPORT_KEY].kinds == {"python"}
    assert report.required_resource_keys - {"io_manager"} == {"warehouse"}
    assert report.partitions_def == dg.DailyPartitionsDefinition(start_date="2024-01-01")
    assert report.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=100)
    assert set(report.dependency_keys) == {spec.key for spec in upstream}
    assert {BINANCE_1H, CONSOLIDATED_1H} <= set(report.dependency_keys)


def test_a_report_day_depends_on_that_date_of_every_symbol(
    report: dg.AssetsDefinition, upstream: list[dg.AssetSpec], warehouse_url: str
) -> None:
    defs = dg.Definitions(
        assets=[*upstream, report],
        schedules=[build_report_schedule(report)],
        resources=resources(warehouse_url),
    )
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()

    parents = {
        key: graph.get_parent_partition_keys_for_child("2024-01-05", key, REPORT_KEY)
        for key in (BINANCE_1H, CONSOLIDATED_1H)
    }
    assert set(parents[BINANCE_1H].partitions_subset.get_partition_keys()) == {
        "2024-01-05|BTCUSDT",
        "2024-01-05|ETHUSDT",
        "2024-01-05|SOLUSDT",
    }
    assert set(parents[CONSOLIDATED_1H].partitions_subset.get_partition_keys()) == {
        f"2024-01-05|{instrument}"
        for instrument in ("BTC-USD", "ETH-USD", "SOL-USD", "SPY", "AAPL")
    }
    children = graph.get_child_partition_keys_of_parent(
        dg.MultiPartitionKey({"date": "2024-01-05", "symbol": "ETHUSDT"}), BINANCE_1H, REPORT_KEY
    )
    assert list(children) == ["2024-01-05"]


def test_schedule_asks_for_the_previous_utc_day_at_01_00(
    report: dg.AssetsDefinition, warehouse_url: str
) -> None:
    schedule = build_report_schedule(report)
    defs = dg.Definitions(assets=[report], schedules=[schedule], resources=resources(warehouse_url))
    repository = defs.get_repository_def()

    assert schedule.name == "quality_daily_report"
    assert schedule.cron_schedule == "0 1 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.description is not None
    assert schedule.description.startswith("Daily at 01:00 UTC: ")

    def tick(at: datetime) -> dg.ScheduleExecutionData:
        context = dg.build_schedule_context(scheduled_execution_time=at, repository_def=repository)
        return schedule.evaluate_tick(context)

    [request] = tick(datetime(2024, 1, 6, 1, 0, tzinfo=UTC)).run_requests or []
    assert request.partition_key == "2024-01-05"
    assert request.run_key == "2024-01-05"
    before_start = tick(datetime(2024, 1, 1, 1, 0, tzinfo=UTC))
    assert not before_start.run_requests
    assert before_start.skip_message == "2023-12-31 is before the first reported day, 2024-01-01"

    # The schedule's job runs the report of the requested day.
    seed(warehouse_url)
    job = defs.resolve_job_def("quality_daily_report_job")
    result = job.execute_in_process(partition_key=request.partition_key)
    assert result.success
    [materialization] = result.asset_materializations_for_node(report.node_def.name)
    assert materialization.partition == "2024-01-05"
    assert materialization.metadata["partitions"].value == 3
