"""The consolidated asset over real provider assets, local provider servers and a warehouse."""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from fks_pipelines.defs.assets import AssetPolicy, build_ohlcv_asset
from fks_pipelines.defs.consolidated import build_consolidated_asset
from fks_pipelines.defs.partitions import RANGE_END_TAG, RANGE_START_TAG
from fks_pipelines.defs.resources import BinanceResource, PolygonResource
from fks_pipelines.market.frame import build_frame, conform
from fks_pipelines.market.universe import Universe, load_universe
from fks_pipelines.warehouse.store import Scope, Warehouse
from fks_pipelines_tests.defs.support import warehouse_resources
from fks_pipelines_tests.fakes.binance import FakeBinance, expected_frame
from fks_pipelines_tests.fakes.polygon import FakePolygon

DAY1, DAY2 = "2024-01-05", "2024-01-06"
NO_RETRY = AssetPolicy(retry=None)


@pytest.fixture(scope="module")
def universe() -> Universe:
    return load_universe()


@pytest.fixture
def polygon() -> Iterator[FakePolygon]:
    with FakePolygon() as fake:
        yield fake


@pytest.fixture
def resources(
    binance: FakeBinance, polygon: FakePolygon, warehouse_url: str, tmp_path: Path
) -> dict[str, object]:
    return {
        "binance": BinanceResource(base_url=binance.url, cache_dir=str(tmp_path / "cache")),
        "polygon": PolygonResource(
            api_key=polygon.api_key, base_url=polygon.url, cache_dir=str(tmp_path / "cache")
        ),
        **warehouse_resources(warehouse_url),
    }


def run(
    asset: dg.AssetsDefinition, resources: dict[str, object], first: str, last: str | None = None
) -> dg.ExecuteInProcessResult:
    if last is None:
        return dg.materialize(
            [asset], partition_key=first, resources=resources, raise_on_error=False
        )
    return dg.materialize(
        [asset],
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last},
        resources=resources,
        raise_on_error=False,
    )


def consolidated_rows(warehouse_url: str, day: str) -> pd.DataFrame:
    start = pd.Timestamp(day, tz="UTC")
    return Warehouse.from_url(warehouse_url).read_consolidated(
        "1h", ["BTC-USD"], start, start + pd.Timedelta(days=1)
    )


def partition_metadata(result: dg.ExecuteInProcessResult, node: str) -> dict[str, dict]:
    return {
        str(m.partition): {k: v.value for k, v in m.metadata.items()}
        for m in result.asset_materializations_for_node(node)
    }


def test_a_failed_primary_day_is_served_by_the_next_provider(
    universe: Universe,
    binance: FakeBinance,
    resources: dict[str, object],
    warehouse_url: str,
) -> None:
    binance_1h = build_ohlcv_asset("binance", "1h", universe, NO_RETRY)
    polygon_1h = build_ohlcv_asset("polygon", "1h", universe, NO_RETRY)
    consolidated = build_consolidated_asset("1h", universe, NO_RETRY)

    binance.failing_symbols.add("BTCUSDT")
    assert not run(binance_1h, resources, f"{DAY2}|BTCUSDT").success  # HTTP 500
    binance.failing_symbols.clear()
    assert run(binance_1h, resources, f"{DAY1}|BTCUSDT").success
    assert run(polygon_1h, resources, f"{DAY1}|X:BTCUSD", f"{DAY2}|X:BTCUSD").success
    result = run(consolidated, resources, f"{DAY1}|BTC-USD", f"{DAY2}|BTC-USD")

    assert result.success
    day1, day2 = consolidated_rows(warehouse_url, DAY1), consolidated_rows(warehouse_url, DAY2)
    assert len(day1) == len(day2) == 24
    assert set(day1["source"]) == {"binance"} and set(day1["source_symbol"]) == {"BTCUSDT"}
    assert set(day2["source"]) == {"polygon"} and set(day2["source_symbol"]) == {"X:BTCUSD"}
    assert (day1["providers"] == 2).all() and (day2["providers"] == 1).all()
    meta = partition_metadata(result, consolidated.node_def.name)
    assert meta[f"{DAY1}|BTC-USD"]["source_binance"] == 24
    assert meta[f"{DAY1}|BTC-USD"]["bars_compared"] == 24
    assert meta[f"{DAY2}|BTC-USD"]["source_polygon"] == 24
    assert meta[f"{DAY2}|BTC-USD"]["bars_compared"] == 0
    # Each partition is checked and scored, also where a single provider had the bars.
    for day in (DAY1, DAY2):
        assert meta[f"{day}|BTC-USD"]["quality_completeness"] == 100.0
        assert meta[f"{day}|BTC-USD"]["quality_validity"] == 100.0
        assert 0.0 <= meta[f"{day}|BTC-USD"]["quality_score"] <= 100.0
    checks = {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}
    assert sorted({name for name, _ in checks}) == [
        "agreement",
        "completeness",
        "outliers",
        "schema",
    ]
    assert checks[("schema", f"{DAY2}|BTC-USD")].passed
    assert checks[("completeness", f"{DAY2}|BTC-USD")].passed
    # The two fakes' prices are unrelated series: day 1 is compared (and disagrees).
    assert checks[("agreement", f"{DAY1}|BTC-USD")].metadata["bars_compared"].value == 24
    # Polygon alone stored day 2: nothing was compared, and the check says so instead of passing.
    alone = checks[("agreement", f"{DAY2}|BTC-USD")]
    assert not alone.passed and alone.severity == dg.AssetCheckSeverity.WARN
    assert alone.description.startswith("not verified: no bar covered by two providers (polygon")
    assert "agreement:WARN" in meta[f"{DAY2}|BTC-USD"]["failed_checks"]
    # The fakes' unrelated prices make the switch of source a jump no second provider confirms.
    assert (
        checks[("outliers", f"{DAY2}|BTC-USD")].metadata["confirmed_by_second_provider"].value == 0
    )


