"""One 0-100 quality score per materialisation, from the quality measures of this package.

Five parts, each 0-100, weighted (weights in :data:`WEIGHTS`, summing to 100):

==============  ======  ===========================================================================
part            weight  100 when ... and how it falls
==============  ======  ===========================================================================
completeness    30      every expected bar is present and none is duplicated, open or stale:
                        ``100 * ratio * (1 - min(1, (duplicates + open_bars + stale_bars) /
                        present))``
validity        30      the schema passes: ``100 * (1 - failing_rows / rows)``; 0 when a
                        frame-level case failed (missing column, wrong dtype)
outliers        15      no field has outliers: the worst field's severity, none 100, low 90,
                        medium 50, high 0
timeliness      15      the lag is at most the expected lag, then linearly down to 0 at four times
                        the expected lag
agreement       10      no compared bar is beyond tolerance: ``100 * (1 - beyond / compared)``,
                        capped at 50 when the largest deviation exceeds ``tolerance.error_bps``
==============  ======  ===========================================================================

A part whose inputs are missing (None, no outlier results, no bar compared) is left out and the
other weights are scaled up to 100, so a frame without cross-provider agreement is not penalised
for it. With no part at all the score is None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fks_pipelines.market.universe import Tolerance
from fks_pipelines.quality.agreement import Agreement
from fks_pipelines.quality.completeness import CompletenessReport
from fks_pipelines.quality.outliers import OutlierResult
from fks_pipelines.quality.schema import SchemaReport

WEIGHTS: Mapping[str, float] = {
    "completeness": 30.0,
    "validity": 30.0,
    "outliers": 15.0,
    "timeliness": 15.0,
    "agreement": 10.0,
}
SEVERITY_SCORES: Mapping[str, float] = {"none": 100.0, "low": 90.0, "medium": 50.0, "high": 0.0}
LAG_ZERO_AT = 4.0  # timeliness reaches 0 at this many times the expected lag
AGREEMENT_CAP_BEYOND_ERROR = 50.0


@dataclass(frozen=True)
class QualityScore:
    """A weighted 0-100 score and the parts it was made of.

    Attributes:
        score: Weighted mean of ``parts``, 0-100; None when no part could be scored.
        parts: Part name -> 0-100, only the parts scored.
        weights: Part name -> weight actually applied (rescaled to sum to 100).
    """

    score: float | None
    parts: dict[str, float]
    weights: dict[str, float]

    def as_metadata(self) -> dict[str, float]:
        """``quality_score`` and ``quality_<part>`` for each part scored (plain ``float``)."""
        metadata = {} if self.score is None else {"quality_score": self.score}
        metadata.update({f"quality_{name}": value for name, value in self.parts.items()})
        return metadata


def quality_score(
    completeness: CompletenessReport | None,
    schema: SchemaReport | None,
    outliers: Sequence[OutlierResult],
    lag_s: float | None,
    expected_lag_s: float | None,
    agreement: Agreement | None,
    tolerance: Tolerance | None,
) -> QualityScore:
    """Combine the quality measures of one materialisation into a score (see the module).

    Args:
        completeness: From :func:`~fks_pipelines.quality.completeness.check_completeness`.
        schema: From :func:`~fks_pipelines.quality.schema.check_schema`.
        outliers: One result per data-error detector (see
            :func:`~fks_pipelines.quality.assess.judge_days`); empty to leave the part out.
        lag_s: Seconds between the last bar's close and the materialisation; None if unknown.
        expected_lag_s: The lag a healthy feed shows (e.g. the schedule's delay); None to
            leave timeliness out.
        agreement: From :func:`~fks_pipelines.quality.agreement.measure_agreement`.
        tolerance: The instrument's tolerance; its ``error_bps`` caps the agreement part.

    Returns:
        A :class:`QualityScore`.
    """
    parts: dict[str, float] = {}
    if completeness is not None:
        parts["completeness"] = _completeness(completeness)
    if schema is not None:
        parts["validity"] = _validity(schema)
    if outliers:
        parts["outliers"] = outliers_part(outliers)
    if lag_s is not None and expected_lag_s is not None:
        parts["timeliness"] = _timeliness(lag_s, expected_lag_s)
    if agreement is not None and agreement.compared:
        parts["agreement"] = _agreement(agreement, tolerance)
    return weighted(parts)


def weighted(parts: dict[str, float]) -> QualityScore:
    """The score of ``parts`` (name -> 0-100), :data:`WEIGHTS` rescaled over the parts given."""
    total = sum(WEIGHTS[name] for name in parts)
    weights = {name: WEIGHTS[name] * 100.0 / total for name in parts}
    score = sum(parts[name] * weights[name] for name in parts) / 100.0 if parts else None
    return QualityScore(score=score, parts=parts, weights=weights)


def outliers_part(outliers: Sequence[OutlierResult]) -> float:
    """The outliers part of the score: its worst detector's severity score."""
    return min(SEVERITY_SCORES[result.severity] for result in outliers)


def _completeness(report: CompletenessReport) -> float:
    faulty = report.duplicates + report.open_bars + report.stale_bars
    penalty = min(1.0, faulty / report.present) if report.present else 0.0
    return _clamp(100.0 * report.ratio * (1.0 - penalty))


def _validity(report: SchemaReport) -> float:
    if report.failures > report.failing_rows:  # a frame-level case: nothing can be trusted
        return 0.0
    if not report.rows:
        return 100.0
    return _clamp(100.0 * (1.0 - report.failing_rows / report.rows))


def _timeliness(lag_s: float, expected_lag_s: float) -> float:
    if lag_s <= expected_lag_s:
        return 100.0
    if expected_lag_s <= 0:
        return 0.0
    over = (lag_s - expected_lag_s) / ((LAG_ZERO_AT - 1.0) * expected_lag_s)
    return _clamp(100.0 * (1.0 - over))


def _agreement(agreement: Agreement, tolerance: Tolerance | None) -> float:
    value = 100.0 * (1.0 - agreement.beyond_tolerance / agreement.compared)
    if (
        tolerance is not None
        and agreement.max_abs_dev_bps is not None
        and agreement.max_abs_dev_bps > tolerance.error_bps
    ):
        value = min(value, AGREEMENT_CAP_BEYOND_ERROR)
    return _clamp(value)


def _clamp(value: float) -> float:
    return float(min(100.0, max(0.0, value)))
