"""Downstream assets receive exactly their partitions' stored bars through the warehouse I/O
manager, in real materialisations over single partitions and ranges."""

from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fks_pipelines.defs.analytics import build_daily_returns_asset, daily_returns_key
from fks_pipelines.defs.assets import build_ohlcv_asset
from fks_pipelines.defs.consolidated import build_consolidated_asset
from fks_pipelines.defs.io_manager import IO_MANAGER_KEY, WarehouseIOManager
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource, WarehouseResource
from fks_pipelines.market.consolidate import consolidate
from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.returns import daily_returns
from fks_pipelines.market.universe import load_universe
from fks_pipelines.warehouse.store import ConsolidatedScope, Scope, Warehouse
from fks_pipelines_tests.defs.support import warehouse_resources

FIRST = pd.Timestamp("2024-01-01", tz="UTC")
DAYS = 6  # 2024-01-01 .. 2024-01-06 stored
UNIVERSE = load_universe()
BINANCE_1H = build_ohlcv_asset("binance", "1h", UNIVERSE)
CONSOLIDATED_1H = build_consolidated_asset("1h", UNIVERSE)


def hourly(provider: str, symbol: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range(FIRST, periods=24 * DAYS, freq="h")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(ts))))
    opens = np.r_[100.0, close[:-1]]
    return build_frame(
        provider=provider,
        symbol=symbol,
        interval="1h",
        ts=ts,
        open=opens,
        high=np.maximum(opens, close) * 1.001,
        low=np.minimum(opens, close) * 0.999,
        close=close,
        volume=rng.uniform(1, 5, len(ts)),
    )


@pytest.fixture
def stored(warehouse_url: str) -> Iterator[str]:
    """Binance BTCUSDT and ETHUSDT 1h bars, and the consolidated BTC-USD and ETH-USD series,
    for six days."""
    warehouse = Warehouse.from_url(warehouse_url)
    end = FIRST + pd.Timedelta(days=DAYS)
    for seed, (symbol, instrument) in enumerate((("BTCUSDT", "BTC-USD"), ("ETHUSDT", "ETH-USD"))):
        bars = hourly("binance", symbol, seed)
        warehouse.write_ohlcv(bars, Scope("binance", "1h", (symbol,), FIRST, end))
        warehouse.write_consolidated(
            consolidate(instrument, "1h", [bars]),
            ConsolidatedScope("1h", (instrument,), FIRST, end),
        )
    yield warehouse_url


def resources(url: str) -> dict[str, object]:
    """What the materialisations need: the upstream asset's provider is never asked."""
    return {**warehouse_resources(url), "binance": BinanceResource()}


def received_by_partition(frame: pd.DataFrame, key: str = "symbol") -> dict[str, int]:
    """Rows a downstream asset received, by ``date|symbol`` partition."""
    days = frame["ts"].dt.strftime("%Y-%m-%d")
    return {
        f"{day}|{symbol}": int(rows)
        for (day, symbol), rows in frame.groupby([days, frame[key]]).size().items()
    }


def recorder(
    partitions_def: dg.PartitionsDefinition | None,
    upstream: dg.AssetKey,
    seen: list[pd.DataFrame],
) -> dg.AssetsDefinition:
    @dg.asset(partitions_def=partitions_def, ins={"bars": dg.AssetIn(key=upstream)})
    def downstream(bars: pd.DataFrame) -> None:
        seen.append(bars)

    return downstream


def test_same_partitions_over_a_range_receive_exactly_those_bars(stored: str) -> None:
    seen: list[pd.DataFrame] = []
    downstream = recorder(BINANCE_1H.partitions_def, BINANCE_1H.key, seen)

    result = dg.materialize(
        [BINANCE_1H, downstream],
        selection=[downstream],
        tags={RANGE_START_TAG: "2024-01-02|BTCUSDT", RANGE_END_TAG: "2024-01-04|BTCUSDT"},
        resources=resources(stored),
    )

    assert result.success
    [bars] = seen
    assert received_by_partition(bars) == {
        "2024-01-02|BTCUSDT": 24,
        "2024-01-03|BTCUSDT": 24,
        "2024-01-04|BTCUSDT": 24,
    }
    expected = Warehouse.from_url(stored).read_ohlcv(
        "binance", "1h", ["BTCUSDT"], FIRST + pd.Timedelta(days=1), FIRST + pd.Timedelta(days=4)
    )
    pd.testing.assert_frame_equal(bars, expected)


