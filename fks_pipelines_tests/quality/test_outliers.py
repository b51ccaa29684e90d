"""The result shape of the data-error detectors: flat metadata, exact counts, capped lists."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.assess import judge_days
from fks_pipelines.quality.bar_errors import FIELDS
from fks_pipelines.quality.outliers import MAX_LISTED, OutlierResult

MINUTE = Interval.parse("1m")
DAY = pd.Timestamp("2024-01-02", tz="UTC")


def minutes(closes: np.ndarray) -> pd.DataFrame:
    """One-minute BTCUSDT bars from ``DAY`` that open at their close (a whole bar per price)."""
    return build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval=MINUTE.name,
        ts=pd.date_range(DAY, periods=len(closes), freq="1min"),
        open=closes,
        high=closes * 1.001,
        low=closes * 0.999,
        close=closes,
        volume=np.full(len(closes), 50.0),
    )


def test_metadata_is_flat_and_plain() -> None:
    ts = DAY + pd.Timedelta(hours=10)
    result = OutlierResult(
        field="close",
        method="errors",
        threshold=3.0,
        count=1,
        scored=24,
        max_score=12.5,
        severity="high",
        timestamps=[ts],
        values=[120.0],
        scores=[12.5],
        symbols=["BTCUSDT"],
    )

    assert result.as_metadata() == {
        "outliers_close_count": 1,
        "outliers_close_scored": 24,
        "outliers_close_severity": "high",
        "outliers_close_method": "errors",
        "outliers_close_threshold": 3.0,
        "outliers_close_max_score": 12.5,
        "outliers_close_examples": ["BTCUSDT 2024-01-02T10:00:00+00:00 120 (score 12.5)"],
    }


def test_metadata_of_a_result_with_nothing_scored_has_no_score_or_examples() -> None:
    result = OutlierResult(
        field="volume",
        method="errors",
        threshold=9.0,
        count=0,
        scored=0,
        max_score=None,
        severity="none",
    )

    assert result.examples == []
    assert set(result.as_metadata()) == {
        "outliers_volume_count",
        "outliers_volume_scored",
        "outliers_volume_severity",
        "outliers_volume_method",
        "outliers_volume_threshold",
    }


def test_the_detectors_results_cap_their_lists_and_keep_the_count_exact() -> None:
    """judge_days (the assets' path) lists the worst MAX_LISTED bars, worst first."""
    closes = 100.0 + np.sin(np.arange(1440) / 10.0)
    closes[100:1400:50] *= 1.1  # 26 bars lifted whole off a calm series

    judged = judge_days(
        minutes(closes[:0]), minutes(closes), Instrument(asset_class="crypto"), MINUTE
    )

    results = judged[DAY].outliers
    assert [r.field for r in results] == list(FIELDS)
    shift = results[FIELDS.index("shift")]
    assert shift.method == "errors"
    assert shift.count == 26 and shift.severity == "high"
    assert len(shift.timestamps) == len(shift.values) == len(shift.scores) == MAX_LISTED
    assert shift.scores == sorted(shift.scores, reverse=True)
    assert shift.max_score == shift.scores[0]
    assert all(score >= shift.threshold for score in shift.scores)
    metadata = shift.as_metadata()
    assert metadata["outliers_shift_count"] == 26
    assert len(metadata["outliers_shift_examples"]) == MAX_LISTED  # type: ignore[arg-type]
    assert metadata["outliers_shift_examples"][0].startswith("BTCUSDT 2024-01-02T")  # type: ignore[index]
