"""The quality of one symbol's window of bars, as the provider assets' checks measure it.

The provider assets and the HTTP service's ``validate=true`` both use these, so that a window
gets the same verdict wherever it is looked at: the schema report, outliers of close returns and
log volume against the bars before them (stored history included), completeness against the
instrument's calendar, and the quality score.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.completeness import CompletenessReport, check_completeness
from fks_pipelines.quality.outliers import OutlierDetector, OutlierResult
from fks_pipelines.quality.schema import SchemaReport, check_schema
from fks_pipelines.quality.score import QualityScore, quality_score

DETECTOR = OutlierDetector()
"""Close returns and log volume against the 48 bars before each bar (MAD, threshold 3)."""
OUTLIER_FIELDS = ("close", "volume", "quote_volume")
RECENT = pd.Timedelta(days=2)
"""Timeliness is scored only for windows that closed less than this long ago."""


def history_start(start: pd.Timestamp, interval: Interval) -> pd.Timestamp:
    """Where the outlier baseline of a window opening at ``start`` begins."""
    return start - DETECTOR.window * interval.offset


def detect_outliers(
    history: pd.DataFrame, bars: pd.DataFrame, since: pd.Timestamp
) -> list[OutlierResult]:
    """Outliers among ``bars`` (one series), scored against ``history`` before ``since`` too, so
    that a daily window's single bar has a baseline."""
    frame = pd.concat([history, bars], ignore_index=True) if len(history) else bars
    return DETECTOR.detect(frame, fields=OUTLIER_FIELDS, since=since)


def detect_outliers_by_day(
    history: pd.DataFrame, bars: pd.DataFrame, since: pd.Timestamp
) -> dict[pd.Timestamp, list[OutlierResult]]:
    """:func:`detect_outliers` with one result list per UTC day of ``bars`` (a partition each):
    the block is scored once, and each day is judged on its own bars."""
    frame = pd.concat([history, bars], ignore_index=True) if len(history) else bars
    return DETECTOR.detect_by_day(frame, fields=OUTLIER_FIELDS, since=since)


def window_score(
    completeness: CompletenessReport,
    schema: SchemaReport,
    outliers: list[OutlierResult],
    end: pd.Timestamp,
    now: pd.Timestamp,
    expected_lag_s: float,
) -> QualityScore:
    """The quality score of a window ending at ``end``.

    Timeliness only means something for a window just closed (a backfill of last year is not
    late): it is scored when ``end`` is less than :data:`RECENT` ago, against ``expected_lag_s``
    (the provider's freshness lag), and left out otherwise.
    """
    lag = now - end
    recent = lag < RECENT
    return quality_score(
        completeness,
        schema,
        outliers,
        lag.total_seconds() if recent else None,
        expected_lag_s if recent else None,
        None,
        None,
    )


@dataclass(frozen=True)
class WindowAssessment:
    """Everything :func:`assess_window` measured."""

    schema: SchemaReport
    outliers: list[OutlierResult]
    completeness: CompletenessReport
    score: QualityScore


def assess_window(
    bars: pd.DataFrame,
    history: pd.DataFrame,
    instrument: Instrument,
    interval: Interval,
    start: pd.Timestamp,
    end: pd.Timestamp,
    now: pd.Timestamp,
    expected_lag_s: float,
) -> WindowAssessment:
    """Schema, outliers, completeness and quality score of one series' bars in ``[start, end)``.

    Args:
        bars: The window's bars (canonical frame, one provider and symbol).
        history: Stored bars of the same series from :func:`history_start` to ``start`` (may be
            empty): the outlier baseline.
        instrument: The bars' instrument (its calendar sets the expected bars).
        interval: The bar interval.
        start: Window start, inclusive.
        end: Window end, exclusive.
        now: Time of the assessment (bars not closed by then are not expected).
        expected_lag_s: The provider's freshness lag, for timeliness.
    """
    schema = check_schema(bars, interval)
    outliers = detect_outliers(history, bars, start)
    completeness = check_completeness(bars, instrument, interval, start, end, now)
    score = window_score(completeness, schema, outliers, end, now, expected_lag_s)
    return WindowAssessment(schema, outliers, completeness, score)
