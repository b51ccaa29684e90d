"""Trading calendars: which UTC dates and bar opens each kind of instrument is expected to have.

Uses the real exchange_calendars data. Dates worth knowing (New York, 2024):
EST (UTC-5) until 10 March and from 3 November, EDT (UTC-4) in between; holidays on 4 July,
28 November (Thanksgiving) and 25 December; half days (close 13:00) on 29 November and 24 December.
"""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from fks_pipelines.market.calendars import bar_days, expected_bar_opens, has_bars
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument

CRYPTO = Instrument(asset_class="crypto")
XNYS = Instrument(asset_class="equity", calendar="XNYS")
XNAS = Instrument(asset_class="equity", calendar="XNAS")
XLON = Instrument(asset_class="equity", calendar="XLON")
XTKS = Instrument(asset_class="equity", calendar="XTKS")
UNKNOWN = Instrument(asset_class="equity", calendar="XNOPE")

M1, M30, H1, D1 = (Interval.parse(name) for name in ("1m", "30m", "1h", "1d"))


def utc(text: str) -> pd.Timestamp:
    """A UTC timestamp from an ISO-like string."""
    return pd.Timestamp(text, tz="UTC")


def days(first: date, last: date) -> list[date]:
    """Every date from ``first`` to ``last``, both included."""
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# --- bar_days -------------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [M1, H1, D1])
def test_crypto_has_bars_every_day(interval: Interval) -> None:
    week = days(date(2024, 12, 2), date(2024, 12, 8))  # Monday to Sunday
    assert bar_days(CRYPTO, interval, week[0], week[-1] + timedelta(days=1)) == week
    assert has_bars(CRYPTO, interval, date(2024, 12, 25))


def test_equity_daily_bars_are_the_sessions() -> None:
    # Thanksgiving week: no session on Thursday, a half day on Friday, none at the weekend.
    got = bar_days(XNYS, D1, date(2024, 11, 25), date(2024, 12, 3))
    assert got == [
        date(2024, 11, 25),
        date(2024, 11, 26),
        date(2024, 11, 27),
        date(2024, 11, 29),
        date(2024, 12, 2),
    ]


@pytest.mark.parametrize("interval", [M1, H1, D1])
@pytest.mark.parametrize("day", [date(2024, 12, 8), date(2024, 7, 7), date(2024, 3, 10)])
def test_no_equity_bars_on_sunday(interval: Interval, day: date) -> None:
    # Nothing trades on Saturday, so nothing can spill onto Sunday's UTC date.
    assert not has_bars(XNYS, interval, day)


@pytest.mark.parametrize(
    "holiday",
    [date(2024, 1, 1), date(2024, 7, 4), date(2024, 11, 28), date(2024, 12, 25)],
)
def test_no_daily_bars_on_a_holiday(holiday: date) -> None:
    assert not has_bars(XNYS, D1, holiday)
    assert holiday not in bar_days(XNYS, D1, date(2024, 1, 1), date(2025, 1, 1))


@pytest.mark.parametrize(
    ("holiday", "expected", "why"),
    [
        (date(2024, 7, 4), False, "summer: post-market ends 20:00 EDT = 00:00 UTC, exclusive"),
        (date(2024, 11, 28), True, "winter: Wednesday's post-market runs to 01:00 UTC Thursday"),
        (date(2024, 12, 25), False, "24 Dec is a half day: post-market ends 17:00 EST = 22:00"),
        (date(2024, 1, 1), False, "Friday 29 Dec 2023 spills into Saturday 30th, not Monday"),
    ],
)
def test_intraday_bars_on_a_holiday_come_only_from_the_evening_before(
    holiday: date, expected: bool, why: str
) -> None:
    assert has_bars(XNYS, H1, holiday) is expected, why
    assert has_bars(XNYS, M1, holiday) is expected, why


@pytest.mark.parametrize(
    ("saturday", "expected"),
    [
        (date(2024, 3, 9), True),  # EST: Friday's 20:00 close is 01:00 UTC Saturday
        (date(2024, 3, 16), False),  # EDT (from 10 March): 20:00 is 00:00 UTC, the exclusive end
        (date(2024, 11, 2), False),  # still EDT
        (date(2024, 11, 9), True),  # EST again (from 3 November)
        (date(2024, 11, 30), False),  # EST, but Friday was a half day: post-market ends 22:00 UTC
        (date(2024, 12, 7), True),
    ],
)
@pytest.mark.parametrize("instrument", [XNYS, XNAS])
def test_friday_post_market_spills_into_saturday_only_in_winter(
    instrument: Instrument, saturday: date, expected: bool
) -> None:
    assert has_bars(instrument, M1, saturday) is expected
    assert has_bars(instrument, H1, saturday) is expected
    assert not has_bars(instrument, D1, saturday)


