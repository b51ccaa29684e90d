"""Detectors aimed at data errors in one series of bars, not at market moves.

A market move is confirmed by the bars around it; a data error is not. Each detector scores a bar
against its own series: the ``baseline`` bars before it set the scales (robust: medians of
absolute values), and the *next* bar, where it is known, is the reference that tells a bad print
from a move:

- ``close`` (a spike that reverts): the close moved away from the bar's open and the next bar
  opens back where it came from. The evidence of both legs (intraday move ``log(C/O)`` and the
  next gap ``log(O_next/C)``, in opposite directions, each in units of its own baseline scale)
  is combined as the estimate of one shift of the close; a genuine move is confirmed by the next
  open and scores low. A feed whose bars open at the last close (crypto klines: every gap 0 in
  the baseline) uses the next close as the reference, and the weaker leg as the score (the next
  close may hold an error of its own). The bar at fault is the one scored: the
  next bar's own legs do not involve the bad close, so a correct bar after a bad one is not
  blamed. Needs the next bar.
- ``shift`` (a whole bar off its neighbours: open and close moved alike, e.g. one bar scaled
  wrong): the gap into the bar and the way back out of it, in opposite directions, each in units
  of its usual size; the weaker of the two is the score. Needs the next bar.
- ``high`` / ``low`` (internal consistency beyond the schema): how far the high reaches above the
  open, the close and the next open (the low below them), against the baseline's usual wicks.
- ``bar`` (a repeated or frozen bar): open, high, low, close and volume equal to the bar before
  (across partitions: the history counts).
- ``volume``: ``log(volume)`` against the baseline's median, the expected level scaled by the
  session's type (:func:`volume_levels`: a half day, the sessions next to a holiday); a volume
  of 0 on a traded bar is an error. A volume the provider does not state is not judged.
- ``stale``: a run of equal closes reaching :func:`default_stale_bars` bars, counted across
  partitions, reported on the bar where the run becomes visible (for the completeness check).

A bar's verdict depends only on the ``baseline`` bars before it, itself and the two bars after
it (the next one as the reference, the one after it to tell whether the next bar is itself
shifted), so it is the same whether the bar ran alone, in a range or in a backfill, provided the
history is read as bars (:func:`history_bars`). Until those two bars are known the verdict is
provisional (without its next bar: no ``close`` spike, wicks against its own open and close);
the run that stores them records the final one.
"""

from __future__ import annotations

from dataclasses import dataclass

import bottleneck as bn
import numpy as np
import pandas as pd

DEFAULT_BASELINE = 48
"""Bars before a bar that set its scales (configurable per call)."""
MIN_BASELINE = 10
"""Fewest earlier bars for a verdict; a series' first bars are not scored."""
AFTER = 2
"""Bars after a bar that its final verdict needs (see ``final`` of :func:`bar_errors`)."""

_MAD = 1.4826
_MIN_SCALE = 1e-4  # 1 bp: a feed of identical ticks does not turn every move into an error
_MIN_VOLUME_SCALE = 0.05
_CHUNK = 65_536  # rows of a rolling window view per step (see _spread_before)


@dataclass(frozen=True)
class Thresholds:
    """Scores at which a detector's finding is WARN (``medium``) or ERROR (``high``).

    Calibrated on 20 years of NASDAQ Composite daily bars (``bench/quality_detection.py``).
    """

    close_warn: float = 3.0
    close_error: float = 5.0
    wick_warn: float = 15.0
    wick_error: float = 30.0
    volume_warn: float = 9.0
    volume_error: float = 18.0
    shift_warn: float = 4.5
    shift_error: float = 7.0


DEFAULT_THRESHOLDS = Thresholds()
FIELDS = ("close", "shift", "high", "low", "bar", "volume")


HALF_DAY_VOLUME = 0.77
"""A half day's volume over its share of a full session's (measured: 45 XNYS half days of the
NASDAQ Composite, 1999-2018, traded a median exp(-0.267) of their length's share)."""
BEFORE_HOLIDAY_VOLUME = 0.85
"""A session before a weekday closure (157 measured: median exp(-0.157) of the usual level)."""
AFTER_HOLIDAY_VOLUME = 0.92
"""A session after a weekday closure (158 measured: median exp(-0.077))."""


