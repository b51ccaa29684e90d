"""Cross-provider agreement measured over a consolidated series."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fks_pipelines.market.consolidate import consolidate, empty_consolidated
from fks_pipelines.market.frame import build_frame
from fks_pipelines.quality.agreement import Agreement, measure_agreement

DAY = pd.Timestamp("2024-01-02", tz="UTC")


def window(provider: str, symbol: str, closes: np.ndarray) -> pd.DataFrame:
    """Hourly bars with the given closes (opens equal to the closes)."""
    return build_frame(
        provider=provider,
        symbol=symbol,
        interval="1h",
        ts=pd.date_range(DAY, periods=len(closes), freq="h"),
        open=closes,
        high=closes * 1.01,
        low=closes * 0.99,
        close=closes,
        volume=np.ones(len(closes)),
    )


def crafted() -> pd.DataFrame:
    """24 bars: binance has 20, polygon all 24 (fills 4); polygon is 10 bps off on the first 18
    shared bars and 80 bps off on the last two; so 20 bars are compared, 2 beyond 50 bps."""
    base = 100.0 + np.arange(24, dtype="float64")
    factor = np.r_[np.full(18, 1.001), np.full(2, 1.008), np.ones(4)]
    binance = window("binance", "BTCUSDT", base[:20])
    polygon = window("polygon", "X:BTCUSD", base * factor)
    return consolidate("BTC-USD", "1h", [binance, polygon])


def test_counts_median_max_and_beyond_tolerance() -> None:
    agreement = measure_agreement(crafted(), tolerance_bps=50.0)

    assert agreement.bars == 24
    assert agreement.compared == 20
    assert agreement.median_abs_dev_bps == pytest.approx(10.0)
    assert agreement.max_abs_dev_bps == pytest.approx(80.0)
    assert agreement.beyond_tolerance == 2
    assert agreement.tolerance_bps == 50.0
    assert agreement.source_mix == {"binance": 20, "polygon": 4}


def test_a_bar_exactly_at_the_tolerance_is_within_it() -> None:
    frame = crafted()
    frame["agreement_bps"] = frame["agreement_bps"].where(frame["providers"] < 2, 50.0)
    assert measure_agreement(frame, tolerance_bps=50.0).beyond_tolerance == 0
    assert measure_agreement(frame, tolerance_bps=49.9).beyond_tolerance == 20


def test_tolerance_changes_only_the_beyond_count() -> None:
    loose = measure_agreement(crafted(), tolerance_bps=100.0)
    tight = measure_agreement(crafted(), tolerance_bps=5.0)
    assert loose.beyond_tolerance == 0
    assert tight.beyond_tolerance == 20
    assert dataclasses.replace(loose, beyond_tolerance=0, tolerance_bps=0.0) == (
        dataclasses.replace(tight, beyond_tolerance=0, tolerance_bps=0.0)
    )


def test_a_single_provider_series_compares_nothing() -> None:
    frame = consolidate("BTC-USD", "1h", [window("binance", "BTCUSDT", np.full(5, 100.0))])
    agreement = measure_agreement(frame, tolerance_bps=50.0)
    assert agreement == Agreement(
        bars=5,
        compared=0,
        median_abs_dev_bps=None,
        max_abs_dev_bps=None,
        beyond_tolerance=0,
        tolerance_bps=50.0,
        source_mix={"binance": 5},
        kind_mix={"traded": 5},
    )
    assert "agreement_median_bps" not in agreement.as_metadata()
    assert "agreement_max_bps" not in agreement.as_metadata()


def test_an_empty_series() -> None:
    agreement = measure_agreement(empty_consolidated(), tolerance_bps=25.0)
    assert (agreement.bars, agreement.compared, agreement.beyond_tolerance) == (0, 0, 0)
    assert agreement.median_abs_dev_bps is None
    assert agreement.source_mix == {}
    assert agreement.as_metadata() == {
        "rows": 0,
        "bars_compared": 0,
        "agreement_beyond_tolerance": 0,
        "agreement_tolerance_bps": 25.0,
    }


def test_metadata_is_flat_plain_numbers() -> None:
    metadata = measure_agreement(crafted(), tolerance_bps=50.0).as_metadata()

    assert metadata == {
        "rows": 24,
        "bars_compared": 20,
        "agreement_beyond_tolerance": 2,
        "agreement_tolerance_bps": 50.0,
        "agreement_median_bps": pytest.approx(10.0),
        "agreement_max_bps": pytest.approx(80.0),
        "source_binance": 20,
        "source_polygon": 4,
        "bars_traded": 24,
    }
    for key, value in metadata.items():
        assert type(value) in (int, float), (key, type(value))
    assert type(metadata["rows"]) is int
    assert type(metadata["agreement_median_bps"]) is float


def test_the_measure_is_frozen() -> None:
    agreement = measure_agreement(crafted(), tolerance_bps=50.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        agreement.bars = 0  # type: ignore[misc]


@pytest.mark.parametrize("tolerance", [-1.0, float("nan")])
def test_a_meaningless_tolerance_is_refused(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance_bps"):
        measure_agreement(crafted(), tolerance_bps=tolerance)