def test_an_open_circuit_skips_the_primary_and_the_next_provider_fills_in(
    universe: Universe,
    binance: FakeBinance,
    resources: dict[str, object],
    warehouse_url: str,
    tmp_path: Path,
) -> None:
    binance_1h = build_ohlcv_asset("binance", "1h", universe, NO_RETRY)
    polygon_1h = build_ohlcv_asset("polygon", "1h", universe, NO_RETRY)
    consolidated = build_consolidated_asset("1h", universe, NO_RETRY)
    # One failure opens Binance's circuit, so the next run can be seen to skip it.
    resources = {
        **resources,
        "binance": BinanceResource(
            base_url=binance.url, cache_dir=str(tmp_path / "cache"), breaker_failures=1
        ),
    }
    binance.failing_symbols.add("BTCUSDT")
    assert not run(binance_1h, resources, f"{DAY1}|BTCUSDT").success  # opens the circuit
    binance.failing_symbols.clear()
    sent = len(binance.requests_to("/fapi/v1/klines"))

    skipped = run(binance_1h, resources, f"{DAY2}|BTCUSDT")

    assert not skipped.success
    assert "circuit" in str(skipped.failure_data_for_node(binance_1h.node_def.name).error)
    assert len(binance.requests_to("/fapi/v1/klines")) == sent  # nothing reached Binance
    assert run(polygon_1h, resources, f"{DAY2}|X:BTCUSD").success
    assert run(consolidated, resources, f"{DAY2}|BTC-USD").success
    assert set(consolidated_rows(warehouse_url, DAY2)["source"]) == {"polygon"}


@pytest.mark.parametrize(
    ("off_bps", "beyond", "severity"),
    [
        (10.0, 0, None),
        (80.0, 24, dg.AssetCheckSeverity.WARN),
        (600.0, 24, dg.AssetCheckSeverity.ERROR),
    ],
)
def test_agreement_measures_a_provider_that_is_off_by_a_known_amount(
    universe: Universe,
    resources: dict[str, object],
    warehouse_url: str,
    off_bps: float,
    beyond: int,
    severity: dg.AssetCheckSeverity | None,
) -> None:
    """EODHD's bars are Binance's with every close moved by ``off_bps``: that is the agreement."""
    binance_1h = build_ohlcv_asset("binance", "1h", universe, NO_RETRY)
    consolidated = build_consolidated_asset("1h", universe, NO_RETRY)
    assert run(binance_1h, resources, f"{DAY1}|BTCUSDT").success
    warehouse = Warehouse.from_url(warehouse_url)
    start = pd.Timestamp(DAY1, tz="UTC")
    end = start + pd.Timedelta(days=1)
    shifted = warehouse.read_ohlcv("binance", "1h", ["BTCUSDT"], start, end)
    shifted["close"] *= 1 + off_bps / 10_000
    shifted["high"] = shifted[["high", "close"]].max(axis=1)
    shifted = shifted.assign(provider="eodhd", symbol="BTC-USD.CC")
    warehouse.write_ohlcv(shifted, Scope("eodhd", "1h", ("BTC-USD.CC",), start, end))

    result = run(consolidated, resources, f"{DAY1}|BTC-USD")

    rows = consolidated_rows(warehouse_url, DAY1)
    assert set(rows["source"]) == {"binance"}
    assert rows["agreement_bps"].tolist() == pytest.approx([off_bps] * 24)
    meta = partition_metadata(result, consolidated.node_def.name)[f"{DAY1}|BTC-USD"]
    assert meta["agreement_median_bps"] == pytest.approx(off_bps)
    assert meta["agreement_tolerance_bps"] == universe.tolerance("BTC-USD").warn_bps
    assert meta["agreement_beyond_tolerance"] == beyond
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "agreement"]
    assert check.partition == f"{DAY1}|BTC-USD"
    assert check.passed == (severity is None)
    assert check.metadata["bars_compared"].value == 24
    if severity is not None:
        assert check.severity == severity
        assert f"{off_bps:.1f} bp" in check.description


