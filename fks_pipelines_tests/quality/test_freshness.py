"""Which day's bars are due when, on 24/7 and exchange calendars."""

from datetime import date, timedelta

import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.freshness import due_day, overdue

CRYPTO = Instrument(asset_class="crypto")
EQUITY = Instrument(asset_class="equity", calendar="XNYS")
DAILY = Interval.parse("1d")
START = date(2024, 1, 1)


def at(ts: str) -> pd.Timestamp:
    return pd.Timestamp(ts, tz="UTC")


def test_a_day_is_due_once_its_lag_has_passed() -> None:
    lag = timedelta(minutes=30)
    assert due_day(CRYPTO, DAILY, at("2024-07-10T00:29"), lag, START) == date(2024, 7, 8)
    assert due_day(CRYPTO, DAILY, at("2024-07-10T00:30"), lag, START) == date(2024, 7, 9)


def test_an_equity_is_due_for_its_last_session_over_a_holiday_weekend() -> None:
    lag = timedelta(hours=6)
    # Monday 2 September 2024 is Labor Day: on Tuesday morning the last session is Friday's.
    assert due_day(EQUITY, DAILY, at("2024-09-03T07:00"), lag, START) == date(2024, 8, 30)


def test_nothing_is_due_before_the_first_partition() -> None:
    assert due_day(CRYPTO, DAILY, at("2024-01-01T12:00"), timedelta(0), START) is None


def test_overdue_counts_from_the_deadline() -> None:
    lag = timedelta(hours=1)
    assert overdue(date(2024, 7, 9), at("2024-07-10T03:00"), lag) == timedelta(hours=2)
    assert overdue(date(2024, 7, 9), at("2024-07-10T00:10"), lag) == timedelta(0)
