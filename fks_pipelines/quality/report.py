"""The daily quality report: one Markdown page and a few plot figures per UTC day.

Built from the quality rows the OHLCV assets store (table ``ohlcv_quality``, see
:mod:`fks_pipelines.warehouse.quality`), one row per provider (or ``consolidated``), interval,
symbol and day. The page has one table row per series (provider, interval, symbol) seen in the
report's window: that day's score, missing bars, outliers, agreement and failed checks, and a
sparkline of the score over the window's days, so that a series that stopped being assessed
still shows, with a gap for that day.

Everything here is pure and deterministic: the same rows and day give the same page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.quality.agreement import Agreement
from fks_pipelines.quality.completeness import CompletenessReport
from fks_pipelines.quality.outliers import OutlierResult
from fks_pipelines.quality.score import WEIGHTS, QualityScore, outliers_part, weighted

BARS = "▁▂▃▄▅▆▇█"
"""Sparkline bars for scores 0-100 in steps of 12.5: ``▁`` below 12.5, ``█`` from 87.5."""
NO_ROW = "·"  # sparkline: no row stored for that day
NO_SCORE = "○"  # sparkline: a row whose score is null (no part could be scored)
NO_FIGURE = "—"  # table cell: no row that day, or the figure was not measured
CONSOLIDATED = "consolidated"

FAILED_CHECK_PATTERN = r"[^\s:,]+:[^\s:,]+"
"""One failed check of a partition: ``check:SEVERITY``, e.g. ``outliers:ERROR``."""
FAILED_CHECKS_PATTERN = rf"(?:{FAILED_CHECK_PATTERN}(?:, ?{FAILED_CHECK_PATTERN})*)?"
"""A partition's failed checks as stored: entries joined by commas (a space after each
allowed), empty when none failed."""

SERIES = ["provider", "interval", "symbol"]
_SEVERITY_ORDER = ["none", "low", "medium", "high"]
_MARKDOWN_SPECIALS = str.maketrans({c: f"\\{c}" for c in "\\`*_[]<>|"})


@dataclass(frozen=True)
class QualityReport:
    """The quality report of one UTC day.

    Attributes:
        day: The day reported.
        markdown: A Markdown page (title, summary line, table, legend) for the Dagster UI.
        metadata: Plain numbers for Dagster's plots: ``partitions``, ``missing_bars``,
            ``outliers_high``, ``failed_checks``, and, when any row of the day has a score,
            ``mean_quality_score``, ``min_quality_score``, ``score_<provider>_<interval>`` and
            ``score_consolidated_<interval>_<instrument>`` (one per instrument).
    """

    day: date
    markdown: str
    metadata: dict[str, int | float]


def quality_row(
    provider: str,
    interval: str,
    symbol: str,
    day: date,
    score: QualityScore,
    completeness: CompletenessReport,
    outliers: Sequence[OutlierResult] = (),
    agreement: Agreement | None = None,
    failed: Sequence[str] = (),
    run_id: str | None = None,
) -> dict[str, object]:
    """One partition's quality row (``Warehouse.write_quality``) from what its run measured.

    Args:
        provider: Provider id, or ``consolidated``.
        interval: Bar interval.
        symbol: The provider's ticker (the instrument for ``consolidated``).
        day: The partition's UTC day.
        score: Its quality score.
        completeness: Its completeness report.
        outliers: Its outlier results, one per field (none for the consolidated series).
        agreement: Its cross-provider agreement (consolidated series only).
        failed: Its failed checks as ``check:SEVERITY``.
        run_id: The run that measured it.
    """
    severities = [r.severity for r in outliers]
    return {
        "provider": provider,
        "interval": interval,
        "symbol": symbol,
        "day": day,
        "quality_score": score.score,
        **{f"quality_{part}": value for part, value in score.parts.items()},
        "expected_bars": completeness.expected,
        "missing_bars": completeness.missing,
        "outlier_count": sum(r.count for r in outliers),
        "outlier_severity": max(severities, key=_SEVERITY_ORDER.index) if severities else None,
        "agreement_max_bps": agreement.max_abs_dev_bps if agreement is not None else None,
        "bars_compared": agreement.compared if agreement is not None else None,
        "failed_checks": ", ".join(failed),
        "run_id": run_id,
    }


def revised_row(
    row: Mapping[str, object],
    outliers: Sequence[OutlierResult],
    failed: str | None,
    run_id: str | None = None,
) -> dict[str, object]:
    """A quality row with its outliers verdict replaced by a later run's final one (the
    partition's next bars arrived): outlier figures, the outliers part and the score, and the
    ``outliers:SEVERITY`` entry of ``failed_checks`` (``failed``; None when it passed); stamped
    anew, by ``run_id``."""
    parts = {
        name: float(row[f"quality_{name}"])  # type: ignore[arg-type]
        for name in WEIGHTS
        if row.get(f"quality_{name}") is not None and not pd.isna(row[f"quality_{name}"])
    }
    if outliers:
        parts["outliers"] = outliers_part(outliers)
    score = weighted(parts)
    kept = [
        entry
        for entry in str(row.get("failed_checks") or "").split(", ")
        if entry and not entry.startswith("outliers:")
    ]
    severities = [r.severity for r in outliers]
    kept_columns = {k: v for k, v in row.items() if k != "updated_at"}
    return {
        **kept_columns,
        "run_id": run_id if run_id is not None else row.get("run_id"),
        "quality_score": score.score,
        **{f"quality_{name}": value for name, value in parts.items()},
        "outlier_count": sum(r.count for r in outliers),
        "outlier_severity": max(severities, key=_SEVERITY_ORDER.index) if severities else None,
        "failed_checks": ", ".join(kept + ([failed] if failed else [])),
    }


def daily_report(
    rows: pd.DataFrame,
    day: date,
    history_days: int = 14,
    *,
    priority: Sequence[str] = (),
) -> QualityReport:
    """The quality report of ``day`` from stored quality rows.

    Args:
        rows: Quality rows (as ``Warehouse.read_quality`` returns them) covering
            ``[day - history_days + 1, day]``; rows of other days are ignored.
        day: The UTC day to report.
        history_days: Days the sparkline covers, ``day`` included.
        priority: Providers in the order their rows are listed (the universe's failover
            order); other providers follow alphabetically, ``consolidated`` comes last.

    Returns:
        A :class:`QualityReport`.

    Raises:
        ValueError: ``history_days`` is below 1.
    """
    if history_days < 1:
        raise ValueError(f"history_days must be at least 1, got {history_days}")
    days = pd.date_range(end=pd.Timestamp(day), periods=history_days, freq="D")
    window = rows.loc[rows["day"].between(days[0], days[-1])]
    today = window.loc[window["day"] == days[-1]]
    metadata = _metadata(today, priority)
    lines = [
        f"# Data quality report: {day.isoformat()} (UTC)",
        "",
        _summary(metadata),
        "",
    ]
    if window.empty:
        lines.append(
            f"No quality rows stored from {days[0].date().isoformat()} to {day.isoformat()}."
        )
    else:
        lines += [*_table(window, today, days, priority), "", *_legend(days)]
    return QualityReport(day=day, markdown="\n".join(lines) + "\n", metadata=metadata)


def history_window(first: date, last: date, history_days: int) -> tuple[date, date]:
    """``[day_start, day_end)`` of the rows that the reports of days ``first..last`` need."""
    return first - timedelta(days=history_days - 1), last + timedelta(days=1)


def _series_index(frame: pd.DataFrame, priority: Sequence[str]) -> pd.MultiIndex:
    """The series of ``frame`` in report order: provider rank, bar length, symbol."""
    rank = {provider: i for i, provider in enumerate(priority)}

    def order(series: tuple[str, str, str]) -> tuple[int, str, int, str]:
        provider, interval, symbol = series
        last = len(rank) + 1 if provider == CONSOLIDATED else len(rank)
        return rank.get(provider, last), provider, Interval.parse(interval).seconds, symbol

    unique = frame[SERIES].drop_duplicates().itertuples(index=False, name=None)
    return pd.MultiIndex.from_tuples(sorted(unique, key=order), names=SERIES)


def _metadata(today: pd.DataFrame, priority: Sequence[str]) -> dict[str, int | float]:
    scores = today["quality_score"].dropna()
    metadata: dict[str, int | float] = {
        "partitions": len(today),
        "missing_bars": int(today["missing_bars"].sum()),
        "outliers_high": int((today["outlier_severity"] == "high").sum()),
        "failed_checks": int(today["failed_checks"].str.count(FAILED_CHECK_PATTERN).sum()),
    }
    if scores.empty:
        return metadata
    metadata["mean_quality_score"] = float(scores.mean())
    metadata["min_quality_score"] = float(scores.min())
    means = today.groupby(["provider", "interval"], observed=True)["quality_score"].mean()
    assets = _series_index(today, priority).droplevel("symbol").unique()
    for provider, interval in assets:
        mean = means[(provider, interval)]
        if not np.isnan(mean):
            metadata[f"score_{provider}_{interval}"] = float(mean)
    # One line per instrument: Dagster plots these per day, which it cannot do for the OHLCV
    # assets themselves (their partitions are date x symbol, interleaved on one axis).
    golden = today.loc[(today["provider"] == CONSOLIDATED) & today["quality_score"].notna()]
    for row in golden.sort_values(["interval", "symbol"]).itertuples(index=False):
        metadata[f"score_{CONSOLIDATED}_{row.interval}_{row.symbol}"] = float(row.quality_score)
    return metadata


def _summary(metadata: dict[str, int | float]) -> str:
    parts = [f"**{metadata['partitions']}** partitions"]
    if "mean_quality_score" in metadata:
        parts.append(
            f"mean quality score **{metadata['mean_quality_score']:.1f}** "
            f"(lowest {metadata['min_quality_score']:.1f})"
        )
    parts += [
        f"**{metadata['missing_bars']}** missing bars",
        f"**{metadata['outliers_high']}** with high-severity outliers",
        f"**{metadata['failed_checks']}** failed checks",
    ]
    return " · ".join(parts)


def _table(
    window: pd.DataFrame, today: pd.DataFrame, days: pd.DatetimeIndex, priority: Sequence[str]
) -> list[str]:
    index = _series_index(window, priority)
    keyed = window.assign(stored=True).set_index([*SERIES, "day"])
    scores = keyed["quality_score"].unstack("day").reindex(index=index, columns=days)
    present = (
        keyed["stored"]
        .unstack("day", fill_value=False)
        .reindex(index=index, columns=days, fill_value=False)
        .astype(bool)
    )
    figures = today.set_index(SERIES).reindex(index)
    figures["stored"] = present.iloc[:, -1].to_numpy()
    figures["trend"] = _sparklines(scores.to_numpy(dtype="float64"), present.to_numpy())
    header = [
        "| asset | symbol | score | missing bars | outliers | agreement | failed checks "
        f"| last {len(days)} days |",
        "|---|---|--:|--:|---|---|---|---|",
    ]
    lines = header
    for (provider, interval, symbol), row in zip(
        index, figures.itertuples(index=False), strict=True
    ):
        measured = _figures(row) if row.stored else [NO_FIGURE] * 5
        cells = [_escape(f"{provider} {interval}"), _escape(symbol), *measured, row.trend]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def _sparklines(scores: np.ndarray, present: np.ndarray) -> list[str]:
    """One sparkline per row of ``scores`` (series x days), using ``present`` for gaps."""
    steps = np.clip(np.floor(np.nan_to_num(scores) * len(BARS) / 100.0), 0, len(BARS) - 1)
    chars = np.asarray(list(BARS))[steps.astype(int)]
    chars = np.where(np.isnan(scores), NO_SCORE, chars)
    chars = np.where(present, chars, NO_ROW)
    return ["".join(row) for row in chars]


def _figures(row: Any) -> list[str]:
    """The cells of a row stored that day: score, missing bars, outliers, agreement, checks."""
    # Integer columns turned float where another series has no row that day.
    count, severity = int(row.outlier_count), row.outlier_severity
    outliers = str(count)
    if not pd.isna(severity) and (count or severity != "none"):
        outliers = f"{outliers} ({severity})"
        if severity == "high":
            outliers = f"**{outliers}**"
    bps, compared = row.agreement_max_bps, row.bars_compared
    if not pd.isna(bps):
        agreement = f"{bps:.1f} bps" + ("" if pd.isna(compared) else f" ({compared} bars)")
    elif not pd.isna(compared) and compared == 0:
        agreement = "nothing compared"
    else:
        agreement = NO_FIGURE
    missing = str(int(row.missing_bars))
    if not pd.isna(row.expected_bars):
        missing += f" / {row.expected_bars}"
    checks = re.findall(FAILED_CHECK_PATTERN, row.failed_checks)
    return [
        NO_FIGURE if pd.isna(row.quality_score) else f"{row.quality_score:.1f}",
        missing,
        outliers,
        agreement,
        _escape(", ".join(checks)) if checks else "none",
    ]


def _legend(days: pd.DatetimeIndex) -> list[str]:
    first, last = days[0].date(), days[-1].date()
    step = 100.0 / len(BARS)
    return [
        "Score: the partition's 0-100 quality score (completeness, validity, outliers, "
        "timeliness, agreement). Missing bars: expected bars not stored, of those expected. "
        "Agreement: largest deviation of another provider's close, in basis points, over the "
        "bars compared. Failed checks: `check:SEVERITY`.",
        "",
        f"Trend: the score of each day from {first.isoformat()} to {last.isoformat()}, oldest "
        f"first; {BARS[0]} below {step:g}, one bar higher every {step:g}, {BARS[-1]} from "
        f"{100.0 - step:g}; {NO_ROW} no row that day; {NO_SCORE} a row without a score. "
        f"{NO_FIGURE}: no row that day, or not measured.",
    ]


def _escape(text: str) -> str:
    """``text`` as literal Markdown inside a table cell."""
    return " ".join(text.splitlines()).translate(_MARKDOWN_SPECIALS)