def volume_levels(
    fraction: np.ndarray, before_holiday: np.ndarray, after_holiday: np.ndarray
) -> np.ndarray:
    """Each session's expected volume over a usual full session's: its length's share
    (``fraction``, NaN for unknown: 1), less on a half day and next to a holiday."""
    level = np.where(np.isfinite(fraction), fraction, 1.0)
    level = np.where(level < 1.0, level * HALF_DAY_VOLUME, level)
    level = np.where(before_holiday, level * BEFORE_HOLIDAY_VOLUME, level)
    return np.where(after_holiday, level * AFTER_HOLIDAY_VOLUME, level)


def default_stale_bars(interval_seconds: int) -> int:
    """Equal closes in a row that make a stale run (as the completeness check counts them)."""
    if interval_seconds >= 86400:
        return 3
    if interval_seconds >= 3600:
        return 6
    return 12


def history_bars(baseline: int = DEFAULT_BASELINE) -> int:
    """Bars of stored history a window needs before its first bar for a cut-independent verdict
    of every day it judges: the baseline, the bar whose close the first baseline gap starts from,
    and :data:`AFTER` more for the earlier bars judged again (their next bars are new)."""
    return baseline + 1 + AFTER


def bar_errors(
    series: pd.DataFrame,
    *,
    baseline: int = DEFAULT_BASELINE,
    volume_level: np.ndarray | None = None,
    stale_run: int = 3,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> pd.DataFrame:
    """Score every bar of one series (sorted by ``ts``) with each detector.

    Args:
        series: One provider's bars of one symbol and interval, ascending ``ts``; ``open``,
            ``high``, ``low``, ``close`` and (nullable) ``volume``.
        baseline: Earlier bars setting each bar's scales.
        volume_level: Per bar, its session's expected volume over a usual session's
            (:func:`volume_levels`); None for none known (crypto, intraday).
        stale_run: Equal closes in a row that make a stale run.
        thresholds: WARN and ERROR levels.

    Returns:
        One row per bar, in ``series``' order: ``ts``; scores ``close``, ``shift``, ``high``,
        ``low``, ``volume`` (NaN where not judged); ``bar`` (1.0 for a repeated bar, else 0.0);
        ``zero_volume``; ``stale`` (the bar where a stale run becomes visible); ``final``
        (the :data:`AFTER` next bars are known); ``severity`` (``none``, ``medium``, ``high``)
        and ``reason``.
    """
    n = len(series)
    o, h, lo, c = (_column(series, name) for name in ("open", "high", "low", "close"))
    volume = _column(series, "volume")
    with np.errstate(divide="ignore", invalid="ignore"):
        intraday = np.log(c / o)
        gap = np.full(n, np.nan)
        gap[1:] = np.log(o[1:] / c[:-1])  # into each bar from the close before
        next_gap = np.append(gap[1:], np.nan)
        next_open = np.append(o[1:], np.nan)
        upper = np.log(h / np.fmax(o, c))
        lower = np.log(np.fmin(o, c) / lo)
        upper_next = np.log(h / np.fmax(np.fmax(o, c), next_open))
        lower_next = np.log(np.fmin(np.fmin(o, c), next_open) / lo)
        log_volume = np.where(volume > 0, np.log(volume), np.nan)

    # Final once the two next bars are known: the next one is each detector's reference, and
    # the one after tells whether the next bar is itself off (a shift, below).
    final = np.zeros(n, dtype=bool)
    final[:-AFTER] = True
    has_next = np.zeros(n, dtype=bool)
    has_next[:-1] = True
    enough = np.arange(n) >= MIN_BASELINE

    same = np.zeros(n, dtype=bool)
    if n > 1:
        same[1:] = (
            (o[1:] == o[:-1])
            & (h[1:] == h[:-1])
            & (lo[1:] == lo[:-1])
            & (c[1:] == c[:-1])
            & ((volume[1:] == volume[:-1]) | (np.isnan(volume[1:]) & np.isnan(volume[:-1])))
        )
    # The bar before a repeat has its own open as "next open": a close that moved would look
    # reverted. The repeat is the error, so the bar before it is not scored against it.
    before_repeat = np.append(same[1:], False)

    # Scales from the bars before each bar (the gap into a bar is known at the bar).
    s_c = np.fmax(_MAD * _before(np.abs(intraday), baseline), _MIN_SCALE)
    s_g = np.fmax(_MAD * _before(np.abs(gap), baseline, include_own=True), _MIN_SCALE)
    s_g = np.fmax(s_g, 0.1 * s_c)  # a feed whose open is the last close (crypto): gaps of 0
    # A feed whose bars open at the last close (crypto klines) carries a bad close into the next
    # open: there the next close is the reference instead.
    ret = np.full(n, np.nan)
    if n > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            ret[1:] = np.log(c[1:] / c[:-1])
    carried = _before(np.abs(gap), baseline, include_own=True) == 0
    s_r = np.fmax(_MAD * _before(np.abs(ret), baseline, include_own=True), _MIN_SCALE)
    out = np.where(carried, np.append(ret[1:], np.nan), next_gap)
    s_g = np.where(carried, s_r, s_g)
    sign = np.sign(intraday)
    leg_in = intraday * sign / s_c
    leg_out = -out * sign / s_g
    combined = (intraday / s_c**2 - out / s_g**2) / np.sqrt(1 / s_c**2 + 1 / s_g**2)
    # Where the next close is the reference, it carries the next bar's own error: a bad close
    # after this bar must not be blamed on this one, so both legs must be large (the weaker).
    combined = np.where(carried, np.fmin(leg_in, leg_out), np.abs(combined))
    close = np.where((leg_in > 1) & (leg_out > 1), combined, 0.0)
    # A whole bar off its neighbours: the gap into it and the way out of it, opposite ways.
    s_in = np.fmax(_MAD * _before(np.abs(gap), baseline), _MIN_SCALE)
    s_in = np.fmax(s_in, 0.1 * s_c)
    side = np.sign(gap)
    shift_in = gap * side / s_in
    shift_out = -out * side / s_g
    # Both legs must be large: the weaker one is the score (a big gap back after a bad close
    # leaves the next bar's way out small).
    shifted = np.fmax(np.fmin(shift_in, shift_out), 0.0)
    shifted = np.where(has_next & enough & ~before_repeat, shifted, np.nan)
    # Likewise the bar before a shifted bar: the gap into the shifted bar is that bar's error,
    # where the shift scores at least half this close's spike (on NASDAQ: blame of shifted bars
    # 84 -> 96 %, detection of ±5 % closes unchanged within half a point).
    next_shift = np.append(np.nan_to_num(shifted[1:]), 0.0)
    before_shift = (next_shift >= thresholds.shift_warn) & (
        next_shift >= 0.5 * np.nan_to_num(close)
    )
    close = np.where(has_next & enough & ~before_repeat & ~before_shift, close, np.nan)

    s_up = np.fmax(_MAD * _before(upper, baseline), _MIN_SCALE)
    s_down = np.fmax(_MAD * _before(lower, baseline), _MIN_SCALE)
    high = np.where(has_next, upper_next, upper) / s_up
    low = np.where(has_next, lower_next, lower) / s_down
    high = np.where(enough, high, np.nan)
    low = np.where(enough, low, np.nan)

    center = _before(log_volume, baseline)
    spread = _MAD * _spread_before(log_volume, center, baseline)
    expected = center
    if volume_level is not None:
        expected = center + np.log(np.clip(volume_level, 0.05, 1.0))
    vol = np.abs(log_volume - expected) / np.fmax(spread, _MIN_VOLUME_SCALE)
    vol = np.where(enough, vol, np.nan)
    zero_volume = volume == 0

    runs = _flat_run_lengths(c)
    stale = runs == stale_run

    t = thresholds
    high_mask = (
        (close >= t.close_error)
        | (shifted >= t.shift_error)
        | (high >= t.wick_error)
        | (low >= t.wick_error)
        | (vol >= t.volume_error)
        | zero_volume
        | same
    )
    medium_mask = (
        (close >= t.close_warn)
        | (shifted >= t.shift_warn)
        | (high >= t.wick_warn)
        | (low >= t.wick_warn)
        | (vol >= t.volume_warn)
    )
    severity = np.where(high_mask, "high", np.where(medium_mask, "medium", "none"))
    reason = _reasons(close, shifted, high, low, vol, zero_volume, same, t)
    return pd.DataFrame(
        {
            # The column as it is: to_numpy() of tz-aware stamps builds a Timestamp per bar.
            "ts": series["ts"].reset_index(drop=True)
            if n
            else pd.Series([], dtype="datetime64[ns, UTC]"),
            "close": close,
            "shift": shifted,
            "high": high,
            "low": low,
            "bar": same.astype("float64"),
            "volume": vol,
            "zero_volume": zero_volume,
            "stale": stale,
            "final": final,
            "severity": severity,
            "reason": reason,
        }
    )


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def _before(values: np.ndarray, window: int, include_own: bool = False) -> np.ndarray:
    """Median of the ``window`` values before each position (or ending at it), NaN-skipping."""
    if not len(values):
        return values
    window = min(window, len(values))  # bottleneck refuses a window longer than the series
    medians = bn.move_median(values, window, min_count=max(1, min(MIN_BASELINE // 2, window)))
    if include_own:
        return medians
    out = np.full(len(values), np.nan)
    out[1:] = medians[:-1]
    return out


def _spread_before(values: np.ndarray, center: np.ndarray, window: int) -> np.ndarray:
    """Median absolute distance of the ``window`` values before each position from that
    position's ``center``: a rolling MAD that needs no history before its own window (the
    distance of each earlier value to *its own* median would need a second window before the
    first, and a verdict that depended on how far back the run read). Chunked: a window per row
    of a 2-D view costs ``window`` floats per value."""
    n = len(values)
    out = np.full(n, np.nan)
    if n < 2:
        return out
    width = min(window, n - 1)
    padded = np.concatenate([np.full(width, np.nan), values[:-1]])
    views = np.lib.stride_tricks.sliding_window_view(padded, width)  # row t: the values before t
    least = max(1, min(MIN_BASELINE // 2, width))
    for first in range(0, n, _CHUNK):
        rows = slice(first, min(first + _CHUNK, n))
        distance = np.abs(views[rows] - center[rows, None])
        counted = np.count_nonzero(~np.isnan(distance), axis=1)
        medians = bn.nanmedian(distance, axis=1)
        out[rows] = np.where(counted >= least, medians, np.nan)
    return out


def _flat_run_lengths(close: np.ndarray) -> np.ndarray:
    """Length of the run of equal closes ending at each bar (1 for a bar unlike the one before)."""
    n = len(close)
    if not n:
        return np.zeros(0, dtype=np.int64)
    begins = np.ones(n, dtype=bool)
    begins[1:] = close[1:] != close[:-1]
    starts = np.maximum.accumulate(np.where(begins, np.arange(n), 0))
    return np.arange(n) - starts + 1


def _reasons(
    close: np.ndarray,
    shifted: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    vol: np.ndarray,
    zero_volume: np.ndarray,
    same: np.ndarray,
    t: Thresholds,
) -> list[str]:
    """A short reason per flagged bar ("" for a clean one); flagged bars are few."""
    reasons = [""] * len(close)
    flagged = np.flatnonzero(
        (np.nan_to_num(close) >= t.close_warn)
        | (np.nan_to_num(shifted) >= t.shift_warn)
        | (np.nan_to_num(high) >= t.wick_warn)
        | (np.nan_to_num(low) >= t.wick_warn)
        | (np.nan_to_num(vol) >= t.volume_warn)
        | zero_volume
        | same
    )
    for i in flagged.tolist():
        parts = []
        if same[i]:
            parts.append("bar repeats the bar before")
        if close[i] >= t.close_warn:
            parts.append(f"close spike reverted by the next open (score {close[i]:.1f})")
        if shifted[i] >= t.shift_warn:
            parts.append(f"whole bar off both neighbours (score {shifted[i]:.1f})")
        if high[i] >= t.wick_warn:
            parts.append(f"high far above open, close and next open (score {high[i]:.1f})")
        if low[i] >= t.wick_warn:
            parts.append(f"low far below open, close and next open (score {low[i]:.1f})")
        if zero_volume[i]:
            parts.append("volume 0 on a traded bar")
        elif vol[i] >= t.volume_warn:
            parts.append(f"volume off its session's usual level (score {vol[i]:.1f})")
        reasons[i] = "; ".join(parts)
    return reasons
