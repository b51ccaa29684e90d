"""The Parquet export asset over a real warehouse holding consolidated rows."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fks_pipelines.defs.assets import AssetPolicy, build_ohlcv_asset
from fks_pipelines.defs.consolidated import build_consolidated_asset, consolidated_asset_key
from fks_pipelines.defs.exports import build_export_asset, build_export_assets, export_asset_key
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource, PolygonResource, WarehouseResource
from fks_pipelines.market.consolidate import consolidate
from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.universe import Universe, load_universe
from fks_pipelines.warehouse.export import month_path
from fks_pipelines.warehouse.store import ConsolidatedScope, Warehouse
from fks_pipelines_tests.defs.support import warehouse_resources

NO_RETRY = AssetPolicy(retry=None)


@pytest.fixture(scope="module")
def universe() -> Universe:
    return load_universe()


def hours(instrument: str, start: str, periods: int) -> pd.DataFrame:
    """Consolidated hourly bars of ``instrument`` from one provider (no volume in quote units)."""
    ts = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=periods, freq="1h")
    opens = 100.0 + pd.RangeIndex(periods).to_numpy(dtype="float64")
    window = build_frame(
        provider="binance",
        symbol=f"{instrument}-src",
        interval="1h",
        ts=ts,
        open=opens,
        high=opens + 1.0,
        low=opens - 1.0,
        close=opens + 0.5,
        volume=opens * 2.0,
    )
    return consolidate(instrument, "1h", [window])


@pytest.fixture
def warehouse(warehouse_url: str) -> Warehouse:
    """BTC-USD from 2024-01-31 20:00 to 2024-02-01 03:00 and SPY on 2024-02-01, hourly."""
    store = Warehouse.from_url(warehouse_url)
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-03-01", tz="UTC")
    for instrument, first, periods in (
        ("BTC-USD", "2024-01-31 20:00", 8),
        ("SPY", "2024-02-01 14:00", 7),
    ):
        store.write_consolidated(
            hours(instrument, first, periods),
            ConsolidatedScope("1h", (instrument,), start, end),
        )
    return store


def run(
    asset: dg.AssetsDefinition, warehouse_url: str, first: str, last: str | None = None
) -> dg.ExecuteInProcessResult:
    resources = {"warehouse": WarehouseResource(url=warehouse_url)}
    if last is None:
        return dg.materialize([asset], partition_key=first, resources=resources)
    return dg.materialize(
        [asset], tags={RANGE_START_TAG: first, RANGE_END_TAG: last}, resources=resources
    )


def partition_metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, dict]:
    return {
        str(m.partition): {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node(node)
    }


def test_one_asset_per_interval_partitioned_by_month_and_instrument(
    universe: Universe, tmp_path: Path
) -> None:
    assets = build_export_assets(universe, tmp_path)

    assert [a.key for a in assets] == [export_asset_key("1h"), export_asset_key("1d")]
    hourly = assets[0]
    [upstream] = {dep for deps in hourly.asset_deps.values() for dep in deps}
    assert upstream == consolidated_asset_key("1h")
    assert isinstance(hourly.get_partition_mapping(upstream), dg.MultiPartitionMapping)
    partitions = hourly.partitions_def
    assert isinstance(partitions, dg.MultiPartitionsDefinition)
    keys = partitions.get_partition_keys(datetime(2024, 2, 10, tzinfo=UTC))
    # The current month is a partition: its file grows with each consolidated day.
    assert keys == [
        f"{month}|{symbol}"
        for month in ("2024-01", "2024-02")
        for symbol in ("BTC-USD", "ETH-USD", "SOL-USD", "SPY", "AAPL")
    ]
    assert hourly.backfill_policy == NO_RETRY.backfill


def test_a_partition_writes_its_month_file(
    universe: Universe, warehouse: Warehouse, warehouse_url: str, tmp_path: Path
) -> None:
    asset = build_export_asset("1h", universe, tmp_path, NO_RETRY)

    result = run(asset, warehouse_url, "2024-01|BTC-USD")

    path = month_path(tmp_path, "1h", "BTC-USD", "2024-01")
    table = pq.read_table(path)
    assert table.num_rows == 4  # 20:00 to 23:00 of January 31st
    assert table["ts"].to_pylist()[0] == datetime(2024, 1, 31, 20, tzinfo=UTC)
    meta = partition_metadata(result, asset.node_def.name)
    assert meta == {"2024-01|BTC-USD": {"path": str(path), "rows": 4, "bytes": path.stat().st_size}}
    # Re-materialising rewrites exactly that file.
    before = sorted(tmp_path.rglob("*"))
    run(asset, warehouse_url, "2024-01|BTC-USD")
    assert sorted(tmp_path.rglob("*")) == before


def test_a_range_run_writes_each_month_of_it(
    universe: Universe, warehouse: Warehouse, warehouse_url: str, tmp_path: Path
) -> None:
    asset = build_export_asset("1h", universe, tmp_path, NO_RETRY)

    result = run(asset, warehouse_url, "2024-01|BTC-USD", "2024-03|BTC-USD")

    meta = partition_metadata(result, asset.node_def.name)
    assert {key: m["rows"] for key, m in meta.items()} == {
        "2024-01|BTC-USD": 4,
        "2024-02|BTC-USD": 4,
        "2024-03|BTC-USD": 0,  # no bars: no file
    }
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "ohlcv_consolidated/interval=1h/instrument=BTC-USD/month=2024-01/data.parquet",
        "ohlcv_consolidated/interval=1h/instrument=BTC-USD/month=2024-02/data.parquet",
    ]
    assert meta["2024-03|BTC-USD"]["bytes"] == 0


def test_consolidated_days_request_their_months_once(universe: Universe, tmp_path: Path) -> None:
    """The automation condition: a day consolidated again (also of an earlier month, as on the
    1st for the month before) requests its month's file; each once."""
    consolidated = build_consolidated_asset("1h", universe)
    export = build_export_asset("1h", universe, tmp_path)
    defs = dg.Definitions(
        assets=[
            build_ohlcv_asset("binance", "1h", universe),
            build_ohlcv_asset("polygon", "1h", universe),
            consolidated,
            export,
        ],
        resources={
            "binance": BinanceResource(),
            "polygon": PolygonResource(api_key="unused"),
            **warehouse_resources("sqlite://"),
        },
    )
    now = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now)
        for key in (
            "2026-11-30|BTC-USD",
            "2026-11-29|BTC-USD",
            "2026-11-30|SPY",
            "2024-03-05|ETH-USD",
        ):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(consolidated.key, partition=key)
            )
        second = dg.evaluate_automation_conditions(
            defs, instance, evaluation_time=now, cursor=first.cursor
        )
        third = dg.evaluate_automation_conditions(
            defs, instance, evaluation_time=now, cursor=second.cursor
        )

    assert first.total_requested == 0
    requested = second.get_requested_partitions(export.key)
    assert sorted(requested) == ["2024-03|ETH-USD", "2026-11|BTC-USD", "2026-11|SPY"]
    assert third.total_requested == 0
