"""Trading calendars: on which UTC dates, and at which times, an instrument is expected to trade.

OHLCV assets are partitioned by UTC date, but exchanges trade on local sessions. This module
translates one into the other with ``exchange_calendars``:

- crypto trades around the clock, so every UTC date and every bar of the interval grid is expected;
- equity daily bars exist exactly on the exchange's sessions, each stamped with its session date at
  00:00 UTC;
- equity intraday bars exist on every UTC date touched by a session's *extended* hours (intraday
  vendors such as Polygon include pre- and post-market bars), but completeness is only judged
  against the *regular* session, because extended-hours bars are sparse: a minute without a trade
  has no bar.

Calendars are built once per process and cover 1990-01-01 (or the calendar's own earliest date) to
about a year ahead; dates outside that range raise :class:`CalendarRangeError` (a ``ValueError``)
instead of guessing. The universe refuses a ``start_date`` before :data:`FIRST_DAY`, and an asset
checks its window with :func:`require_range` before fetching, so a date the calendar cannot serve
fails before anything is written.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, time, timedelta

import numpy as np
import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument

_EARLIEST = pd.Timestamp("1990-01-01")
FIRST_DAY: date = (_EARLIEST + pd.Timedelta(days=1)).date()
"""The first UTC date any calendar here can answer for (one day is kept off each end)."""


class CalendarRangeError(ValueError):
    """Dates outside the range an exchange calendar covers: a retry cannot mend it."""


_ONE_DAY = pd.Timedelta(days=1)
_ONE_NS = pd.Timedelta(1, "ns")
_DAY_SECONDS = 86400


@dataclass(frozen=True)
class _ExtendedHours:
    """Trading outside the regular session, as intraday vendors report it.

    Attributes:
        pre_open: Local wall-clock time at which pre-market trading starts on a session date.
        post_close: How long post-market trading runs after the regular close. A duration rather
            than a clock time because it follows early closes: on a US half day the regular close
            is 13:00 and post-market ends at 17:00, not 20:00.
    """

    pre_open: time
    post_close: timedelta


# exchange_calendars only knows regular hours. US intraday vendors (Polygon in particular) also
# return pre-market (from 04:00 ET) and post-market (to 20:00 ET) bars, and in winter 20:00 ET is
# 01:00 UTC the next day, so a Friday session puts bars on Saturday's UTC partition. Vendors we use
# for other exchanges report regular hours only, so a calendar without an entry here falls back to
# its regular open and close.
_EXTENDED_HOURS: dict[str, _ExtendedHours] = {
    "XNYS": _ExtendedHours(pre_open=time(4, 0), post_close=timedelta(hours=4)),
    "XNAS": _ExtendedHours(pre_open=time(4, 0), post_close=timedelta(hours=4)),
}


@dataclass(frozen=True)
class _Calendar:
    """One exchange's sessions, precomputed in the shapes this module's functions need.

    Attributes:
        name: The canonical calendar code (aliases such as ``NYSE`` resolve to ``XNYS``).
        first_day: The first UTC date the calendar can answer for.
        last_day: The last UTC date the calendar can answer for.
        session_days: Session dates, tz-naive midnight, ascending.
        intraday_days: UTC dates touched by any session's extended hours, tz-naive, ascending.
        opens: Regular session opens, UTC, one per session.
        closes: Regular session closes, UTC, one per session.
        break_starts: Start of the midday break, UTC, ``NaT`` where the session has none.
        break_ends: End of the midday break, UTC, ``NaT`` where the session has none.
    """

    name: str
    first_day: date
    last_day: date
    session_days: pd.DatetimeIndex
    intraday_days: pd.DatetimeIndex
    opens: pd.DatetimeIndex
    closes: pd.DatetimeIndex
    break_starts: pd.DatetimeIndex
    break_ends: pd.DatetimeIndex

    def require_covers(self, first: date, last: date) -> None:
        """Raise ``ValueError`` unless ``[first, last]`` lies within the calendar's range."""
        if first < self.first_day or last > self.last_day:
            raise CalendarRangeError(
                f"{self.name}: dates {first}..{last} are outside the range the trading calendar "
                f"covers ({self.first_day}..{self.last_day})"
            )


