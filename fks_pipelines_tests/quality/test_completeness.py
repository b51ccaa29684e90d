"""Completeness against the trading calendar: gaps, repeats, open bars and flat runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fks_pipelines.market.calendars import expected_bar_opens
from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.completeness import check_completeness, default_stale_run

CRYPTO = Instrument(asset_class="crypto")
EQUITY = Instrument(asset_class="equity", calendar="XNYS")
HOUR = Interval.parse("1h")
DAY = pd.Timestamp("2024-01-02", tz="UTC")
NEXT_DAY = DAY + pd.Timedelta(days=1)


def bars(ts: pd.DatetimeIndex, symbol: str = "BTCUSDT", closes: np.ndarray | None = None):
    n = len(ts)
    closes = 100.0 + np.arange(n, dtype="float64") if closes is None else closes
    return build_frame(
        provider="binance",
        symbol=symbol,
        interval="1h",
        ts=ts,
        open=closes,
        high=closes,
        low=closes,
        close=closes,
        volume=np.ones(n),
    )


def day_of_hours(day: pd.Timestamp = DAY) -> pd.DatetimeIndex:
    return pd.date_range(day, periods=24, freq="h")


def test_a_full_crypto_day_is_complete() -> None:
    report = check_completeness(bars(day_of_hours()), CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY)

    assert (report.expected, report.present, report.missing, report.ratio) == (24, 24, 0, 1.0)
    assert (report.extra, report.duplicates, report.open_bars, report.outside) == (0, 0, 0, 0)
    assert report.missing_examples == []
    assert report.longest_flat_run == 1 and report.stale_runs == 0


def test_a_missing_crypto_hour_is_missing() -> None:
    frame = bars(day_of_hours().delete(13))

    report = check_completeness(frame, CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY)

    assert report.missing == 1
    assert report.missing_examples == ["2024-01-02T13:00:00+00:00"]
    assert report.ratio == pytest.approx(23 / 24)


def test_an_equity_weekend_is_not_a_gap() -> None:
    """Friday and Monday sessions of SPY, nothing over the weekend: nothing missing."""
    friday, tuesday = pd.Timestamp("2024-01-05", tz="UTC"), pd.Timestamp("2024-01-09", tz="UTC")
    sessions = expected_bar_opens(EQUITY, HOUR, friday, tuesday)
    assert sorted(set(sessions.day)) == [5, 8]  # the calendar expects no weekend bar

    report = check_completeness(bars(sessions, "SPY"), EQUITY, HOUR, friday, tuesday, tuesday)

    assert report.missing == 0
    assert report.ratio == 1.0
    assert report.expected == report.present == 14  # 7 regular-session hours a day


def test_equity_extended_hours_are_extra_not_missing() -> None:
    friday, saturday = pd.Timestamp("2024-01-05", tz="UTC"), pd.Timestamp("2024-01-06", tz="UTC")
    regular = expected_bar_opens(EQUITY, HOUR, friday, saturday)
    premarket = pd.date_range("2024-01-05 09:00", periods=5, freq="h", tz="UTC")

    frame = bars(premarket.append(regular).drop(regular[3:4]), "SPY")
    report = check_completeness(frame, EQUITY, HOUR, friday, saturday, saturday)

    assert report.extra == 5
    assert report.missing == 1
    assert report.missing_examples == [regular[3].isoformat()]


def test_a_repeated_bar_is_a_duplicate() -> None:
    ts = day_of_hours()
    frame = pd.concat([bars(ts), bars(ts[[7]])], ignore_index=True)

    report = check_completeness(frame, CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY)

    assert report.duplicates == 1
    assert report.present == 24 and report.missing == 0


def test_an_open_bar_is_reported_and_not_yet_expected() -> None:
    """At 10:30 the 10:00 bar is still open: stored anyway, it is an open bar."""
    now = DAY + pd.Timedelta(hours=10, minutes=30)
    frame = bars(day_of_hours()[:11])

    report = check_completeness(frame, CRYPTO, HOUR, DAY, NEXT_DAY, now=now)

    assert report.open_bars == 1
    assert report.expected == 10  # 00:00 to 09:00 have closed
    assert report.missing == 0 and report.ratio == 1.0


def test_rows_outside_the_window_are_counted_apart() -> None:
    frame = bars(pd.date_range(DAY - pd.Timedelta(hours=2), periods=28, freq="h"))

    report = check_completeness(frame, CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY)

    assert report.outside == 4
    assert report.present == 24 and report.missing == 0


def test_a_long_flat_run_is_stale() -> None:
    closes = 100.0 + np.arange(24, dtype="float64")
    closes[5:13] = 104.0  # bars 4..12 share one close: a run of 9

    report = check_completeness(
        bars(day_of_hours(), closes=closes), CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY
    )

    assert report.longest_flat_run == 9
    assert report.stale_run == default_stale_run(HOUR) == 6
    assert (report.stale_runs, report.stale_bars) == (1, 9)
    assert report.stale_examples == ["2024-01-02T04:00:00+00:00"]
    relaxed = check_completeness(
        bars(day_of_hours(), closes=closes), CRYPTO, HOUR, DAY, NEXT_DAY, NEXT_DAY, stale_run=10
    )
    assert relaxed.stale_runs == 0 and relaxed.longest_flat_run == 9


def test_default_stale_runs_follow_the_interval() -> None:
    assert default_stale_run(Interval.parse("1m")) == 12
    assert default_stale_run(Interval.parse("4h")) == 6
    assert default_stale_run(Interval.parse("1d")) == 3


def test_several_symbols_are_each_held_to_the_calendar() -> None:
    ts = day_of_hours()
    frame = pd.concat([bars(ts, "BTCUSDT"), bars(ts.delete([0, 1]), "ETHUSDT")])
    frame = frame.sort_values("ts", kind="stable", ignore_index=True)

    report = check_completeness(frame, CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY)

    assert report.series == 2
    assert (report.expected, report.present, report.missing) == (48, 46, 2)
    assert report.missing_examples == [
        "ETHUSDT 2024-01-02T00:00:00+00:00",
        "ETHUSDT 2024-01-02T01:00:00+00:00",
    ]
    assert report.duplicates == 0  # the same ts in two symbols is no repeat


def test_an_empty_frame_misses_everything_and_nothing_expected_is_complete() -> None:
    empty = bars(pd.DatetimeIndex([], tz="UTC"))

    report = check_completeness(empty, CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY)
    assert (report.expected, report.missing, report.ratio) == (24, 24, 0.0)
    assert len(report.missing_examples) == 5

    saturday, sunday = pd.Timestamp("2024-01-06", tz="UTC"), pd.Timestamp("2024-01-07", tz="UTC")
    weekend = check_completeness(empty, EQUITY, Interval.parse("1d"), saturday, sunday, sunday)
    assert (weekend.expected, weekend.ratio) == (0, 1.0)


def test_metadata_is_flat_and_plain() -> None:
    frame = bars(day_of_hours().delete(13))

    metadata = check_completeness(frame, CRYPTO, HOUR, DAY, NEXT_DAY, now=NEXT_DAY).as_metadata()

    assert metadata["bars_missing"] == 1
    assert metadata["completeness_ratio"] == pytest.approx(23 / 24)
    assert metadata["missing_examples"] == ["2024-01-02T13:00:00+00:00"]
    assert all(isinstance(value, int | float | list) for value in metadata.values())


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        check_completeness(bars(day_of_hours()), CRYPTO, HOUR, DAY, NEXT_DAY, pd.Timestamp(0))
