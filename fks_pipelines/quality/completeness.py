"""Completeness of OHLCV bars over a window: missing, extra, repeated, unfinished and flat bars.

The expected bars come from the instrument's trading calendar
(:func:`~fks_pipelines.market.calendars.expected_bar_opens`), so an equity's weekend, holiday or
night is not a gap, while a crypto hour without a bar is. Bars that have not closed at ``now`` are
not expected yet: checking today's partition at noon does not report the afternoon as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fks_pipelines.market.calendars import expected_bar_opens
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.schema import NAT_NANOS, series_codes, series_order, ts_nanos

MAX_EXAMPLES = 5
COMPLETENESS_KEYS = ("provider", "symbol")


def default_stale_run(interval: Interval) -> int:
    """Consecutive bars with one close that make an implausibly flat (stale) run.

    12 bars below an hour (12 minutes of 1m bars: a liquid market always ticks in that time),
    6 bars from an hour up (six hours unchanged), 3 daily bars (a feed repeating a bar over a
    long weekend is the usual cause). A thinly traded instrument may need a higher threshold.
    """
    if interval.seconds >= 86400:
        return 3
    if interval.seconds >= 3600:
        return 6
    return 12


@dataclass(frozen=True)
class CompletenessReport:
    """The outcome of :func:`check_completeness`.

    Counts are over bars in ``[start, end)`` unless stated otherwise; a "bar" is one distinct
    ``(provider, symbol, ts)``.

    Attributes:
        series: ``(provider, symbol)`` series in the frame (1 for an empty frame); each is held to
            the whole expected set.
        expected: Expected bar opens that have closed at ``now``, times ``series``.
        present: Distinct bars in the window.
        missing: Expected bars not present.
        missing_examples: The first missing bars (at most :data:`MAX_EXAMPLES`), as ISO open
            times, prefixed with the symbol when the frame holds several series.
        extra: Present bars that are not among the calendar's opens (extended hours, off-grid
            times): informational.
        duplicates: Rows repeating an earlier row's ``(provider, symbol, ts)``.
        open_bars: Bars stored although they had not closed at ``now`` (``ts + interval > now``).
        outside: Rows outside the window (or without a ``ts``).
        stale_run: The flat-run threshold used (see :func:`default_stale_run`).
        stale_runs: Runs of at least ``stale_run`` consecutive bars of one series with the same
            close.
        stale_bars: Bars in those runs.
        stale_examples: Open times of the first bars of the first stale runs (ISO, at most
            :data:`MAX_EXAMPLES`).
        longest_flat_run: The longest run of consecutive bars with the same close (0 if no bars).
        ratio: Expected bars present / expected bars (1.0 when nothing is expected).
    """

    series: int
    expected: int
    present: int
    missing: int
    extra: int
    duplicates: int
    open_bars: int
    outside: int
    stale_run: int
    stale_runs: int
    stale_bars: int
    longest_flat_run: int
    ratio: float
    missing_examples: list[str] = field(default_factory=list)
    stale_examples: list[str] = field(default_factory=list)

    def as_metadata(self) -> dict[str, object]:
        """Flat metadata (plain ``int``/``float``, examples as lists of strings)."""
        metadata: dict[str, object] = {
            "completeness_ratio": self.ratio,
            "bars_expected": self.expected,
            "bars_present": self.present,
            "bars_missing": self.missing,
            "bars_extra": self.extra,
            "bars_duplicated": self.duplicates,
            "bars_open": self.open_bars,
            "rows_outside_window": self.outside,
            "stale_run_threshold": self.stale_run,
            "stale_runs": self.stale_runs,
            "stale_bars": self.stale_bars,
            "longest_flat_run": self.longest_flat_run,
        }
        if self.missing_examples:
            metadata["missing_examples"] = self.missing_examples
        if self.stale_examples:
            metadata["stale_examples"] = self.stale_examples
        return metadata


def check_completeness(
    frame: pd.DataFrame,
    instrument: Instrument,
    interval: Interval,
    start: pd.Timestamp,
    end: pd.Timestamp,
    now: pd.Timestamp,
    stale_run: int | None = None,
) -> CompletenessReport:
    """Compare the bars of ``frame`` in ``[start, end)`` with the bars the calendar expects.

    Args:
        frame: Bars of one instrument at ``interval`` (canonical columns; ``provider`` and
            ``symbol`` are optional and split the frame into series). Any row order.
        instrument: The instrument; equities name their exchange calendar.
        interval: The bar interval.
        start: Window start, inclusive, timezone-aware.
        end: Window end, exclusive, timezone-aware.
        now: The time of the check: bars closing after it are not expected yet, and stored
            ones are counted as ``open_bars``.
        stale_run: Flat-run threshold in bars; default :func:`default_stale_run`.

    Raises:
        ValueError: A bound is naive, ``frame`` has no datetime ``ts`` column, ``stale_run`` is
            below 2, or the window falls outside the calendar's range.
    """
    if now.tzinfo is None:
        raise ValueError(f"now must be timezone-aware (UTC), got naive {now}")
    threshold = default_stale_run(interval) if stale_run is None else stale_run
    if threshold < 2:
        raise ValueError(f"stale_run must be at least 2 bars, got {threshold}")
    if "ts" not in frame.columns:
        raise ValueError("frame has no 'ts' column")
    nanos = ts_nanos(frame["ts"])
    if nanos is None:
        raise ValueError(f"ts must be datetimes, got {frame['ts'].dtype}")

    step = interval.seconds * 1_000_000_000
    now_ns = now.tz_convert("UTC").as_unit("ns").value
    opens = expected_bar_opens(instrument, interval, start, end).as_unit("ns").asi8
    due = opens + step <= now_ns  # a bar is expected once it has closed

    codes = series_codes(frame, COMPLETENESS_KEYS)
    series = int(codes.max()) + 1 if len(codes) else 1
    lo = start.tz_convert("UTC").as_unit("ns").value
    hi = end.tz_convert("UTC").as_unit("ns").value
    inside = (nanos != NAT_NANOS) & (nanos >= lo) & (nanos < hi)
    positions = np.flatnonzero(inside)
    c, t = codes[positions], nanos[positions]
    order = series_order(c, t)
    positions, c, t = positions[order], c[order], t[order]
    first = np.ones(len(t), dtype=bool)
    first[1:] = (c[1:] != c[:-1]) | (t[1:] != t[:-1])
    duplicates = int(len(t) - first.sum())
    positions, c, t = positions[first], c[first], t[first]

    # Match each bar to the calendar's opens (both sorted): one searchsorted, no per-row work.
    at = np.searchsorted(opens, t)
    if len(opens):
        in_calendar = (at < len(opens)) & (opens[np.minimum(at, len(opens) - 1)] == t)
    else:
        in_calendar = np.zeros(len(t), dtype=bool)
    # One cell per (series, calendar open): the bars found, then the due ones not found.
    found = np.zeros(series * len(opens), dtype=bool)
    found[c[in_calendar] * len(opens) + at[in_calendar]] = True
    due_cells = np.tile(due, series)
    missing = np.flatnonzero(due_cells & ~found)
    expected = int(due_cells.sum())
    present_due = int((found & due_cells).sum())
    symbols = _series_names(frame, codes, series)

    closes = _closes(frame, positions)
    runs = _flat_runs(c, closes)
    stale = runs[:, 1] >= threshold

    return CompletenessReport(
        series=series,
        expected=expected,
        present=len(t),
        missing=len(missing),
        extra=int(len(t) - in_calendar.sum()),
        duplicates=duplicates,
        open_bars=int((t + step > now_ns).sum()),
        outside=int(len(frame) - inside.sum()),
        stale_run=threshold,
        stale_runs=int(stale.sum()),
        stale_bars=int(runs[stale, 1].sum()),
        longest_flat_run=int(runs[:, 1].max()) if len(runs) else 0,
        ratio=present_due / expected if expected else 1.0,
        missing_examples=[
            _label(symbols, series, cell // len(opens), int(opens[cell % len(opens)]))
            for cell in missing[:MAX_EXAMPLES].tolist()
        ],
        stale_examples=[
            _label(symbols, series, int(c[begin]), int(t[begin]))
            for begin in runs[stale, 0][:MAX_EXAMPLES].tolist()
        ],
    )


def _closes(frame: pd.DataFrame, positions: np.ndarray) -> np.ndarray:
    if "close" not in frame.columns:
        return np.full(len(positions), np.nan)
    close = pd.to_numeric(frame["close"], errors="coerce")
    return close.to_numpy(dtype="float64", na_value=np.nan)[positions]


def _flat_runs(codes: np.ndarray, closes: np.ndarray) -> np.ndarray:
    """``[first index, length]`` of each run of one series' consecutive bars with one close."""
    if not len(closes):
        return np.empty((0, 2), dtype=np.int64)
    begins = np.ones(len(closes), dtype=bool)
    # NaN != NaN: each missing close is a run of its own, never a flat run.
    begins[1:] = (codes[1:] != codes[:-1]) | (closes[1:] != closes[:-1])
    firsts = np.flatnonzero(begins)
    lengths = np.diff(np.append(firsts, len(closes)))
    return np.column_stack([firsts, lengths])


def _series_names(frame: pd.DataFrame, codes: np.ndarray, series: int) -> list[str]:
    if series == 1 or "symbol" not in frame.columns:
        return [""] * series
    firsts = np.empty(series, dtype=np.int64)
    firsts[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)  # the last write is the first row
    # Take the few rows first: converting a million Arrow strings costs 60 ms.
    symbols = frame["symbol"].iloc[firsts].tolist()
    if "provider" in frame.columns:
        providers = frame["provider"].iloc[firsts].tolist()
        if len(set(providers)) > 1:
            return [f"{p}/{s}" for p, s in zip(providers, symbols, strict=True)]
    return [str(s) for s in symbols]


def _label(symbols: list[str], series: int, code: int, nanos: int) -> str:
    stamp = pd.Timestamp(int(nanos), tz="UTC").isoformat()
    return f"{symbols[code]} {stamp}" if series > 1 else stamp