@functools.cache
def _calendar(code: str) -> _Calendar:
    """Build one exchange's calendar, once per process: ``get_calendar`` takes about 0.2 s."""
    # Imported here, not with the module: exchange_calendars takes 0.06-0.15 s to import, and
    # loading the code location imports this module (schedules, checks) without building a
    # calendar; only a run's checks or a schedule's tick on an equity need one.
    import exchange_calendars as xc
    from exchange_calendars.errors import InvalidCalendarName

    try:
        calendar = xc.get_calendar(code, start=_EARLIEST)
    except InvalidCalendarName:
        raise ValueError(
            f"unknown exchange calendar {code!r}: use an exchange_calendars code such as XNYS "
            "(exchange_calendars.get_calendar_names() lists them)"
        ) from None
    except ValueError:
        # A few calendars (lunar holidays, e.g. XSAU) cannot be evaluated back to 2000: start
        # them at their own earliest date instead.
        bound_min = type(xc.get_calendar(code)).bound_min()
        calendar = xc.get_calendar(code, start=bound_min)
    start = max(_EARLIEST, type(calendar).bound_min() or _EARLIEST)
    end = type(calendar).default_end()

    schedule = calendar.schedule
    session_days = pd.DatetimeIndex(schedule.index).as_unit("ns")
    opens = pd.DatetimeIndex(schedule["open"]).as_unit("ns")
    closes = pd.DatetimeIndex(schedule["close"]).as_unit("ns")

    extended = _EXTENDED_HOURS.get(calendar.name)
    if extended is None:
        first_trade, last_trade = opens, closes
    else:
        pre_open = pd.Timedelta(hours=extended.pre_open.hour, minutes=extended.pre_open.minute)
        # Localise wall-clock times on the session date: the UTC offset follows DST per session.
        first_trade = (session_days + pre_open).tz_localize(calendar.tz).tz_convert("UTC")
        last_trade = closes + pd.Timedelta(extended.post_close)
    # Trading hours are shorter than a day, so a session touches at most the UTC dates of its
    # first and last trading instants; the end is exclusive, hence the nanosecond.
    touched = (
        first_trade.tz_localize(None)
        .normalize()
        .append((last_trade - _ONE_NS).tz_localize(None).normalize())
    )

    return _Calendar(
        name=calendar.name,
        # A session can spill onto the UTC date before or after it, so the edge dates of the
        # calendar are not fully known: keep one day off each end.
        first_day=(start + _ONE_DAY).date(),
        last_day=(end - _ONE_DAY).date(),
        session_days=session_days,
        intraday_days=touched.unique().sort_values(),
        opens=opens,
        closes=closes,
        break_starts=pd.DatetimeIndex(schedule["break_start"]).as_unit("ns"),
        break_ends=pd.DatetimeIndex(schedule["break_end"]).as_unit("ns"),
    )


def _equity_calendar(instrument: Instrument) -> _Calendar:
    # Instrument guarantees equities have a calendar; the check keeps type checkers honest.
    if instrument.calendar is None:
        raise ValueError(f"{instrument.asset_class} instrument has no exchange calendar")
    return _calendar(instrument.calendar)


def _is_daily(interval: Interval) -> bool:
    return interval.seconds == _DAY_SECONDS


def _utc(ts: pd.Timestamp, name: str) -> pd.Timestamp:
    if ts.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {ts}")
    return ts.tz_convert("UTC").as_unit("ns")


def require_range(instrument: Instrument, first: date, last: date) -> None:
    """Raise :class:`CalendarRangeError` unless ``instrument``'s calendar covers ``first..last``.

    Crypto needs no calendar and is always covered. Assets call this before fetching, so that a
    window the checks could not judge fails before anything is stored.
    """
    if instrument.asset_class == "crypto":
        return
    _equity_calendar(instrument).require_covers(first, last)


