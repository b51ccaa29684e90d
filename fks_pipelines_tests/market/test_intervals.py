"""Bar intervals: which names parse, and how many bars open in a window."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval


def utc(text: str) -> pd.Timestamp:
    """A UTC timestamp from an ISO-like string."""
    return pd.Timestamp(text, tz="UTC")


@pytest.mark.parametrize(
    ("name", "seconds"),
    [("1m", 60), ("15m", 900), ("1h", 3600), ("4h", 14400), ("1d", 86400)],
)
def test_parses_supported_intervals(name: str, seconds: int) -> None:
    interval = Interval.parse(name)
    assert interval == Interval(name=name, seconds=seconds)
    assert interval.ms == seconds * 1000
    assert interval.delta == timedelta(seconds=seconds)
    assert interval.offset == pd.Timedelta(seconds=seconds)
    assert str(interval) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("1M", "use <n>m"),  # a month on Binance, not a minute
        ("1w", "use <n>m"),
        ("0h", "use <n>m"),
        ("abc", "use <n>m"),
        ("", "use <n>m"),
        ("h", "use <n>m"),
        ("-1h", "use <n>m"),
        ("7m", "tile a UTC day"),
        ("5h", "tile a UTC day"),
        ("2d", "tile a UTC day"),
    ],
)
def test_rejects_unsupported_intervals(name: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as excinfo:
        Interval.parse(name)
    assert repr(name) in str(excinfo.value)


@pytest.mark.parametrize(
    ("interval", "start", "end", "bars"),
    [
        ("1h", "2024-01-01 00:00", "2024-01-02 00:00", 24),
        ("1m", "2024-01-01 00:00", "2024-01-02 00:00", 1440),
        ("15m", "2024-01-01 00:00", "2024-01-01 01:00", 4),
        ("4h", "2024-01-01 00:00", "2024-01-02 00:00", 6),
        ("1d", "2024-01-01 00:00", "2024-01-02 00:00", 1),
        ("1d", "2024-01-01 00:00", "2024-01-08 00:00", 7),
    ],
)
def test_bars_between_aligned_bounds(interval: str, start: str, end: str, bars: int) -> None:
    assert Interval.parse(interval).bars_between(utc(start), utc(end)) == bars


@pytest.mark.parametrize(
    ("interval", "start", "end", "bars"),
    [
        # start off the grid: the first bar is the next grid point (00:15, 00:30, 00:45)
        ("15m", "2024-01-01 00:07", "2024-01-01 01:00", 3),
        # end off the grid: the bar opening at 01:00 is inside [start, end)
        ("15m", "2024-01-01 00:00", "2024-01-01 01:05", 5),
        ("15m", "2024-01-01 00:07", "2024-01-01 01:05", 4),
        ("1h", "2024-01-01 00:00:00.000000001", "2024-01-01 03:00", 2),
        ("1h", "2024-01-01 00:30", "2024-01-01 00:59", 0),
        ("1d", "2023-12-31 12:00", "2024-01-02 12:00", 2),
    ],
)
def test_bars_between_unaligned_bounds(interval: str, start: str, end: str, bars: int) -> None:
    assert Interval.parse(interval).bars_between(utc(start), utc(end)) == bars


@pytest.mark.parametrize(
    ("start", "end"),
    [("2024-01-01 01:00", "2024-01-01 01:00"), ("2024-01-01 02:00", "2024-01-01 01:00")],
)
def test_bars_between_empty_window(start: str, end: str) -> None:
    assert Interval.parse("1h").bars_between(utc(start), utc(end)) == 0


def test_bars_between_end_is_exclusive() -> None:
    interval = Interval.parse("1h")
    assert interval.bars_between(utc("2024-01-01 00:00"), utc("2024-01-01 01:00")) == 1
    assert interval.bars_between(utc("2024-01-01 00:00"), utc("2024-01-01 01:00:00.001")) == 2
