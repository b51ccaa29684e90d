"""The 0-100 quality score: its parts, their weights, and parts left out."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument, Tolerance
from fks_pipelines.quality.agreement import Agreement
from fks_pipelines.quality.assess import judge_days
from fks_pipelines.quality.completeness import CompletenessReport, check_completeness
from fks_pipelines.quality.outliers import OutlierResult
from fks_pipelines.quality.schema import SchemaReport, check_schema
from fks_pipelines.quality.score import WEIGHTS, quality_score
from fks_pipelines_tests.quality.support import wavy_hours

HOUR = Interval.parse("1h")
DAY = pd.Timestamp("2024-01-02", tz="UTC")
NEXT_DAY = DAY + pd.Timedelta(days=1)
TOLERANCE = Tolerance(warn_bps=50, error_bps=500)


def completeness(ratio: float = 1.0, present: int = 24, **counts: int) -> CompletenessReport:
    fields = dict.fromkeys(
        ("duplicates", "open_bars", "outside", "stale_runs", "stale_bars", "extra"), 0
    )
    fields.update(counts)
    return CompletenessReport(
        series=1,
        expected=24,
        present=present,
        missing=round(24 * (1 - ratio)),
        stale_run=6,
        longest_flat_run=1,
        ratio=ratio,
        **fields,
    )


def schema(rows: int = 100, failing_rows: int = 0, frame_cases: int = 0) -> SchemaReport:
    failures = failing_rows + frame_cases
    return SchemaReport(
        rows=rows, passed=not failures, failures=failures, failing_rows=failing_rows, checks={}
    )


def outlier(severity: str) -> OutlierResult:
    count = 0 if severity == "none" else 1
    return OutlierResult(
        field="close",
        method="errors",
        threshold=3.0,
        count=count,
        scored=100,
        max_score=4.0,
        severity=severity,  # type: ignore[arg-type]
    )


def agreement(beyond: int, max_bps: float, compared: int = 20) -> Agreement:
    return Agreement(
        bars=24,
        compared=compared,
        median_abs_dev_bps=5.0 if compared else None,
        max_abs_dev_bps=max_bps if compared else None,
        beyond_tolerance=beyond,
        tolerance_bps=50.0,
        source_mix={"binance": 24},
    )


def test_weights_sum_to_100() -> None:
    assert sum(WEIGHTS.values()) == 100.0


def test_clean_crafted_day_scores_100() -> None:
    hours = pd.date_range(DAY, periods=24, freq="h")
    frame = wavy_hours(hours)
    crypto = Instrument(asset_class="crypto")
    # The data-error detectors as the assets run them: the day's bars, no stored history.
    outliers = judge_days(frame.iloc[:0], frame, crypto, HOUR)[DAY].outliers

    score = quality_score(
        check_completeness(frame, crypto, HOUR, DAY, NEXT_DAY, NEXT_DAY),
        check_schema(frame, HOUR),
        outliers,
        lag_s=60.0,
        expected_lag_s=300.0,
        agreement=agreement(beyond=0, max_bps=10.0),
        tolerance=TOLERANCE,
    )

    assert score.score == 100.0
    assert set(score.parts) == set(WEIGHTS)
    assert score.as_metadata()["quality_score"] == 100.0


def test_parts_combine_by_weight() -> None:
    score = quality_score(
        completeness(ratio=0.5),  # 50
        schema(rows=100, failing_rows=10),  # 90
        [outlier("none"), outlier("medium")],  # 50: the worst field
        lag_s=600.0,
        expected_lag_s=300.0,  # 1/3 of the way to 4x: 66.67
        agreement=agreement(beyond=5, max_bps=100.0),  # 75
        tolerance=TOLERANCE,
    )

    assert score.parts == pytest.approx(
        {
            "completeness": 50.0,
            "validity": 90.0,
            "outliers": 50.0,
            "timeliness": 200.0 / 3.0,
            "agreement": 75.0,
        }
    )
    expected = (30 * 50 + 30 * 90 + 15 * 50 + 15 * 200 / 3 + 10 * 75) / 100
    assert score.score == pytest.approx(expected)
    assert score.as_metadata() == pytest.approx(
        {
            "quality_score": expected,
            "quality_completeness": 50.0,
            "quality_validity": 90.0,
            "quality_outliers": 50.0,
            "quality_timeliness": 200.0 / 3.0,
            "quality_agreement": 75.0,
        }
    )


def test_missing_parts_are_weighted_out() -> None:
    score = quality_score(
        completeness(ratio=0.5),
        None,
        [],
        lag_s=None,
        expected_lag_s=300.0,
        agreement=agreement(beyond=0, max_bps=0.0, compared=0),  # nothing compared
        tolerance=TOLERANCE,
    )

    assert score.parts == {"completeness": 50.0}
    assert score.weights == {"completeness": 100.0}
    assert score.score == 50.0
    assert set(score.as_metadata()) == {"quality_score", "quality_completeness"}

    pair = quality_score(completeness(ratio=0.5), schema(), [], None, None, None, None)
    assert pair.score == pytest.approx(75.0)  # 30/30 each, rescaled to 50/50


def test_nothing_to_score_gives_no_score() -> None:
    score = quality_score(None, None, [], None, None, None, None)

    assert score.score is None
    assert score.as_metadata() == {}


def test_duplicates_open_and_stale_bars_cost_completeness() -> None:
    assert quality_score(completeness(duplicates=6), None, [], None, None, None, None).score == 75.0
    assert (
        quality_score(
            completeness(open_bars=1, stale_bars=5), None, [], None, None, None, None
        ).score
        == 75.0
    )
    assert (
        quality_score(completeness(present=0, ratio=0.0), None, [], None, None, None, None).score
        == 0.0
    )


def test_a_frame_level_schema_failure_zeroes_validity() -> None:
    assert quality_score(None, schema(frame_cases=1), [], None, None, None, None).score == 0.0
    assert quality_score(None, schema(rows=0), [], None, None, None, None).score == 100.0


@pytest.mark.parametrize(
    ("severity", "part"), [("none", 100.0), ("low", 90.0), ("medium", 50.0), ("high", 0.0)]
)
def test_outlier_severity_sets_the_outlier_part(severity: str, part: float) -> None:
    score = quality_score(None, None, [outlier("none"), outlier(severity)], None, None, None, None)

    assert score.parts == {"outliers": part}


@pytest.mark.parametrize(
    ("lag_s", "part"), [(0.0, 100.0), (300.0, 100.0), (750.0, 50.0), (1200.0, 0.0), (1e6, 0.0)]
)
def test_timeliness_falls_linearly_to_four_times_the_expected_lag(
    lag_s: float, part: float
) -> None:
    score = quality_score(None, None, [], lag_s, 300.0, None, None)

    assert score.parts == {"timeliness": pytest.approx(part)}


def test_agreement_beyond_the_error_limit_is_capped() -> None:
    within = quality_score(None, None, [], None, None, agreement(0, 400.0), TOLERANCE)
    beyond = quality_score(None, None, [], None, None, agreement(1, 600.0), TOLERANCE)
    untold = quality_score(None, None, [], None, None, agreement(1, 600.0), None)

    assert within.score == 100.0
    assert beyond.score == 50.0  # 95 by count, capped at 50
    assert untold.score == 95.0


def test_score_is_a_frozen_value() -> None:
    score = quality_score(completeness(), None, [], None, None, None, None)

    with pytest.raises(dataclasses.FrozenInstanceError):
        score.score = 0.0  # type: ignore[misc]
