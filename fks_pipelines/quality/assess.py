"""The quality of one symbol's window of bars, as the provider assets' checks measure it.

The provider assets and the HTTP service's ``validate=true`` both use these, so that a window
gets the same verdict wherever it is looked at: the schema report, the data-error detectors of
:mod:`~fks_pipelines.quality.bar_errors` against the N bars before each bar (stored history
included) and the bar after it, completeness against the instrument's calendar, and the quality
score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fks_pipelines.market.calendars import (
    holiday_neighbours,
    session_fractions,
    sessions_before,
)
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.bar_errors import (
    AFTER,
    DEFAULT_BASELINE,
    DEFAULT_THRESHOLDS,
    FIELDS,
    bar_errors,
    default_stale_bars,
    history_bars,
    volume_levels,
)
from fks_pipelines.quality.completeness import CompletenessReport, check_completeness
from fks_pipelines.quality.outliers import MAX_LISTED, OutlierResult
from fks_pipelines.quality.schema import SchemaReport, check_schema
from fks_pipelines.quality.score import QualityScore, quality_score

RECENT = pd.Timedelta(days=2)
"""Timeliness is scored only for windows that closed less than this long ago."""


BASELINE_BARS = DEFAULT_BASELINE
"""Bars of history before a window that set its baseline (read as bars, not calendar days)."""
_DAY = pd.Timedelta(days=1)


def history_start(
    start: pd.Timestamp, interval: Interval, instrument: Instrument | None = None
) -> pd.Timestamp:
    """A start from which stored history holds at least :func:`history_bars` bars before
    ``start`` (read from here, then keep the last bars with :func:`last_bars`).

    With ``instrument`` the calendar counts sessions back; without it (crypto grid) twice the
    bars' span plus two weeks, enough for an equity's weekends and holidays.
    """
    bars = history_bars(BASELINE_BARS)
    if instrument is not None:
        day = sessions_before(instrument, interval, start.date(), bars)
        return min(pd.Timestamp(day, tz="UTC"), start - bars * interval.offset)
    return start - 2 * bars * interval.offset - pd.Timedelta(days=14)


def last_bars(history: pd.DataFrame, bars: int = history_bars(BASELINE_BARS)) -> pd.DataFrame:
    """The newest ``bars`` rows of each series in ``history`` (sorted by ``ts``)."""
    if not len(history):
        return history
    ordered = history.sort_values("ts", kind="stable")
    keys = [k for k in ("provider", "symbol") if k in ordered.columns]
    if not keys:
        return ordered.tail(bars)
    return ordered.groupby(keys, sort=False, observed=True).tail(bars)


@dataclass(frozen=True)
class DayJudgement:
    """One partition's (UTC day's) data-error verdict from :func:`judge_days`.

    Attributes:
        day: UTC midnight.
        outliers: One result per detector field (see :mod:`~fks_pipelines.quality.bar_errors`).
        final: Every bar of the day had its :data:`AFTER` next bars known (a provisional
            verdict is replaced when they arrive).
        stale_runs: Stale runs of equal closes that became visible on this day.
        stale_examples: Their first bars (ISO open times).
        confirmed: Bars a price-move detector flagged that a second provider's close confirmed
            (cleared; see ``confirm_bps`` of :func:`judge_days`).
    """

    day: pd.Timestamp
    outliers: list[OutlierResult]
    final: bool
    stale_runs: int = 0
    stale_examples: list[str] = field(default_factory=list)
    confirmed: int = 0


def judge_days(
    history: pd.DataFrame,
    bars: pd.DataFrame,
    instrument: Instrument,
    interval: Interval,
    following: pd.DataFrame | None = None,
    baseline: int = BASELINE_BARS,
    confirm_bps: float | None = None,
) -> dict[pd.Timestamp, DayJudgement]:
    """The data-error verdict of each UTC day of ``bars`` (one series), and of the days of the
    last :data:`AFTER` bars of ``history``, whose next bars are the first of ``bars`` (judged
    again now, on those earlier partitions).

    Only the ``baseline + 1`` bars before a bar, the bar and the :data:`AFTER` bars after it decide
    its verdict, so the verdict is the same whatever the run's cut. ``following`` (the first
    stored bars after the window, may be empty) gives the window's last bars their next bars.

    ``confirm_bps`` (consolidated series: frames with ``providers`` and ``agreement_bps``): a bar
    whose close a second provider matched within ``confirm_bps`` moved with the market, so the
    price-move detectors (``close``, ``shift``) clear it, and its day counts it as ``confirmed``.
    """
    history = last_bars(history, history_bars(baseline))
    frames = [f for f in (history, bars, following) if f is not None and len(f)]
    if not frames:
        return {}
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    frame = frame.sort_values("ts", kind="stable").drop_duplicates("ts", keep="last")
    frame = frame.reset_index(drop=True)
    level = None
    if instrument.asset_class == "equity" and interval.seconds == 86400 and instrument.calendar:
        sessions = pd.DatetimeIndex(frame["ts"])
        level = volume_levels(
            session_fractions(instrument.calendar, sessions),
            *holiday_neighbours(instrument.calendar, sessions),
        )
    scores = bar_errors(
        frame,
        baseline=baseline,
        volume_level=level,
        stale_run=default_stale_bars(interval.seconds),
    )
    days = pd.DatetimeIndex(frame["ts"]).tz_convert("UTC").floor("D").as_unit("ns")
    wanted = set(pd.DatetimeIndex(bars["ts"]).floor("D")) if len(bars) else set()
    if len(history) and len(bars):
        # The days of the last history bars are judged again: their next bars are new.
        for ts in history["ts"].nlargest(AFTER):
            wanted.add(pd.Timestamp(ts).floor("D"))
    judged = days.isin(list(wanted))
    symbol = str(frame["symbol"].iloc[0]) if "symbol" in frame.columns else ""
    columns = {name: scores[name].to_numpy(dtype="float64") for name in FIELDS}
    columns["volume"] = np.where(scores["zero_volume"].to_numpy(), np.inf, columns["volume"])
    confirmed = np.zeros(len(frame), dtype=bool)
    if confirm_bps is not None:
        agreed = (frame["providers"].to_numpy() >= 2) & (
            frame["agreement_bps"].to_numpy(dtype="float64", na_value=np.nan) <= confirm_bps
        )
        for name in _PRICE_MOVES:
            flagged = np.nan_to_num(columns[name]) >= _FIELD_LEVELS[name][0]
            confirmed |= agreed & flagged
            columns[name] = np.where(agreed & flagged, 0.0, columns[name])
    values = {
        name: pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64")
        for name, column in _FIELD_VALUE.items()
    }
    stamps = pd.DatetimeIndex(frame["ts"])
    final, stale = scores["final"].to_numpy(), scores["stale"].to_numpy()
    codes = days.asi8
    out: dict[pd.Timestamp, DayJudgement] = {}
    for code in np.unique(codes[judged]):
        rows = np.flatnonzero(codes == code)
        day = pd.Timestamp(int(code), tz="UTC")
        out[day] = DayJudgement(
            day=day,
            outliers=[
                _result(name, columns[name][rows], values[name][rows], stamps[rows], symbol)
                for name in FIELDS
            ],
            final=bool(final[rows].all()),
            stale_runs=int(stale[rows].sum()),
            stale_examples=[t.isoformat() for t in stamps[rows][stale[rows]][:5]],
            confirmed=int(confirmed[rows].sum()),
        )
    return out


_PRICE_MOVES = ("close", "shift")
"""Detectors a second provider's matching close overrules (a move both saw is the market's)."""
_FIELD_VALUE = {
    "close": "close",
    "shift": "open",
    "high": "high",
    "low": "low",
    "bar": "close",
    "volume": "volume",
}
_FIELD_LEVELS = {
    "close": (DEFAULT_THRESHOLDS.close_warn, DEFAULT_THRESHOLDS.close_error),
    "shift": (DEFAULT_THRESHOLDS.shift_warn, DEFAULT_THRESHOLDS.shift_error),
    "high": (DEFAULT_THRESHOLDS.wick_warn, DEFAULT_THRESHOLDS.wick_error),
    "low": (DEFAULT_THRESHOLDS.wick_warn, DEFAULT_THRESHOLDS.wick_error),
    "bar": (0.5, 0.5),
    "volume": (DEFAULT_THRESHOLDS.volume_warn, DEFAULT_THRESHOLDS.volume_error),
}


def _result(
    name: str, scores: np.ndarray, values: np.ndarray, stamps: pd.DatetimeIndex, symbol: str
) -> OutlierResult:
    """One detector's findings on one day's bars, in the shape the checks and score read."""
    warn, error = _FIELD_LEVELS[name]
    valid = ~np.isnan(scores)
    over = np.nan_to_num(scores, nan=0.0) >= warn
    worst = float(scores[valid].max()) if valid.any() else None
    severity = "none"
    if worst is not None and over.any():
        severity = "high" if worst >= error else "medium"
    flagged = np.flatnonzero(over)
    flagged = flagged[np.argsort(-scores[flagged], kind="stable")][:MAX_LISTED]
    return OutlierResult(
        field=name,
        method="errors",
        threshold=warn,
        count=int(over.sum()),
        scored=int(valid.sum()),
        max_score=None if worst is None else min(worst, 1e9),
        severity=severity,  # type: ignore[arg-type]
        timestamps=[stamps[i] for i in flagged],
        values=[float(values[i]) for i in flagged],
        scores=[min(float(scores[i]), 1e9) for i in flagged],
        symbols=[symbol] * len(flagged),
    )


def merge_days(days: list[DayJudgement]) -> list[OutlierResult]:
    """One result per detector over several days' verdicts (the worst listed first)."""
    merged = []
    for name in FIELDS:
        results = [r for judged in days for r in judged.outliers if r.field == name]
        warn, _ = _FIELD_LEVELS[name]
        worst = [r.max_score for r in results if r.max_score is not None]
        listed = sorted(
            (
                (score, ts, value, symbol)
                for r in results
                for score, ts, value, symbol in zip(
                    r.scores, r.timestamps, r.values, r.symbols, strict=True
                )
            ),
            key=lambda item: -item[0],
        )[:MAX_LISTED]
        merged.append(
            OutlierResult(
                field=name,
                method="errors",
                threshold=warn,
                count=sum(r.count for r in results),
                scored=sum(r.scored for r in results),
                max_score=max(worst) if worst else None,
                severity=max(
                    (r.severity for r in results), key=_SEVERITY_ORDER.index, default="none"
                ),
                timestamps=[item[1] for item in listed],
                values=[item[2] for item in listed],
                scores=[item[0] for item in listed],
                symbols=[item[3] for item in listed],
            )
        )
    return merged


_SEVERITY_ORDER = ("none", "low", "medium", "high")


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
    """Schema, data errors, completeness and quality score of one series' bars in
    ``[start, end)``: the detectors of :func:`judge_days`, as the provider assets run them, with
    the window's days merged into one result per detector (the last bar is provisional: the bar
    after the window is not read).

    Args:
        bars: The window's bars (canonical frame, one provider and symbol).
        history: Stored bars of the same series from :func:`history_start` to ``start`` (may be
            empty): the data-error detectors' baseline (its last N bars, as the assets read it).
        instrument: The bars' instrument (its calendar sets the expected bars).
        interval: The bar interval.
        start: Window start, inclusive.
        end: Window end, exclusive.
        now: Time of the assessment (bars not closed by then are not expected).
        expected_lag_s: The provider's freshness lag, for timeliness.
    """
    schema = check_schema(bars, interval)
    judged = judge_days(history, bars, instrument, interval)
    outliers = merge_days([j for day, j in judged.items() if day >= start.floor("D")])
    completeness = check_completeness(bars, instrument, interval, start, end, now)
    score = window_score(completeness, schema, outliers, end, now, expected_lag_s)
    return WindowAssessment(schema, outliers, completeness, score)
