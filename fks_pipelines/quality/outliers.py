"""Outliers in OHLCV series, scored against a rolling baseline of each series' own recent bars.

What is scored:

- price fields (``open``, ``high``, ``low``, ``close``, ``vwap``): log returns from the previous
  bar of the same series, so a trending market is not "all outliers". An isolated bad print
  shows as two flagged returns: into the bad bar and out of it;
- count fields (``volume``, ``quote_volume``, ``trades``): ``log1p`` of the value, so a volume
  burst is judged on its ratio to normal volume; a null (a volume the provider does not state)
  is not scored;
- any other numeric column: its raw values.

The baseline of a bar is the ``window`` bars of its series *before* it (the bar itself is left
out, so it cannot dilute its own score):

- ``mad``: score = ``|x - median| / (1.4826 * MAD)``. The MAD is the rolling median of each
  bar's absolute deviation from its own baseline median (two rolling medians, one pass each;
  an exact per-window MAD would need a sort per window);
- ``zscore``: score = ``|x - mean| / std``;
- ``iqr``: score = distance beyond the nearer quartile in IQRs, ``max(Q1 - x, x - Q3, 0) /
  (Q3 - Q1)``, so ``threshold`` is Tukey's fence factor (1.5 "outlier", 3 "far out").

A bar is an outlier when its score exceeds ``threshold``. Bars with fewer than ``min_periods``
earlier bars in the window (the start of each series) are scored against the whole series'
statistics instead. The scale is floored at a tenth of the whole series' scale, so a quiet
stretch or a run of identical ticks (MAD 0) does not turn ordinary moves into outliers.

Series are the ``(provider, symbol, interval)`` groups of the frame: rows are sorted by series
and ``ts``, and the series are laid end to end with ``window + 1`` empty slots between them, so
one vectorised rolling pass serves every series without any window reaching into another.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import bottleneck as bn
import numpy as np
import pandas as pd

from fks_pipelines.quality.schema import (
    NAT_NANOS,
    SERIES_KEYS,
    series_codes,
    series_order,
    ts_nanos,
)

Method = Literal["zscore", "mad", "iqr", "errors"]
Severity = Literal["none", "low", "medium", "high"]

PRICE_FIELDS = ("open", "high", "low", "close", "vwap")
COUNT_FIELDS = ("volume", "quote_volume", "trades")
MAX_LISTED = 20
MIN_COUNT_FOR_FRACTION = 5

_MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation
_FLOOR_FRACTION = 0.1
_MIN_SCALE = 1e-12
_DAY_NS = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class OutlierResult:
    """Outliers found in one field.

    Attributes:
        field: The column tested.
        method: ``zscore``, ``mad`` or ``iqr``.
        threshold: Scores above it are outliers.
        count: Outlier bars (exact).
        scored: Bars that could be scored (a return needs a previous bar; NaN and non-positive
            prices are not scored).
        max_score: The worst score; None when nothing was scored.
        severity: ``none``, ``low``, ``medium`` or ``high`` (see :class:`OutlierDetector`).
        timestamps: Bar open times of the worst outliers, worst first, at most
            :data:`MAX_LISTED`.
        values: The field's values at those bars (prices or volumes, not returns).
        scores: Their scores.
        symbols: Their symbols (several series may share one frame).
    """

    field: str
    method: Method
    threshold: float
    count: int
    scored: int
    max_score: float | None
    severity: Severity
    timestamps: list[pd.Timestamp] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    symbols: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, object]:
        """Flat metadata (plain Python), keys prefixed ``outliers_<field>_``."""
        prefix = f"outliers_{self.field}_"
        metadata: dict[str, object] = {
            f"{prefix}count": self.count,
            f"{prefix}scored": self.scored,
            f"{prefix}severity": self.severity,
            f"{prefix}method": self.method,
            f"{prefix}threshold": self.threshold,
        }
        if self.max_score is not None:
            metadata[f"{prefix}max_score"] = self.max_score
        if self.timestamps:
            metadata[f"{prefix}examples"] = self.examples
        return metadata

    @property
    def examples(self) -> list[str]:
        """The listed outliers, worst first: ``symbol ts value (score s)``."""
        return [
            f"{symbol} {ts.isoformat()} {value:g} (score {score:.1f})"
            for symbol, ts, value, score in zip(
                self.symbols, self.timestamps, self.values, self.scores, strict=True
            )
        ]


class OutlierDetector:
    """Flags bars whose value strays from the recent behaviour of their own series.

    See the module docstring for what is scored and how. Severity, from the worst score ``s``
    and the fraction ``f`` of scored bars that are outliers:

    - ``none``: no outlier;
    - ``high``: ``s >= high_factor * threshold``, or ``f > high_fraction`` with at least
      :data:`MIN_COUNT_FOR_FRACTION` outliers (defaults: 6 times the threshold, 10 % of bars);
    - ``medium``: ``s >= medium_factor * threshold``, or ``f > medium_fraction`` with at least
      :data:`MIN_COUNT_FOR_FRACTION` outliers (defaults: 3 times the threshold, 5 % of bars);
    - ``low``: any other outlier.

    Asset checks map ``high`` to ERROR and ``medium`` to WARN; ``low`` passes.

    Why the factors are that high: a score just above the threshold is routine in market data.
    On simulated days of 1,440 one-minute returns (``mad``, threshold 3, window 48), Gaussian
    noise flags 0.7 % of bars and its worst score reaches 6 on 1 % of days; Student-t noise
    with 4 degrees of freedom (fat tails, closer to real minute returns) flags 3.3 % of bars
    and its worst score reaches 9 on 68 % of days and 18 on 8 %. A bad print (a close 20 % off
    in a calm series) scores above 100. So ``high`` means "probably wrong data", ``medium``
    "unusual, look at it"; calibrate the factors on each feed's own history.

    Args:
        method: ``mad`` (rolling median and MAD, robust; the default), ``zscore`` (rolling mean
            and standard deviation) or ``iqr`` (rolling quartiles).
        threshold: Scores above it are outliers (robust standard deviations for ``mad``,
            standard deviations for ``zscore``, IQRs beyond the quartile for ``iqr``).
        window: Earlier bars of the same series forming a bar's baseline.
        min_periods: Fewest earlier bars for a rolling baseline; with fewer the whole series'
            statistics are used. Default: a quarter of ``window``, at least 2.
        by: Columns naming a series; those absent from a frame are ignored.
        high_factor: See the severity rule.
        high_fraction: See the severity rule.
        medium_factor: See the severity rule.
        medium_fraction: See the severity rule.

    Raises:
        ValueError: An argument is out of range.
    """

    def __init__(
        self,
        method: Method = "mad",
        threshold: float = 3.0,
        window: int = 48,
        min_periods: int | None = None,
        *,
        by: Sequence[str] = SERIES_KEYS,
        high_factor: float = 6.0,
        high_fraction: float = 0.10,
        medium_factor: float = 3.0,
        medium_fraction: float = 0.05,
    ) -> None:
        if method not in ("zscore", "mad", "iqr"):
            raise ValueError(f"unknown method {method!r}: use 'mad', 'zscore' or 'iqr'")
        if not threshold > 0:
            raise ValueError(f"threshold must be positive, got {threshold!r}")
        if window < 3:
            raise ValueError(f"window must be at least 3 bars, got {window}")
        min_periods = max(2, window // 4) if min_periods is None else min_periods
        if not 2 <= min_periods <= window:
            raise ValueError(f"min_periods must be between 2 and window ({window})")
        if not 1 <= medium_factor <= high_factor:
            raise ValueError("need 1 <= medium_factor <= high_factor")
        if not 0 <= medium_fraction <= high_fraction:
            raise ValueError("need 0 <= medium_fraction <= high_fraction")
        self.method: Method = method
        self.threshold = float(threshold)
        self.window = window
        self.min_periods = min_periods
        self.by = tuple(by)
        self.high_factor = high_factor
        self.high_fraction = high_fraction
        self.medium_factor = medium_factor
        self.medium_fraction = medium_fraction

    def __repr__(self) -> str:
        return (
            f"OutlierDetector(method={self.method!r}, threshold={self.threshold}, "
            f"window={self.window}, min_periods={self.min_periods})"
        )

    def detect(
        self,
        df: pd.DataFrame,
        fields: Sequence[str] = ("close", "volume"),
        since: pd.Timestamp | None = None,
    ) -> list[OutlierResult]:
        """Find outliers in each of ``fields``, one result per field in the order given.

        Args:
            df: Bars with ``ts`` and the fields; may hold several series (see ``by``), in any
                row order.
            fields: Numeric columns to test.
            since: Bars opening before it are baseline only: they give the bars after them
                history (a daily partition holds one bar) but are neither scored nor counted.

        Raises:
            ValueError: ``df`` lacks ``ts`` or one of ``fields``.
        """
        layout = _Layout.of(df, self.by, self.window)
        baseline_only = layout.nanos < since.tz_convert("UTC").value if since is not None else None
        results = []
        for name in fields:
            scores = layout.scores(name, self)
            if baseline_only is not None:
                scores = np.where(baseline_only, np.nan, scores)
            results.append(self._result(name, scores, layout))
        return results

    def detect_by_day(
        self,
        df: pd.DataFrame,
        fields: Sequence[str] = ("close", "volume"),
        since: pd.Timestamp | None = None,
    ) -> dict[pd.Timestamp, list[OutlierResult]]:
        """:meth:`detect` for each UTC day of the scored bars, from one scoring pass.

        A partition of the OHLCV assets is one UTC day; a backfill run scores many days at once
        and each day gets the verdict its own bars earn, as if it had run alone against the same
        baseline (a block's count of outliers is not charged to every day in it).

        Returns:
            UTC midnight -> one result per field, for each day with a bar at or after ``since``.
        """
        layout = _Layout.of(df, self.by, self.window)
        scored = layout.nanos >= since.tz_convert("UTC").value if since is not None else None
        days = layout.nanos // _DAY_NS
        rows = np.flatnonzero(scored) if scored is not None else np.arange(len(days))
        rows = rows[layout.nanos[rows] != NAT_NANOS]
        order = rows[np.argsort(days[rows], kind="stable")]
        starts = np.flatnonzero(np.diff(days[order], prepend=np.int64(-1)) != 0)
        groups = np.split(order, starts[1:]) if len(order) else []
        results: dict[pd.Timestamp, list[OutlierResult]] = {
            pd.Timestamp(int(days[group[0]]) * _DAY_NS, tz="UTC"): [] for group in groups
        }
        for name in fields:
            scores = layout.scores(name, self)
            for day, group in zip(results, groups, strict=True):
                results[day].append(self._result(name, scores, layout, group))
        return results

    def score(self, df: pd.DataFrame, field: str) -> np.ndarray:
        """Each row's score for ``field``, in ``df``'s row order (NaN where not scored)."""
        layout = _Layout.of(df, self.by, self.window)
        scores = layout.scores(field, self)
        out = np.empty(len(df))
        out[layout.order] = scores
        return out

    def severity(self, max_score: float | None, count: int, scored: int) -> Severity:
        """The severity rule of the class docstring."""
        if not count or max_score is None:
            return "none"
        # One or two outliers in a short window are not "many": the fraction needs a few.
        fraction = count / scored if scored and count >= MIN_COUNT_FOR_FRACTION else 0.0
        if max_score >= self.high_factor * self.threshold or fraction > self.high_fraction:
            return "high"
        if max_score >= self.medium_factor * self.threshold or fraction > self.medium_fraction:
            return "medium"
        return "low"

    def _result(
        self,
        name: str,
        scores: np.ndarray,
        layout: _Layout,
        subset: np.ndarray | None = None,
    ) -> OutlierResult:
        """The result of ``scores`` (sorted rows), or of the sorted rows ``subset`` only."""
        rows = np.arange(len(scores)) if subset is None else subset
        own = scores[rows]
        valid = ~np.isnan(own)
        scored = int(valid.sum())
        max_score = float(own[valid].max()) if scored else None
        flagged = rows[own > self.threshold]  # NaN compares False
        count = len(flagged)
        if count > MAX_LISTED:
            flagged = flagged[np.argpartition(scores[flagged], -MAX_LISTED)[-MAX_LISTED:]]
        flagged = flagged[np.argsort(-scores[flagged], kind="stable")]
        return OutlierResult(
            field=name,
            method=self.method,
            threshold=self.threshold,
            count=count,
            scored=scored,
            max_score=max_score,
            severity=self.severity(max_score, count, scored),
            timestamps=[pd.Timestamp(int(t), tz="UTC") for t in layout.nanos[flagged]],
            values=[float(v) for v in layout.raw(name)[flagged]],
            scores=[float(s) for s in scores[flagged]],
            symbols=layout.symbols(layout.order[flagged]),
        )


@dataclass
class _Layout:
    """Rows sorted by series then ``ts``, and their slots in a padded buffer.

    Attributes:
        frame: The frame scored.
        order: Row positions of ``frame`` in sorted order.
        codes: Dense series code of each sorted row.
        nanos: ``ts`` of each sorted row, epoch nanoseconds.
        slots: Position of each sorted row in the buffer.
        size: Buffer length.
        groups: Number of series.
        window: The detector's window; series are ``window + 1`` slots apart in the buffer.
    """

    frame: pd.DataFrame
    order: np.ndarray
    codes: np.ndarray
    nanos: np.ndarray
    slots: np.ndarray
    size: int
    groups: int
    window: int

    @classmethod
    def of(cls, frame: pd.DataFrame, by: Sequence[str], window: int) -> _Layout:
        if "ts" not in frame.columns:
            raise ValueError("frame has no 'ts' column")
        nanos = ts_nanos(frame["ts"])
        if nanos is None:
            raise ValueError(f"ts must be datetimes, got {frame['ts'].dtype}")
        codes = series_codes(frame, by)
        n = len(frame)
        order = series_order(codes, nanos)
        codes, nanos = codes[order], nanos[order]
        groups = int(codes.max()) + 1 if n else 0
        # pad empty slots before every series: a window (and the shift by one bar) ending at a
        # series' first bar sees only empty slots, never the series before it.
        pad = window + 1
        slots = np.arange(n) + (codes + 1) * pad
        return cls(frame, order, codes, nanos, slots, n + (groups + 1) * pad, groups, window)

    def raw(self, name: str) -> np.ndarray:
        if name not in self.frame.columns:
            raise ValueError(f"frame has no {name!r} column")
        column = pd.to_numeric(self.frame[name], errors="coerce")
        return column.to_numpy(dtype="float64", na_value=np.nan)[self.order]

    def symbols(self, rows: np.ndarray) -> list[str]:
        if "symbol" not in self.frame.columns:
            return [""] * len(rows)
        # Take the few rows first: converting a million Arrow strings costs 60 ms.
        return [str(s) for s in self.frame["symbol"].iloc[rows].tolist()]

    def scores(self, name: str, detector: OutlierDetector) -> np.ndarray:
        """Scores of the sorted rows (NaN where a bar cannot be scored)."""
        values = self.raw(name)
        if not len(values):
            return values
        with np.errstate(divide="ignore", invalid="ignore"):
            if name in PRICE_FIELDS:
                logs = self._buffer(np.where(values > 0, np.log(values), np.nan))
                x = np.full(self.size, np.nan)
                x[1:] = logs[1:] - logs[:-1]  # each series' first return meets a pad: NaN
            elif name in COUNT_FIELDS:
                x = self._buffer(np.where(values >= 0, np.log1p(values), np.nan))
            else:
                x = self._buffer(values)
        x[~np.isfinite(x)] = np.nan
        x_rows = x[self.slots]

        method = detector.method
        if method == "mad":
            center = self._baseline(x, "median", detector, x_rows)
            deviation = np.abs(x_rows - center)
            scale = _MAD_TO_SIGMA * self._baseline(
                self._buffer(deviation), "median", detector, deviation
            )
            distance = deviation
        elif method == "zscore":
            center = self._baseline(x, "mean", detector, x_rows)
            scale = self._baseline(x, "std", detector, x_rows)
            distance = np.abs(x_rows - center)
        else:
            q1 = self._baseline(x, 0.25, detector, x_rows)
            q3 = self._baseline(x, 0.75, detector, x_rows)
            scale = q3 - q1
            distance = np.maximum(np.maximum(q1 - x_rows, x_rows - q3), 0.0)

        floor = _FLOOR_FRACTION * self._whole(_dispersion(x_rows, self.codes, self.groups, method))
        scale = np.fmax(np.fmax(scale, floor), _MIN_SCALE)
        return distance / scale

    def _buffer(self, rows: np.ndarray) -> np.ndarray:
        buffer = np.full(self.size, np.nan)
        buffer[self.slots] = rows
        return buffer

    def _whole(self, per_group: np.ndarray) -> np.ndarray:
        return per_group[self.codes]

    def _baseline(
        self,
        buffer: np.ndarray,
        stat: str | float,
        detector: OutlierDetector,
        rows: np.ndarray,
    ) -> np.ndarray:
        """``stat`` of the ``window`` slots before each row.

        A bar with fewer than ``min_periods`` earlier bars (the head of a series) gets the
        ``stat`` of its series' first ``window`` bars, the nearest stable baseline: the whole
        series would misjudge the head of a trend. A series too short even for that gets its
        whole-series ``stat``.
        """
        values = _rolling(buffer, stat, detector.window, detector.min_periods)
        before = values[self.slots - 1]  # the window ending just before the bar
        short = np.isnan(before)
        if short.any():
            before[short] = values[self.head_window[self.codes[short]]]
            short = np.isnan(before)
            if short.any():
                whole = _group_stat(rows, self.codes, self.groups, stat)
                before[short] = whole[self.codes[short]]
        return before

    @functools.cached_property
    def head_window(self) -> np.ndarray:
        """Per series: the slot whose window covers the series' first ``window`` bars."""
        firsts = np.searchsorted(self.codes, np.arange(self.groups))
        lengths = np.diff(np.append(firsts, len(self.codes)))
        return self.slots[firsts] + np.minimum(self.window, lengths) - 1


def _rolling(buffer: np.ndarray, stat: str | float, window: int, min_periods: int) -> np.ndarray:
    """``stat`` of each trailing ``window`` of ``buffer``, NaN-skipping, NaN below ``min_periods``.

    Median, mean and standard deviation come from bottleneck's moving-window functions, which
    give pandas' rolling results (to 1e-12 on fat-tailed returns) 6-10x faster: the two rolling
    medians of ``mad`` were most of the detector's time (bench/quality_checks.py). Quantiles,
    which bottleneck lacks, use pandas.
    """
    if stat == "median":
        return bn.move_median(buffer, window, min_count=min_periods)
    if stat == "mean":
        return bn.move_mean(buffer, window, min_count=min_periods)
    if stat == "std":
        return bn.move_std(buffer, window, min_count=min_periods, ddof=1)
    rolling = pd.Series(buffer).rolling(window, min_periods=min_periods)
    return rolling.quantile(float(stat)).to_numpy()


def _group_stat(rows: np.ndarray, codes: np.ndarray, groups: int, stat: str | float) -> np.ndarray:
    """``stat`` of each series (NaN skipped), indexed by series code."""
    if groups == 1:  # the common case, without groupby's overhead
        with np.errstate(invalid="ignore"):
            finite = rows[~np.isnan(rows)]
            if not len(finite):
                return np.array([np.nan])
            if isinstance(stat, float):
                return np.array([np.quantile(finite, stat)])
            if stat == "std":
                return np.array([finite.std(ddof=1) if len(finite) > 1 else np.nan])
            return np.array([getattr(np, stat)(finite)])
    grouped = pd.Series(rows).groupby(codes)
    out = grouped.quantile(stat) if isinstance(stat, float) else getattr(grouped, stat)()
    return out.reindex(range(groups)).to_numpy(dtype="float64")


def _dispersion(rows: np.ndarray, codes: np.ndarray, groups: int, method: Method) -> np.ndarray:
    """Each whole series' scale in the method's own units, indexed by series code."""
    if method == "zscore":
        return _group_stat(rows, codes, groups, "std")
    if method == "iqr":
        return _group_stat(rows, codes, groups, 0.75) - _group_stat(rows, codes, groups, 0.25)
    median = _group_stat(rows, codes, groups, "median")[codes]
    return _MAD_TO_SIGMA * _group_stat(np.abs(rows - median), codes, groups, "median")
