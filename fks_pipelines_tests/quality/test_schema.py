"""Schema validity of canonical frames, counted per named check."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.quality.schema import MAX_EXAMPLES, check_schema

HOUR = Interval.parse("1h")
DAY = pd.Timestamp("2024-01-02", tz="UTC")


def hourly(bars: int = 24, symbol: str = "BTCUSDT") -> pd.DataFrame:
    closes = 100.0 + np.arange(bars, dtype="float64")
    return build_frame(
        provider="binance",
        symbol=symbol,
        interval="1h",
        ts=pd.date_range(DAY, periods=bars, freq="h"),
        open=closes,
        high=closes * 1.01,
        low=closes * 0.99,
        close=closes,
        volume=np.ones(bars),
    )


def test_a_canonical_frame_passes() -> None:
    report = check_schema(hourly(), HOUR)

    assert report.passed
    assert (report.rows, report.failures, report.failing_rows) == (24, 0, 0)
    assert report.checks == {}
    assert report.examples == []
    assert report.as_metadata() == {
        "schema_passed": True,
        "schema_rows": 24,
        "schema_failures": 0,
        "schema_failing_rows": 0,
    }


def test_high_below_low_fails_with_the_row_as_example() -> None:
    frame = hourly()
    frame.loc[5, "high"] = frame.loc[5, "low"] - 1.0

    report = check_schema(frame, HOUR)

    assert not report.passed
    assert report.checks == {"high_is_highest": 1}
    assert report.failures == report.failing_rows == 1
    [example] = report.examples
    assert example["checks"] == ["high_is_highest"]
    assert example["row"] == 5
    assert example["ts"] == "2024-01-02T05:00:00+00:00"
    assert example["high"] == pytest.approx(frame.loc[5, "high"])
    assert example["vwap"] is None and example["trades"] is None
    json.dumps(report.as_metadata())  # JSON-able, ts as an ISO string


def test_each_failure_is_counted_under_its_check() -> None:
    frame = hourly()
    frame.loc[1, "volume"] = -1.0
    frame.loc[2, "close"] = np.nan
    frame.loc[3, "open"] = 0.0  # also below the low
    frame.loc[4, "ts"] += pd.Timedelta(minutes=1)

    report = check_schema(frame, HOUR)

    assert report.checks == {
        "low_is_lowest": 1,
        "not_null": 1,
        "open_positive": 1,
        "ts_on_grid": 1,
        "volume_non_negative": 1,
    }
    assert report.failing_rows == 4
    assert [example["row"] for example in report.examples] == [1, 2, 3, 4]


def test_duplicate_and_out_of_order_bars() -> None:
    frame = hourly(6)
    repeated = pd.concat([frame, frame.iloc[[2]]], ignore_index=True)

    report = check_schema(repeated, HOUR)

    # The repeat at row 6 is both a repeat and earlier than the bar before it.
    assert report.checks == {"ts_increasing": 1, "ts_unique": 1}
    assert report.failing_rows == 1
    assert report.examples[0]["row"] == 6
    assert report.examples[0]["checks"] == ["ts_increasing", "ts_unique"]

    swapped = frame.iloc[[0, 2, 1, 3, 4, 5]]
    assert check_schema(swapped, HOUR).checks == {"ts_increasing": 1}


def test_series_are_ordered_separately() -> None:
    """Two symbols interleaved by time are each strictly increasing: no failure."""
    both = pd.concat([hourly(6), hourly(6, "ETHUSDT")], ignore_index=True)
    interleaved = both.sort_values(["ts", "symbol"], kind="stable", ignore_index=True)

    assert check_schema(interleaved, HOUR).passed
    # The same ts in another symbol is not a repeat, but within one symbol it is.
    interleaved.loc[interleaved["symbol"] == "ETHUSDT", "symbol"] = "BTCUSDT"
    assert check_schema(interleaved, HOUR).checks == {"ts_unique": 6}


def test_ts_must_sit_on_the_interval_grid() -> None:
    day = Interval.parse("1d")
    frame = hourly(3)
    frame["interval"] = pd.array(["1d"] * 3, dtype="string")
    stamps = pd.DatetimeIndex(["2024-01-02", "2024-01-03 12:00", "2024-01-04"], tz="UTC")
    frame["ts"] = stamps.as_unit("ns")  # parsed strings are not nanoseconds in pandas 3

    report = check_schema(frame, day)

    assert report.checks == {"ts_on_grid": 1}
    assert report.examples[0]["ts"] == "2024-01-03T12:00:00+00:00"


def test_the_interval_column_must_match() -> None:
    assert check_schema(hourly(4), Interval.parse("15m")).checks == {"interval_matches": 4}


def test_wrong_dtype_and_missing_column_fail_without_raising() -> None:
    frame = hourly().drop(columns=["trades"])
    frame["close"] = frame["close"].astype(str)

    report = check_schema(frame, HOUR)

    assert not report.passed
    assert report.checks["dtype"] == 1
    assert report.checks["column_present"] == 1
    assert report.failures > report.failing_rows  # frame-level cases count too
    by_check = {example["checks"][0]: example for example in report.examples}
    assert by_check["column_present"]["column"] == "trades"
    assert by_check["dtype"]["column"] == "close"
    json.dumps(report.as_metadata())


def test_naive_ts_is_reported_as_not_utc() -> None:
    frame = hourly()
    frame["ts"] = frame["ts"].dt.tz_localize(None)

    report = check_schema(frame, HOUR)

    assert report.checks == {"dtype": 1, "ts_utc": 1}
    assert not report.passed


def test_a_frame_without_canonical_columns_fails_without_raising() -> None:
    report = check_schema(pd.DataFrame({"price": [1.0, 2.0]}), HOUR)

    assert not report.passed
    assert report.checks["column_present"] == 13
    assert len(report.examples) == MAX_EXAMPLES


def test_examples_stay_few_on_a_large_broken_frame() -> None:
    frame = hourly(5000)
    frame["high"] = frame["low"] - 1.0

    report = check_schema(frame, HOUR)

    assert report.checks == {"high_is_highest": 5000}
    assert len(report.examples) == MAX_EXAMPLES
    assert [example["row"] for example in report.examples] == [0, 1, 2, 3, 4]


def test_any_index_is_read_by_position() -> None:
    frame = hourly(4)
    frame.index = [10, 10, 7, 3]
    frame.iloc[2, frame.columns.get_loc("high")] = 1.0

    assert check_schema(frame, HOUR).examples[0]["row"] == 2