def test_intraday_days_in_winter_and_summer_weeks() -> None:
    winter = bar_days(XNYS, H1, date(2024, 12, 2), date(2024, 12, 9))
    assert winter == days(date(2024, 12, 2), date(2024, 12, 7))  # Monday to Saturday
    summer = bar_days(XNYS, H1, date(2024, 7, 1), date(2024, 7, 8))
    assert summer == [date(2024, 7, 1), date(2024, 7, 2), date(2024, 7, 3), date(2024, 7, 5)]


def test_calendar_alias_resolves_to_the_exchange_and_its_extended_hours() -> None:
    nyse = Instrument(asset_class="equity", calendar="NYSE")
    start, end = date(2024, 11, 1), date(2024, 12, 31)
    assert bar_days(nyse, H1, start, end) == bar_days(XNYS, H1, start, end)


def test_exchange_without_extended_hours_falls_back_to_regular_hours() -> None:
    # London trades 08:00-16:30 local, well inside one UTC date: intraday days are the sessions.
    start, end = date(2024, 12, 1), date(2025, 1, 6)
    assert bar_days(XLON, H1, start, end) == bar_days(XLON, D1, start, end)
    assert not has_bars(XLON, H1, date(2024, 12, 25))


def test_empty_or_reversed_range_has_no_days() -> None:
    assert bar_days(XNYS, H1, date(2024, 12, 2), date(2024, 12, 2)) == []
    assert bar_days(CRYPTO, H1, date(2024, 12, 3), date(2024, 12, 2)) == []


@pytest.mark.parametrize("instrument", [CRYPTO, XNYS, XLON, XTKS])
@pytest.mark.parametrize("interval", [M1, H1, D1])
def test_has_bars_agrees_with_bar_days(instrument: Instrument, interval: Interval) -> None:
    start, end = date(2024, 2, 20), date(2024, 4, 10)  # spans the March DST change
    expected = set(bar_days(instrument, interval, start, end))
    for day in days(start, end - timedelta(days=1)):
        assert has_bars(instrument, interval, day) is (day in expected), day


# --- expected_bar_opens ---------------------------------------------------------------------


def test_crypto_expects_the_whole_grid() -> None:
    assert len(expected_bar_opens(CRYPTO, H1, utc("2024-12-02"), utc("2024-12-03"))) == 24
    assert len(expected_bar_opens(CRYPTO, M1, utc("2024-12-02"), utc("2024-12-03"))) == 1440
    week = expected_bar_opens(CRYPTO, D1, utc("2024-12-02"), utc("2024-12-09"))
    assert list(week) == list(pd.date_range("2024-12-02", periods=7, freq="D", tz="UTC"))
    # A window starting mid-bar expects the next open only; the end is exclusive.
    got = expected_bar_opens(CRYPTO, H1, utc("2024-12-02 10:30"), utc("2024-12-02 13:00"))
    assert list(got) == [utc("2024-12-02 11:00"), utc("2024-12-02 12:00")]


def test_equity_daily_opens_are_sessions_at_midnight_utc() -> None:
    week = expected_bar_opens(XNYS, D1, utc("2024-12-02"), utc("2024-12-09"))
    assert list(week) == list(pd.date_range("2024-12-02", periods=5, freq="D", tz="UTC"))
    thanksgiving = expected_bar_opens(XNYS, D1, utc("2024-11-25"), utc("2024-12-02"))
    assert len(thanksgiving) == 4
    assert utc("2024-11-28") not in thanksgiving


def test_winter_hour_bars_cover_the_regular_session() -> None:
    # Regular session 14:30-21:00 UTC: the 14:00 bar overlaps the open, 20:00 is the last.
    got = expected_bar_opens(XNYS, H1, utc("2024-12-02"), utc("2024-12-03"))
    assert list(got) == list(pd.date_range("2024-12-02 14:00", periods=7, freq="h", tz="UTC"))


def test_summer_hour_bars_shift_an_hour_earlier() -> None:
    # EDT: regular session 13:30-20:00 UTC.
    got = expected_bar_opens(XNYS, H1, utc("2024-07-01"), utc("2024-07-02"))
    assert list(got) == list(pd.date_range("2024-07-01 13:00", periods=7, freq="h", tz="UTC"))


def test_dst_change_moves_the_first_open() -> None:
    got = expected_bar_opens(XNYS, H1, utc("2024-03-08"), utc("2024-03-12"))
    assert got[0] == utc("2024-03-08 14:00")  # Friday, EST
    assert got[7] == utc("2024-03-11 13:00")  # Monday, EDT
    assert len(got) == 14


def test_minute_and_half_hour_counts_on_a_normal_day() -> None:
    minutes = expected_bar_opens(XNYS, M1, utc("2024-12-02"), utc("2024-12-03"))
    assert len(minutes) == 390
    assert (minutes[0], minutes[-1]) == (utc("2024-12-02 14:30"), utc("2024-12-02 20:59"))
    assert len(expected_bar_opens(XNYS, M30, utc("2024-12-02"), utc("2024-12-03"))) == 13


