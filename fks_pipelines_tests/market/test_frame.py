"""The canonical OHLCV frame: schema, construction, conforming, and dropping open bars."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
import pytest

from fks_pipelines.market.frame import (
    COLUMNS,
    DTYPES,
    OHLCVFrame,
    build_frame,
    conform,
    drop_open_bars,
    empty_frame,
    validate,
)

START = pd.Timestamp("2024-01-01", tz="UTC")


def good_frame(periods: int = 3) -> pd.DataFrame:
    """Hourly BTCUSDT bars that satisfy every rule of the schema."""
    return build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=pd.date_range(START, periods=periods, freq="1h"),
        open=[100.0 + i for i in range(periods)],
        high=[110.0 + i for i in range(periods)],
        low=[90.0 + i for i in range(periods)],
        close=[105.0 + i for i in range(periods)],
        volume=[float(i) for i in range(periods)],
        vwap=[101.0 + i for i in range(periods)],
        trades=list(range(periods)),
    )


def failed_checks(frame: pd.DataFrame) -> set[str]:
    """Names of the schema checks ``frame`` fails; empty if it is valid."""
    try:
        validate(frame)
    except pa.errors.SchemaErrors as exc:
        return {str(check) for check in exc.failure_cases["check"]}
    return set()


def test_accepts_a_good_frame() -> None:
    frame = good_frame()
    validated = validate(frame)
    pd.testing.assert_frame_equal(validated, frame)


def test_accepts_an_empty_frame() -> None:
    assert failed_checks(empty_frame()) == set()


def test_accepts_missing_vwap_and_trades() -> None:
    frame = build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=pd.date_range(START, periods=2, freq="1h"),
        open=[1.0, 2.0],
        high=[2.0, 3.0],
        low=[1.0, 1.0],
        close=[2.0, 2.5],
        volume=[0.0, 5.0],
    )
    assert frame["vwap"].isna().all()
    assert frame["trades"].isna().all()
    assert failed_checks(frame) == set()


def test_rejects_high_below_low() -> None:
    frame = good_frame()
    frame.loc[1, "high"] = frame.loc[1, "low"] - 1
    assert "high_is_highest" in failed_checks(frame)


def test_rejects_high_below_close() -> None:
    frame = good_frame()
    frame.loc[1, "high"] = frame.loc[1, "close"] - 0.5
    assert failed_checks(frame) == {"high_is_highest"}


def test_rejects_low_above_open() -> None:
    frame = good_frame()
    frame.loc[1, "low"] = frame.loc[1, "open"] + 0.5
    assert failed_checks(frame) == {"low_is_lowest"}


def test_rejects_negative_volume() -> None:
    frame = good_frame()
    frame.loc[0, "volume"] = -1.0
    assert failed_checks(frame) == {"greater_than_or_equal_to(0)"}


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("price", [0.0, -1.0])
def test_rejects_non_positive_prices(column: str, price: float) -> None:
    frame = good_frame()
    frame.loc[2, column] = price
    assert "greater_than(0)" in failed_checks(frame)


def test_rejects_negative_trades() -> None:
    frame = good_frame()
    frame.loc[0, "trades"] = -1
    assert failed_checks(frame) == {"greater_than_or_equal_to(0)"}


def test_rejects_duplicate_bars() -> None:
    frame = good_frame()
    duplicated = pd.concat([frame, frame.iloc[[1]]], ignore_index=True)
    assert failed_checks(duplicated) == {"multiple_fields_uniqueness"}


def test_same_time_on_other_symbols_is_not_a_duplicate() -> None:
    frame = good_frame()
    other = frame.assign(symbol=pd.array(["ETHUSDT"] * len(frame), dtype="string"))
    assert failed_checks(pd.concat([frame, other], ignore_index=True)) == set()


def test_rejects_naive_timestamps() -> None:
    frame = good_frame()
    frame["ts"] = frame["ts"].dt.tz_localize(None)
    assert failed_checks(frame) == {"dtype('datetime64[ns, UTC]')"}


def test_rejects_extra_columns() -> None:
    frame = good_frame().assign(extra=1)
    assert failed_checks(frame) == {"column_in_schema"}


def test_rejects_columns_out_of_order() -> None:
    frame = good_frame()
    reordered = frame[["symbol", "provider", *COLUMNS[2:]]]
    assert failed_checks(reordered) == {"column_ordered"}


def test_reports_every_failure_at_once() -> None:
    frame = good_frame()
    frame.loc[0, "volume"] = -1.0
    frame.loc[1, "high"] = frame.loc[1, "close"] - 0.5
    assert failed_checks(frame) == {"greater_than_or_equal_to(0)", "high_is_highest"}


@pytest.mark.parametrize("column", COLUMNS)
def test_every_field_is_described(column: str) -> None:
    description = OHLCVFrame.to_schema().columns[column].description
    assert isinstance(description, str)
    assert description.strip()


def test_schema_covers_exactly_the_canonical_columns() -> None:
    assert tuple(OHLCVFrame.to_schema().columns) == COLUMNS


def test_build_frame_sorts_by_ts_and_converts_to_utc() -> None:
    ts = pd.DatetimeIndex(["2024-01-01 02:00", "2024-01-01 00:00"], tz="Europe/Berlin")
    frame = build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=ts,
        open=[2.0, 1.0],
        high=[2.0, 1.0],
        low=[2.0, 1.0],
        close=[2.0, 1.0],
        volume=[2.0, 1.0],
    )
    assert list(frame["ts"]) == [
        pd.Timestamp("2023-12-31 23:00", tz="UTC"),
        pd.Timestamp("2024-01-01 01:00", tz="UTC"),
    ]
    assert list(frame["open"]) == [1.0, 2.0]
    assert frame.index.equals(pd.RangeIndex(2))


def test_build_frame_refuses_naive_timestamps() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_frame(
            provider="binance",
            symbol="BTCUSDT",
            interval="1h",
            ts=pd.date_range("2024-01-01", periods=1, freq="1h"),
            open=[1.0],
            high=[1.0],
            low=[1.0],
            close=[1.0],
            volume=[1.0],
        )


def test_conform_gives_canonical_columns_order_and_dtypes() -> None:
    loose = pd.DataFrame(
        {
            "close": [2, 3],
            "ts": ["2024-01-01T01:00:00+01:00", "2024-01-01T01:00:00Z"],
            "symbol": ["BTCUSDT", "BTCUSDT"],
            "provider": ["binance", "binance"],
            "interval": ["1h", "1h"],
            "open": [1, 2],
            "high": [3, 4],
            "low": [1, 1],
            "volume": [10, 20],
            "trades": [5, None],
            "ignored": ["x", "y"],
        }
    )
    frame = conform(loose)
    assert tuple(frame.columns) == COLUMNS
    assert {name: frame[name].dtype for name in COLUMNS} == {
        name: pd.api.types.pandas_dtype(dtype) for name, dtype in DTYPES.items()
    }
    assert list(frame["ts"]) == [
        pd.Timestamp("2024-01-01 00:00", tz="UTC"),
        pd.Timestamp("2024-01-01 01:00", tz="UTC"),
    ]
    assert frame["vwap"].isna().all()
    assert frame["trades"].tolist() == [5, pd.NA]
    assert failed_checks(frame) == set()


def test_conform_requires_key_and_price_columns() -> None:
    frame = good_frame().drop(columns=["close"])
    with pytest.raises(ValueError, match="close"):
        conform(frame)


def test_conform_fills_what_a_provider_does_not_state() -> None:
    frame = conform(good_frame().drop(columns=["volume", "quote_volume", "bar_kind"]))
    assert frame["volume"].isna().all()
    assert frame["quote_volume"].isna().all()
    assert frame["bar_kind"].tolist() == ["traded"] * len(frame)
    assert failed_checks(frame) == set()


def test_build_frame_keeps_each_volume_in_its_own_column() -> None:
    frame = build_frame(
        provider="coinmarketcap",
        symbol="BTC",
        interval="1d",
        ts=pd.DatetimeIndex(["2019-01-02"], tz="UTC"),
        open=[3849.2],
        high=[3947.98],
        low=[3817.41],
        close=[3943.41],
        quote_volume=[5244856835.7],
    )
    assert frame["volume"].isna().all()
    assert frame["quote_volume"].tolist() == [5244856835.7]
    assert frame["bar_kind"].tolist() == ["traded"]
    assert failed_checks(frame) == set()


@pytest.mark.parametrize(
    ("column", "value", "check"),
    [
        ("quote_volume", -1.0, "greater_than_or_equal_to(0)"),
        ("bar_kind", "guessed", "isin"),
    ],
)
def test_the_model_refuses_a_negative_quote_volume_or_an_unknown_kind(
    column: str, value: object, check: str
) -> None:
    frame = good_frame()
    frame.loc[0, column] = value
    assert any(check in name for name in failed_checks(frame))


def test_conform_is_identity_on_a_canonical_frame() -> None:
    frame = good_frame()
    pd.testing.assert_frame_equal(conform(frame), frame)


def test_empty_frame_is_canonical() -> None:
    frame = empty_frame()
    assert frame.empty
    pd.testing.assert_frame_equal(conform(frame), frame)


def test_drop_open_bars_keeps_a_bar_closing_exactly_at_now() -> None:
    frame = good_frame(periods=3)  # bars open 00:00, 01:00, 02:00
    now = pd.Timestamp("2024-01-01 02:00", tz="UTC")  # the 01:00 bar closes exactly now
    closed = drop_open_bars(frame, 3600, now)
    assert list(closed["ts"]) == [START, START + pd.Timedelta(hours=1)]
    assert closed.index.equals(pd.RangeIndex(2))


def test_drop_open_bars_drops_a_bar_closing_after_now() -> None:
    frame = good_frame(periods=3)
    now = pd.Timestamp("2024-01-01 02:59:59.999", tz="UTC")
    closed = drop_open_bars(frame, 3600, now)
    assert list(closed["ts"]) == [START, START + pd.Timedelta(hours=1)]
    pd.testing.assert_frame_equal(closed, frame.iloc[:2])


def test_drop_open_bars_keeps_every_bar_once_all_closed() -> None:
    frame = good_frame(periods=3)
    pd.testing.assert_frame_equal(
        drop_open_bars(frame, 3600, pd.Timestamp("2024-01-01 03:00", tz="UTC")), frame
    )


def test_drop_open_bars_on_an_empty_frame() -> None:
    assert drop_open_bars(empty_frame(), 60, START).empty
