"""When a day's bars are due: the newest finished UTC day a provider should have stored by now.

OHLCV partitions are whole UTC days, stored by a run shortly after the day closes. A day is due
once ``lag`` (the provider's freshness lag) has passed since it closed; a day without bars for
the instrument (a weekend or holiday for an equity) is never due, so the newest due day is the
last one that has bars.
"""

from datetime import date, timedelta

import pandas as pd

from fks_pipelines.market.calendars import has_bars
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument

# Long enough to pass any exchange's longest closure (e.g. a holiday weekend).
LOOKBACK_DAYS = 10


def due_days(
    instrument: Instrument,
    interval: Interval,
    now: pd.Timestamp,
    lag: timedelta,
    start: date,
    count: int = 1,
) -> list[date]:
    """The newest ``count`` UTC days with bars that closed at least ``lag`` before ``now``,
    newest first: the day due now, then the ones due before it.

    Fewer when no more fall on or after ``start`` (the first partition) within
    :data:`LOOKBACK_DAYS` of the last one found.
    """
    days: list[date] = []
    day = (now.tz_convert("UTC") - lag).date() - timedelta(days=1)
    gap = 0
    while len(days) < count and day >= start and gap < LOOKBACK_DAYS:
        if has_bars(instrument, interval, day):
            days.append(day)
            gap = 0
        else:
            gap += 1
        day -= timedelta(days=1)
    return days


def due_day(
    instrument: Instrument, interval: Interval, now: pd.Timestamp, lag: timedelta, start: date
) -> date | None:
    """The newest UTC day with bars that closed at least ``lag`` before ``now``, or None (see
    :func:`due_days`)."""
    days = due_days(instrument, interval, now, lag, start)
    return days[0] if days else None


def overdue(day: date, now: pd.Timestamp, lag: timedelta) -> timedelta:
    """How long past its deadline (close + ``lag``) day ``day`` is at ``now``."""
    deadline = pd.Timestamp(day + timedelta(days=1), tz="UTC") + lag
    return max(now.tz_convert("UTC") - deadline, pd.Timedelta(0)).to_pytimedelta()