def test_a_consolidated_bar_that_breaks_the_schema_is_not_stored(
    universe: Universe, resources: dict[str, object], warehouse_url: str
) -> None:
    """Bars stored without the provider asset's checks (here: written directly, with a high
    below the close) are refused by the consolidated schema check, which blocks."""
    consolidated = build_consolidated_asset("1h", universe, NO_RETRY)
    warehouse = Warehouse.from_url(warehouse_url)
    start = pd.Timestamp(DAY1, tz="UTC")
    bars = conform(
        expected_frame("BTCUSDT", "1h", DAY1, DAY2).assign(provider="binance", interval="1h")
    )
    bars.loc[5, "high"] = bars.loc[5, "close"] * 0.99
    bars.loc[5, "low"] = min(bars.loc[5, "low"], bars.loc[5, "high"])
    warehouse.write_ohlcv(
        bars, Scope("binance", "1h", ("BTCUSDT",), start, start + pd.Timedelta(days=1))
    )

    result = run(consolidated, resources, f"{DAY1}|BTC-USD")

    assert not result.success
    [schema] = result.get_asset_check_evaluations()
    assert (schema.check_name, schema.partition, schema.passed) == (
        "schema",
        f"{DAY1}|BTC-USD",
        False,
    )
    assert schema.blocking and "high_is_highest" in schema.description
    assert consolidated_rows(warehouse_url, DAY1).empty


def test_a_provider_update_requests_its_consolidated_partitions_once(universe: Universe) -> None:
    """The automation condition: only updated partitions of the last days, and each once."""
    binance_1h = build_ohlcv_asset("binance", "1h", universe)
    polygon_1h = build_ohlcv_asset("polygon", "1h", universe)
    consolidated = build_consolidated_asset("1h", universe, lookback_days=7)
    defs = dg.Definitions(
        assets=[binance_1h, polygon_1h, consolidated],
        resources={
            "binance": BinanceResource(),
            "polygon": PolygonResource(api_key="unused"),
            **warehouse_resources("sqlite://"),
        },
    )
    now = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        first = dg.evaluate_automation_conditions(defs, instance, evaluation_time=now)
        for key in ("2026-11-22|BTCUSDT", "2026-11-21|ETHUSDT", "2026-10-01|BTCUSDT"):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(binance_1h.key, partition=key)
            )
        second = dg.evaluate_automation_conditions(
            defs, instance, evaluation_time=now, cursor=first.cursor
        )
        third = dg.evaluate_automation_conditions(
            defs, instance, evaluation_time=now, cursor=second.cursor
        )

    assert first.total_requested == 0
    requested = second.get_requested_partitions(consolidated.key)
    assert sorted(requested) == ["2026-11-21|ETH-USD", "2026-11-22|BTC-USD"]
    assert third.total_requested == 0


def test_the_next_days_run_revises_the_earlier_days_verdict_and_quality_row(
    universe: Universe, resources: dict[str, object], warehouse_url: str
) -> None:
    """A consolidated day whose last bar is a spike only Binance has: its own run cannot judge
    that bar (no next bars yet); the next day's run records the final verdict on it, check and
    quality row."""
    consolidated = build_consolidated_asset("1h", universe, NO_RETRY)
    warehouse = Warehouse.from_url(warehouse_url)
    start = pd.Timestamp(DAY1, tz="UTC")
    hours = pd.date_range(start, periods=48, freq="1h")
    walk = 100.0 + np.cumsum(np.random.default_rng(3).normal(0.0, 0.05, 48))
    opens = np.r_[100.0, walk[:-1]]
    closes = walk.copy()
    closes[23] *= 1.3  # the last bar of DAY1
    bars = build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=hours,
        open=opens,
        high=np.maximum(opens, closes) + 0.02,
        low=np.minimum(opens, closes) - 0.02,
        close=closes,
        volume=np.full(48, 5.0),
    )
    warehouse.write_ohlcv(
        bars, Scope("binance", "1h", ("BTCUSDT",), start, start + pd.Timedelta(days=2))
    )

    first = run(consolidated, resources, f"{DAY1}|BTC-USD")
    second = run(consolidated, resources, f"{DAY2}|BTC-USD")

    def outliers(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
        return {
            e.partition: e
            for e in result.get_asset_check_evaluations()
            if e.check_name == "outliers"
        }

    assert first.success and second.success
    assert outliers(first)[f"{DAY1}|BTC-USD"].passed
    final = outliers(second)[f"{DAY1}|BTC-USD"]
    assert not final.passed and final.severity == dg.AssetCheckSeverity.ERROR
    assert final.metadata["confirmed_by_second_provider"].value == 0
    rows = warehouse.read_quality(
        pd.Timestamp(DAY1).date(), pd.Timestamp(DAY2).date(), ["consolidated"]
    )
    [row] = rows.to_dict("records")
    assert "outliers:ERROR" in row["failed_checks"]
    assert row["run_id"] == second.run_id