def test_half_day_stops_at_the_early_close() -> None:
    # 29 Nov 2024 closes at 13:00 EST = 18:00 UTC.
    hours = expected_bar_opens(XNYS, H1, utc("2024-11-29"), utc("2024-11-30"))
    assert list(hours) == list(pd.date_range("2024-11-29 14:00", periods=4, freq="h", tz="UTC"))
    minutes = expected_bar_opens(XNYS, M1, utc("2024-11-29"), utc("2024-11-30"))
    assert len(minutes) == 210
    assert minutes[-1] == utc("2024-11-29 17:59")


def test_no_opens_on_holidays_or_weekends() -> None:
    for start in ("2024-07-04", "2024-11-28", "2024-12-25", "2024-12-07", "2024-12-08"):
        window = (utc(start), utc(start) + pd.Timedelta(days=1))
        assert len(expected_bar_opens(XNYS, M1, *window)) == 0, start


def test_window_bounds_clip_the_session() -> None:
    got = expected_bar_opens(XNYS, H1, utc("2024-12-02 15:30"), utc("2024-12-02 18:00"))
    assert list(got) == [utc("2024-12-02 16:00"), utc("2024-12-02 17:00")]


def test_midday_break_is_not_expected() -> None:
    # Tokyo: 09:00-11:30 and 12:30-15:30 JST = 00:00-02:30 and 03:30-06:30 UTC.
    minutes = expected_bar_opens(XTKS, M1, utc("2024-12-02"), utc("2024-12-03"))
    assert len(minutes) == 150 + 180
    assert utc("2024-12-02 03:00") not in minutes
    # An hour bar overlapping either side of the break is still expected, once.
    hours = expected_bar_opens(XTKS, H1, utc("2024-12-02"), utc("2024-12-03"))
    assert list(hours) == list(pd.date_range("2024-12-02", periods=7, freq="h", tz="UTC"))


def test_opens_are_utc_nanoseconds_ascending_and_unique() -> None:
    for instrument, interval in [(CRYPTO, M1), (XNYS, M1), (XNYS, D1), (XTKS, H1)]:
        got = expected_bar_opens(instrument, interval, utc("2024-01-01"), utc("2024-03-01"))
        assert got.dtype == pd.DatetimeTZDtype(unit="ns", tz="UTC")
        assert got.is_monotonic_increasing
        assert got.is_unique


@pytest.mark.parametrize("instrument", [XNYS, XLON, XTKS])
@pytest.mark.parametrize("interval", [M30, H1, D1])
def test_every_expected_open_falls_on_a_bar_day(instrument: Instrument, interval: Interval) -> None:
    opens = expected_bar_opens(instrument, interval, utc("2024-01-01"), utc("2025-01-01"))
    expected_days = bar_days(instrument, interval, date(2024, 1, 1), date(2025, 1, 1))
    assert set(opens.date) <= set(expected_days)


def test_empty_window_has_no_opens() -> None:
    assert len(expected_bar_opens(XNYS, H1, utc("2024-12-03"), utc("2024-12-02"))) == 0


# --- errors ---------------------------------------------------------------------------------


def test_unknown_calendar_code_is_named() -> None:
    with pytest.raises(ValueError, match="unknown exchange calendar 'XNOPE'"):
        bar_days(UNKNOWN, D1, date(2024, 1, 1), date(2024, 2, 1))
    with pytest.raises(ValueError, match="'XNOPE'"):
        has_bars(UNKNOWN, H1, date(2024, 1, 2))
    with pytest.raises(ValueError, match="'XNOPE'"):
        expected_bar_opens(UNKNOWN, H1, utc("2024-01-01"), utc("2024-01-02"))


@pytest.mark.parametrize(
    ("start", "end"),
    [(date(1990, 1, 1), date(1990, 2, 1)), (date(2024, 1, 1), date(2100, 1, 1))],
)
def test_dates_outside_the_calendar_raise_a_clear_error(start: date, end: date) -> None:
    with pytest.raises(ValueError, match=r"XNYS: dates .* outside the range"):
        bar_days(XNYS, D1, start, end)
    with pytest.raises(ValueError, match="outside the range"):
        expected_bar_opens(XNYS, H1, pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"))


def test_calendar_reaches_back_to_2000() -> None:
    assert bar_days(XNYS, D1, date(2000, 1, 3), date(2000, 1, 8)) == days(
        date(2000, 1, 3), date(2000, 1, 7)
    )


def test_calendar_that_cannot_reach_2000_starts_at_its_own_earliest_date() -> None:
    # exchange_calendars evaluates Saudi Exchange (XSAU) holidays from 2021 only.
    xsau = Instrument(asset_class="equity", calendar="XSAU")
    assert has_bars(xsau, D1, date(2024, 12, 2))
    with pytest.raises(ValueError, match=r"XSAU: dates .* outside the range"):
        bar_days(xsau, D1, date(2019, 1, 1), date(2019, 2, 1))


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        expected_bar_opens(XNYS, H1, pd.Timestamp("2024-12-02"), utc("2024-12-03"))