def sessions_before(instrument: Instrument, interval: Interval, start: date, bars: int) -> date:
    """A UTC date at or before which ``instrument`` has at least ``bars`` bars of ``interval``
    opening before ``start`` (clamped to the calendar's first day): where to read ``bars`` bars
    of history from.

    Crypto and intraday bars use the interval grid with a margin (an equity session holds at
    least one intraday bar per hour of its session); equity daily bars count sessions.
    """
    if instrument.asset_class == "crypto" or not _is_daily(interval):
        per_day = max(1, _DAY_SECONDS // interval.seconds)
        if instrument.asset_class != "crypto":
            per_day = max(1, min(per_day, 6 * 3600 // interval.seconds))  # a half day's hours
        days = -(-bars // per_day) * (1 if instrument.asset_class == "crypto" else 2) + 4
        first = start - timedelta(days=days)
    else:
        calendar = _equity_calendar(instrument)
        sessions = calendar.session_days
        at = int(sessions.searchsorted(pd.Timestamp(start)))
        first = sessions[max(0, at - bars)].date() if at else start
    if instrument.asset_class != "crypto":
        first = max(first, _equity_calendar(instrument).first_day)
    return first


def _session_positions(code: str, days: pd.DatetimeIndex) -> np.ndarray:
    """Each day's position among the calendar's sessions (-1 for a day that is not one).

    Raises:
        CalendarRangeError: A day falls outside the calendar's range.
    """
    calendar = _calendar(code)
    index = pd.DatetimeIndex(days)
    index = (index.tz_convert(None) if index.tz is not None else index).as_unit("ns").normalize()
    if len(index) == 0:
        return np.empty(0, dtype=np.intp)
    calendar.require_covers(index.min().date(), index.max().date())
    return calendar.session_days.get_indexer(index)


def session_fractions(code: str, days: pd.DatetimeIndex) -> np.ndarray:
    """Each session's regular length over the calendar's usual length (1.0 for a full day,
    about 0.54 for an XNYS half day); NaN for a day that is not a session.

    Volume on a half day is judged against this fraction of a normal day's volume.

    Raises:
        CalendarRangeError: A day falls outside the calendar's range.
    """
    found = _session_positions(code, days)
    return np.where(found >= 0, _relative_lengths(code)[np.maximum(found, 0)], np.nan)


def holiday_neighbours(code: str, days: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
    """Per session in ``days``: ``(before_holiday, after_holiday)``, whether the market closes
    on a weekday right after the session, and right before it; False for a non-session.

    Raises:
        CalendarRangeError: A day falls outside the calendar's range.
    """
    found = _session_positions(code, days)
    closed_after, closed_before = _closed_weekdays(code)
    ok = found >= 0
    at = np.maximum(found, 0)
    return ok & closed_after[at], ok & closed_before[at]


@functools.cache
def _closed_weekdays(code: str) -> tuple[np.ndarray, np.ndarray]:
    """Per session of the calendar: a weekday closure right after it, right before it."""
    sessions = _calendar(code).session_days.values.astype("datetime64[D]")
    # Weekdays strictly between each session and the next one.
    between = np.busday_count(sessions[:-1] + 1, sessions[1:]) > 0
    return np.append(between, False), np.insert(between, 0, False)


@functools.cache
def _relative_lengths(code: str) -> np.ndarray:
    calendar = _calendar(code)
    lengths = (calendar.closes - calendar.opens).asi8.astype("float64")
    return lengths / float(np.median(lengths))


def bar_days(instrument: Instrument, interval: Interval, start: date, end: date) -> list[date]:
    """The UTC dates in ``[start, end)`` on which bars of ``interval`` are expected.

    Crypto: every date. Equity daily bars: the exchange's sessions. Equity intraday bars: every
    UTC date touched by a session's extended hours (for XNYS, 04:00-20:00 New York time), so a
    winter Friday's post-market puts bars on Saturday and a holiday's UTC date can still hold the
    previous evening's bars.

    Args:
        instrument: The instrument; equities name their exchange calendar.
        interval: The bar interval.
        start: First UTC date, inclusive.
        end: Last UTC date, exclusive.

    Returns:
        The expected dates, ascending.

    Raises:
        ValueError: The calendar code is unknown, or the dates fall outside its range.
    """
    if start >= end:
        return []
    if instrument.asset_class == "crypto":
        return [start + timedelta(days=n) for n in range((end - start).days)]
    calendar = _equity_calendar(instrument)
    calendar.require_covers(start, end - timedelta(days=1))
    days = calendar.session_days if _is_daily(interval) else calendar.intraday_days
    lo, hi = days.searchsorted([pd.Timestamp(start), pd.Timestamp(end)])
    return days[lo:hi].date.tolist()


def has_bars(instrument: Instrument, interval: Interval, day: date) -> bool:
    """Whether bars of ``interval`` are expected on UTC date ``day`` (see :func:`bar_days`).

    Raises:
        ValueError: The calendar code is unknown, or ``day`` falls outside its range.
    """
    return bool(bar_days(instrument, interval, day, day + timedelta(days=1)))


def expected_bar_opens(
    instrument: Instrument, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
) -> pd.DatetimeIndex:
    """Bar open times a complete series has in ``[start, end)``, for completeness checks.

    Crypto: the whole interval grid. Equity daily bars: each session date at 00:00 UTC. Equity
    intraday bars: the opens on the interval's UTC grid whose bar overlaps the *regular* session
    (half days included; a midday break is not a gap), so an hour bar opening at 13:00 UTC is
    expected when the session opens at 13:30. Extended hours are left out on purpose: a minute
    without a trade has no bar, and pre/post-market minutes often have none.

    Args:
        instrument: The instrument; equities name their exchange calendar.
        interval: The bar interval.
        start: Window start, inclusive, timezone-aware.
        end: Window end, exclusive, timezone-aware.

    Returns:
        Ascending bar open times, UTC, nanosecond resolution.

    Raises:
        ValueError: A bound is naive, the calendar code is unknown, or the window falls outside
            the calendar's range.
    """
    start, end = _utc(start, "start"), _utc(end, "end")
    if start >= end:
        return pd.DatetimeIndex([], dtype="datetime64[ns, UTC]")
    if instrument.asset_class == "crypto":
        return pd.date_range(
            start.ceil(interval.offset), end, freq=interval.offset, inclusive="left", unit="ns"
        )

    calendar = _equity_calendar(instrument)
    calendar.require_covers(start.date(), (end - _ONE_NS).date())
    if _is_daily(interval):
        days = calendar.session_days.tz_localize("UTC")
        lo, hi = days.searchsorted([start, end])
        return pd.DatetimeIndex(days[lo:hi], freq=None)

    # Sessions overlapping the window, each as one or two trading segments (split at a midday
    # break): a bar that lies wholly inside the break has no trades and is not expected.
    in_window = (calendar.closes > start) & (calendar.opens < end)
    opens, closes = calendar.opens[in_window], calendar.closes[in_window]
    break_starts = calendar.break_starts[in_window]
    break_ends = calendar.break_ends[in_window]
    has_break = np.asarray(break_starts.notna())
    segment_starts = opens.append(break_ends[has_break])
    segment_ends = closes.where(~has_break, break_starts).append(closes[has_break])

    # Grid bars overlapping [a, b) open from floor(a) to floor(b - 1ns): expand every segment's
    # range at once instead of looping over sessions.
    step = interval.offset.value
    first = segment_starts.floor(interval.offset).asi8
    last = (segment_ends - _ONE_NS).floor(interval.offset).asi8
    counts = (last - first) // step + 1
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    nanos = np.sort(np.repeat(first, counts) + within * step)
    # A bar spanning a break (or the gap between two sessions) is counted once. Sort and compare
    # neighbours instead of np.unique, which hashes and is ten times slower on minute bars.
    keep = np.ones(len(nanos), dtype=bool)
    keep[1:] = nanos[1:] != nanos[:-1]
    nanos = nanos[keep]
    bars = pd.DatetimeIndex(nanos.view("datetime64[ns]")).tz_localize("UTC")
    return bars[(bars >= start) & (bars < end)]


def session_closes(code: str, days: pd.DatetimeIndex | list[date]) -> pd.DatetimeIndex:
    """The regular close of each of ``days`` on exchange calendar ``code``, for stamping a
    price with the moment it was true (a closing price, a closing-auction print).

    Half days close early (XNYS: 13:00 New York). A day that is not a session (weekend, holiday)
    gets ``NaT``.

    Args:
        code: An exchange_calendars code, e.g. ``XNYS``.
        days: Session dates: tz-naive timestamps (any time of day is ignored) or dates.

    Returns:
        UTC closes, nanosecond resolution, one per day, in the order given.

    Raises:
        ValueError: The calendar code is unknown, ``days`` are timezone-aware, or a day falls
            outside the calendar's range.
    """
    index = pd.DatetimeIndex(days)
    if index.tz is not None:
        raise ValueError("session_closes takes session dates, not timezone-aware instants")
    if index.hasnans:
        raise ValueError("session_closes takes session dates, got NaT")
    calendar = _calendar(code)
    if len(index) == 0:
        return pd.DatetimeIndex([], dtype="datetime64[ns, UTC]")
    index = index.as_unit("ns").normalize()
    calendar.require_covers(index.min().date(), index.max().date())
    found = calendar.session_days.get_indexer(index)
    closes = calendar.closes[np.maximum(found, 0)]
    return pd.DatetimeIndex(closes.where(found >= 0), freq=None).rename(None)