def test_a_daily_asset_receives_every_symbol_of_its_days(stored: str) -> None:
    seen: list[pd.DataFrame] = []
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01")
    downstream = recorder(daily, BINANCE_1H.key, seen)

    for run in (
        {"partition_key": "2024-01-03"},
        {"tags": {RANGE_START_TAG: "2024-01-04", RANGE_END_TAG: "2024-01-05"}},
    ):
        result = dg.materialize(
            [BINANCE_1H, downstream],
            selection=[downstream],
            resources=resources(stored),
            **run,
        )
        assert result.success

    one_day, two_days = seen
    assert received_by_partition(one_day) == {"2024-01-03|BTCUSDT": 24, "2024-01-03|ETHUSDT": 24}
    assert received_by_partition(two_days) == {
        f"2024-01-0{day}|{symbol}": 24 for symbol in ("BTCUSDT", "ETHUSDT") for day in (4, 5)
    }
    assert list(two_days["symbol"].unique()) == ["BTCUSDT", "ETHUSDT"]  # sorted by symbol, ts
    assert two_days.groupby("symbol")["ts"].is_monotonic_increasing.all()


def test_an_unpartitioned_asset_receives_the_latest_configured_days(stored: str) -> None:
    # An upstream whose partitions end with the stored days, as the real ones end yesterday.
    partitions = dg.MultiPartitionsDefinition(
        {
            "date": dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-07"),
            "symbol": dg.StaticPartitionsDefinition(["BTCUSDT", "ETHUSDT", "SOLUSDT"]),
        }
    )
    upstream = dg.AssetSpec(BINANCE_1H.key, partitions_def=partitions).with_io_manager_key(
        IO_MANAGER_KEY
    )
    seen: list[pd.DataFrame] = []
    downstream = recorder(None, BINANCE_1H.key, seen)
    warehouse = WarehouseResource(url=stored)

    result = dg.materialize(
        [upstream, downstream],
        resources={
            IO_MANAGER_KEY: WarehouseIOManager(warehouse=warehouse, unpartitioned_days=2),
        },
    )

    assert result.success
    [bars] = seen
    assert received_by_partition(bars) == {
        f"2024-01-0{day}|{symbol}": 24 for symbol in ("BTCUSDT", "ETHUSDT") for day in (5, 6)
    }


def test_daily_returns_example_over_a_range(stored: str) -> None:
    returns = build_daily_returns_asset(UNIVERSE, FIRST.date())

    result = dg.materialize(
        [CONSOLIDATED_1H, returns],
        selection=[returns],
        tags={RANGE_START_TAG: "2024-01-02", RANGE_END_TAG: "2024-01-03"},
        resources=resources(stored),
    )

    assert result.success
    bars = Warehouse.from_url(stored).read_consolidated(
        "1h", ["BTC-USD", "ETH-USD"], FIRST + pd.Timedelta(days=1), FIRST + pd.Timedelta(days=3)
    )
    expected = daily_returns(bars)
    # One materialisation per partition of the range, each with the run's table.
    materializations = result.asset_materializations_for_node(returns.node_def.name)
    assert sorted(m.partition for m in materializations) == ["2024-01-02", "2024-01-03"]
    materialization = materializations[0]
    shown = [record.data for record in materialization.metadata["returns"].value.records]
    assert [(row["instrument"], row["day"], row["bars"]) for row in shown] == [
        ("BTC-USD", "2024-01-02", 24),
        ("BTC-USD", "2024-01-03", 24),
        ("ETH-USD", "2024-01-02", 24),
        ("ETH-USD", "2024-01-03", 24),
    ]
    assert [row["day_return_pct"] for row in shown] == [
        round(value * 100, 4) for value in expected["day_return"]
    ]
    assert materialization.metadata["input_bars"].value == 96
    checks = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == daily_returns_key()
    }
    assert checks == {"values_in_range": True, "one_row_per_instrument_day": True}


def test_the_manager_stores_nothing_and_refuses_values() -> None:
    manager = WarehouseIOManager(warehouse=WarehouseResource(url="sqlite://"))
    context = dg.build_output_context(asset_key=BINANCE_1H.key)

    manager.handle_output(context, None)

    with pytest.raises(TypeError, match="stores nothing"):
        manager.handle_output(context, pd.DataFrame({"x": [1]}))
