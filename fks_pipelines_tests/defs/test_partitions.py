"""Cutting partitions into blocks (one fetch and write each) and into range runs."""

from datetime import date

import dagster as dg
import pandas as pd

from fks_pipelines.defs.partitions import Block, blocks, day_symbol_partitions, run_ranges

SYMBOLS = ["SPY", "AAPL", "X:BTCUSD"]


def keys(days: str, symbols: list[str]) -> list[str]:
    first, last = days.split("..")
    return [
        f"{d.date().isoformat()}|{s}" for d in pd.date_range(first, last, freq="D") for s in symbols
    ]


def utc(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def test_a_range_of_one_symbol_is_one_block() -> None:
    assert blocks(keys("2024-01-01..2024-12-31", ["SPY"])) == [
        Block(("SPY",), utc("2024-01-01"), utc("2025-01-01"))
    ]


def test_one_day_of_several_symbols_is_one_block() -> None:
    assert blocks(keys("2024-03-05..2024-03-05", SYMBOLS)) == [
        Block(tuple(SYMBOLS), utc("2024-03-05"), utc("2024-03-06"))
    ]


def test_gaps_split_blocks_and_every_partition_is_covered_once() -> None:
    chosen = keys("2024-01-01..2024-01-03", ["SPY"]) + keys("2024-01-06..2024-01-07", SYMBOLS)
    result = blocks(chosen)
    assert result == [
        Block(("SPY",), utc("2024-01-01"), utc("2024-01-04")),
        Block(tuple(SYMBOLS), utc("2024-01-06"), utc("2024-01-08")),
    ]
    covered = sorted(f"{d.isoformat()}|{s}" for b in result for d in b.days for s in b.symbols)
    assert covered == sorted(chosen)


def test_block_days_list_each_utc_day() -> None:
    block = Block(("SPY",), utc("2024-02-28"), utc("2024-03-02"))
    assert block.days == [date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)]


def test_run_ranges_hold_the_symbol_and_chunk_the_days() -> None:
    ranges = run_ranges(keys("2024-01-01..2024-12-31", SYMBOLS), SYMBOLS, max_partitions=100)
    assert len(ranges) == 3 * 4  # 366 days in chunks of 100, per symbol
    assert ranges[0] == ("2024-01-01|SPY", "2024-04-09|SPY")
    assert ranges[3] == ("2024-10-27|SPY", "2024-12-31|SPY")
    partitions = day_symbol_partitions(date(2024, 1, 1), SYMBOLS)
    covered = [
        k
        for first, last in ranges
        for k in partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    ]
    assert sorted(covered) == sorted(keys("2024-01-01..2024-12-31", SYMBOLS))


def test_one_day_ranges_run_over_adjacent_symbols() -> None:
    assert run_ranges(keys("2024-01-06..2024-01-06", SYMBOLS), SYMBOLS, 100) == [
        ("2024-01-06|SPY", "2024-01-06|X:BTCUSD")
    ]
    weekend = keys("2024-01-06..2024-01-06", ["SPY", "X:BTCUSD"])
    assert run_ranges(weekend, SYMBOLS, 100) == [
        ("2024-01-06|SPY", "2024-01-06|SPY"),
        ("2024-01-06|X:BTCUSD", "2024-01-06|X:BTCUSD"),
    ]


def test_no_keys_no_ranges() -> None:
    assert run_ranges([], SYMBOLS, 100) == []
    assert blocks([]) == []
