"""Range runs (what a backfill under the assets' BackfillPolicy launches), in process."""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from fks_pipelines.defs.assets import build_ohlcv_asset
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource
from fks_pipelines.market.universe import load_universe
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines_tests.defs.support import warehouse_resources
from fks_pipelines_tests.fakes.binance import FakeBinance

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
FIRST, LAST = "2024-01-03", "2024-01-12"


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


@pytest.fixture
def hourly() -> dg.AssetsDefinition:
    return build_ohlcv_asset("binance", "1h", load_universe())


def materialize(
    asset: dg.AssetsDefinition,
    server: FakeBinance,
    warehouse_url: str,
    cache_dir: Path,
    *,
    partition: str | None = None,
    first: str | None = None,
    last: str | None = None,
) -> dg.ExecuteInProcessResult:
    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last} if first and last else None
    return dg.materialize(
        [asset],
        partition_key=partition,
        tags=tags,
        resources={
            "binance": BinanceResource(base_url=server.url, cache_dir=str(cache_dir)),
            **warehouse_resources(warehouse_url),
        },
    )


def all_rows(warehouse_url: str) -> pd.DataFrame:
    return Warehouse.from_url(warehouse_url).read_ohlcv(
        "binance",
        "1h",
        SYMBOLS,
        pd.Timestamp("2024-01-01", tz="UTC"),
        pd.Timestamp("2025-01-01", tz="UTC"),
    )


def test_a_range_run_writes_what_the_partitions_one_by_one_write(
    server: FakeBinance,
    hourly: dg.AssetsDefinition,
    warehouse_url: str,
    pg_warehouse_url: str,
    tmp_path: Path,
) -> None:
    days = [d.date().isoformat() for d in pd.date_range(FIRST, LAST, freq="D")]
    for day in days:
        materialize(hourly, server, pg_warehouse_url, tmp_path / "one", partition=f"{day}|ETHUSDT")
    one_by_one = len(server.requests_to("/fapi/v1/klines"))

    result = materialize(
        hourly,
        server,
        warehouse_url,
        tmp_path / "range",
        first=f"{FIRST}|ETHUSDT",
        last=f"{LAST}|ETHUSDT",
    )

    # A day's partitions each ask for their own window; the range asks once for its ten days
    # (pages are planned from the anchor, so this one fits in the first page of the year).
    assert len(server.requests_to("/fapi/v1/klines")) - one_by_one == 1
    pd.testing.assert_frame_equal(all_rows(warehouse_url), all_rows(pg_warehouse_url))
    assert len(all_rows(warehouse_url)) == 24 * len(days)
    materializations = result.asset_materializations_for_node(hourly.node_def.name)
    assert sorted(str(m.partition) for m in materializations) == [f"{d}|ETHUSDT" for d in days]
    for m in materializations:
        meta = {k: v.value for k, v in m.metadata.items()}
        assert (meta["rows"], meta["expected_bars"], meta["missing_bars"]) == (24, 24, 0)
        assert meta["run_partitions"] == len(days)
        assert meta["requests"] == 1


def test_a_day_of_several_symbols_is_one_run_and_one_write(
    server: FakeBinance, hourly: dg.AssetsDefinition, warehouse_url: str, tmp_path: Path
) -> None:
    result = materialize(
        hourly, server, warehouse_url, tmp_path, first=f"{FIRST}|BTCUSDT", last=f"{FIRST}|SOLUSDT"
    )

    assert result.success
    stored = all_rows(warehouse_url)
    assert stored.groupby("symbol", observed=True).size().to_dict() == dict.fromkeys(SYMBOLS, 24)
    assert len(server.requests_to("/fapi/v1/klines")) == 3
    partitions = [
        str(m.partition) for m in result.asset_materializations_for_node(hourly.node_def.name)
    ]
    assert sorted(partitions) == [f"{FIRST}|{s}" for s in SYMBOLS]
