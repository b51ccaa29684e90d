"""Partitions of the OHLCV assets: UTC date x symbol, and how a set of them is cut into work.

A run covers one partition or a range of them (a backfill under ``BackfillPolicy``, a schedule
tick for several symbols). :func:`blocks` cuts a run's partitions into rectangles of symbols x
consecutive days, so that an asset fetches each symbol's days as one window and writes each
rectangle once. :func:`run_ranges` does the converse for launching: it groups partitions into
the ``[first, last]`` ranges a run can name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import pandas as pd

DATE = "date"
SYMBOL = "symbol"

# Dagster's run tags for a partition range (a run over several partitions; the backfill daemon
# sets the same ones when it applies a BackfillPolicy).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def day_symbol_partitions(start: date, symbols: Sequence[str]) -> dg.MultiPartitionsDefinition:
    """``date`` (daily, UTC, finished days only) x ``symbol``; keys read ``2024-01-05|BTCUSDT``."""
    return dg.MultiPartitionsDefinition(
        {
            DATE: dg.DailyPartitionsDefinition(start_date=start.isoformat()),
            SYMBOL: dg.StaticPartitionsDefinition(list(symbols)),
        }
    )


def partition_key(day: date, symbol: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DATE: day.isoformat(), SYMBOL: symbol})


@dataclass(frozen=True)
class DaySymbol:
    """One partition: a symbol's bars opening in ``[start, end)`` of one UTC day."""

    symbol: str
    start: pd.Timestamp

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=1)

    @property
    def day(self) -> date:
        return self.start.date()

    @classmethod
    def from_key(cls, key: str | dg.MultiPartitionKey) -> DaySymbol:
        if not isinstance(key, dg.MultiPartitionKey):
            dims = dict(zip((DATE, SYMBOL), key.split("|"), strict=True))
        else:
            dims = key.keys_by_dimension
        return cls(symbol=dims[SYMBOL], start=pd.Timestamp(dims[DATE], tz="UTC"))


@dataclass(frozen=True)
class Block:
    """Partitions written together: ``symbols`` over the consecutive UTC days ``[start, end)``."""

    symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp

    @property
    def days(self) -> list[date]:
        return [d.date() for d in pd.date_range(self.start, self.end, freq="D", inclusive="left")]


def rows_by_partition(frame: pd.DataFrame, block: Block) -> dict[str, int]:
    """Rows of ``frame`` in each partition of ``block`` (0 for a partition without bars)."""
    counts = frame.groupby(
        [frame["symbol"].astype(str), frame["ts"].dt.floor("D")], observed=True
    ).size()
    return {
        str(partition_key(day, symbol)): int(counts.get((symbol, pd.Timestamp(day, tz="UTC")), 0))
        for symbol in block.symbols
        for day in block.days
    }


def blocks(keys: Iterable[str | dg.MultiPartitionKey]) -> list[Block]:
    """Cut partitions into the fewest blocks whose symbols share one run of consecutive days.

    A range run holds one dimension fixed (one symbol over many days, or one day over several
    symbols), which gives one block; any other set still gives blocks that cover it exactly.
    """
    days_by_symbol: dict[str, set[date]] = defaultdict(set)
    for key in keys:
        part = DaySymbol.from_key(key)
        days_by_symbol[part.symbol].add(part.day)
    symbols_by_span: dict[tuple[date, date], list[str]] = defaultdict(list)
    for symbol, days in days_by_symbol.items():
        for first, last in _day_runs(days):
            symbols_by_span[(first, last)].append(symbol)
    return [
        Block(
            symbols=tuple(symbols),
            start=pd.Timestamp(first, tz="UTC"),
            end=pd.Timestamp(last + timedelta(days=1), tz="UTC"),
        )
        for (first, last), symbols in sorted(symbols_by_span.items())
    ]


def run_ranges(
    keys: Iterable[str | dg.MultiPartitionKey],
    symbol_order: Sequence[str],
    max_partitions: int,
    per_symbol: bool = False,
) -> list[tuple[str, str]]:
    """``(first, last)`` partition keys of the fewest runs that cover ``keys``, as a backfill
    would cut them.

    Like Dagster's backfills under a ``BackfillPolicy``, a range holds one dimension fixed: each
    symbol's consecutive days (at most ``max_partitions`` long), or each day's adjacent symbols
    (in ``symbol_order``, the static dimension's order). Whichever gives fewer runs is taken, so
    that the runs of many symbols over a few days grow with the days, not with the symbols; on a
    tie, ranges of days, whose symbol a run fetches as one window. ``per_symbol`` takes ranges
    of days whatever their number: a symbol that fails then fails only its own runs.
    """
    parts = [DaySymbol.from_key(key) for key in keys]
    if not parts:
        return []
    by_symbol = _symbol_ranges(parts, symbol_order, max_partitions)
    if per_symbol:
        return by_symbol
    by_day = _day_ranges(parts, symbol_order, max_partitions)
    return by_day if len(by_day) < len(by_symbol) else by_symbol


def _day_ranges(
    parts: Sequence[DaySymbol], symbol_order: Sequence[str], max_partitions: int
) -> list[tuple[str, str]]:
    """Per day, its adjacent symbols as ranges of at most ``max_partitions``."""
    position = {symbol: i for i, symbol in enumerate(symbol_order)}
    indices_by_day: dict[date, list[int]] = defaultdict(list)
    for p in parts:
        indices_by_day[p.day].append(position[p.symbol])
    ranges: list[tuple[str, str]] = []
    for day in sorted(indices_by_day):
        for first, last in _consecutive(sorted(set(indices_by_day[day]))):
            for lo in range(first, last + 1, max_partitions):
                hi = min(lo + max_partitions - 1, last)
                ranges.append(
                    (
                        str(partition_key(day, symbol_order[lo])),
                        str(partition_key(day, symbol_order[hi])),
                    )
                )
    return ranges


def _symbol_ranges(
    parts: Sequence[DaySymbol], symbol_order: Sequence[str], max_partitions: int
) -> list[tuple[str, str]]:
    """Per symbol, its consecutive days as ranges of at most ``max_partitions``."""
    position = {symbol: i for i, symbol in enumerate(symbol_order)}
    days_by_symbol: dict[str, list[date]] = defaultdict(list)
    for p in parts:
        days_by_symbol[p.symbol].append(p.day)
    ranges: list[tuple[str, str]] = []
    for symbol in sorted(days_by_symbol, key=position.__getitem__):
        for first, last in _day_runs(days_by_symbol[symbol]):
            lo = first
            while lo <= last:
                hi = min(lo + timedelta(days=max_partitions - 1), last)
                ranges.append((str(partition_key(lo, symbol)), str(partition_key(hi, symbol))))
                lo = hi + timedelta(days=1)
    return ranges


def _consecutive(values: Sequence[int]) -> list[tuple[int, int]]:
    """``[(first, last)]`` of each run of consecutive integers in sorted ``values``."""
    runs: list[tuple[int, int]] = []
    for value in values:
        if runs and runs[-1][1] + 1 == value:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def _day_runs(days: Iterable[date]) -> list[tuple[date, date]]:
    """``[(first, last)]`` of each run of consecutive days."""
    ordinals = sorted({d.toordinal() for d in days})
    return [(date.fromordinal(a), date.fromordinal(b)) for a, b in _consecutive(ordinals)]
