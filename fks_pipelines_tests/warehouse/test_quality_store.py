"""Quality rows (table ``ohlcv_quality``): upserts and reads, on SQLite and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fks_pipelines.warehouse.quality import (
    QUALITY_COLUMNS,
    QUALITY_DTYPES,
    conform_quality,
    empty_quality,
)
from fks_pipelines.warehouse.store import Warehouse, WarehouseError
from fks_pipelines.warehouse.tables import ohlcv_quality

DAY = date(2024, 1, 5)
WRITTEN_AT = pd.Timestamp("2024-01-06 01:00:00.123456", tz="UTC")


def open_warehouse(url: str) -> Warehouse:
    store = Warehouse(sa.create_engine(url))
    store.ensure_schema()
    with store.engine.begin() as conn:
        conn.execute(sa.delete(ohlcv_quality))
    return store


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    """A warehouse with its schema and an empty ``ohlcv_quality``, on its own engine."""
    store = open_warehouse(warehouse_url)
    try:
        yield store
    finally:
        store.engine.dispose()


def quality_rows(
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT"),
    days: tuple[date, ...] = (DAY,),
    *,
    provider: str = "binance",
    interval: str = "1h",
    score: float = 95.0,
) -> pd.DataFrame:
    """Fully populated rows, one per symbol and day; ``score`` tells rewrites apart."""
    keys = pd.MultiIndex.from_product([symbols, days], names=["symbol", "day"]).to_frame(
        index=False
    )
    index = np.arange(len(keys)) % 24  # figures within the table's ranges however many rows
    return conform_quality(
        pd.DataFrame(
            {
                "provider": provider,
                "interval": interval,
                "symbol": keys["symbol"],
                "day": keys["day"],
                "quality_score": score - index,
                "quality_completeness": 100.0 - index,
                "quality_validity": 100.0,
                "quality_outliers": 90.0,
                "quality_timeliness": np.nan,
                "quality_agreement": 1 / 3,
                "expected_bars": 24,
                "missing_bars": index % 3,
                "outlier_count": index,
                "outlier_severity": np.where(index % 2, "low", "none"),
                "agreement_max_bps": 12.5 + index,
                "bars_compared": 24 - index,
                "failed_checks": np.where(index % 2, "outliers:WARN, completeness:ERROR", ""),
                "run_id": [f"run-{i}" for i in index],
                "updated_at": WRITTEN_AT,
            }
        )
    )


def combine(*frames: pd.DataFrame) -> pd.DataFrame:
    """Frames concatenated in the table's key order."""
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values(["provider", "interval", "symbol", "day"], ignore_index=True)


def everything(store: Warehouse) -> pd.DataFrame:
    return store.read_quality(date(2000, 1, 1), date(2100, 1, 1))


def test_schema_holds_the_quality_table_and_ensure_schema_is_repeatable(
    warehouse: Warehouse,
) -> None:
    warehouse.write_quality(quality_rows())
    warehouse.ensure_schema()

    assert "ohlcv_quality" in sa.inspect(warehouse.engine).get_table_names()
    pd.testing.assert_frame_equal(everything(warehouse), quality_rows())


def test_starts_empty_with_fixed_dtypes(warehouse: Warehouse) -> None:
    stored = everything(warehouse)

    pd.testing.assert_frame_equal(stored, empty_quality())
    assert list(stored.columns) == list(QUALITY_COLUMNS)
    assert stored.dtypes.to_dict() == QUALITY_DTYPES


def test_round_trip_is_exact(warehouse: Warehouse) -> None:
    frame = quality_rows(("BTCUSDT", "ETHUSDT", "SOLUSDT"), (DAY, date(2024, 1, 6)))
    frame.loc[0, ["quality_score", "agreement_max_bps"]] = np.nan
    frame.loc[1, ["expected_bars", "bars_compared"]] = pd.NA
    frame.loc[2, ["outlier_severity", "run_id"]] = pd.NA
    frame.loc[3, "quality_score"] = 0.1 + 0.2  # survives only a lossless path

    assert warehouse.write_quality(frame) == 6
    stored = everything(warehouse)

    pd.testing.assert_frame_equal(stored, frame)
    assert stored.dtypes.to_dict() == QUALITY_DTYPES


def test_sqlite_and_postgres_read_the_same_frame(tmp_path: Path, pg_warehouse_url: str) -> None:
    frame = combine(
        quality_rows(("X:BTCUSD", "SPY"), provider="polygon", interval="1d"),
        quality_rows(("BTC-USD",), provider="consolidated"),
        quality_rows(days=(DAY, date(2024, 1, 6))),
    )
    stores = [
        open_warehouse(f"sqlite:///{tmp_path / 'w.sqlite'}"),
        open_warehouse(pg_warehouse_url),
    ]
    try:
        for store in stores:
            store.write_quality(frame.sample(frac=1.0, random_state=7))  # any order
        sqlite_frame, postgres_frame = (
            store.read_quality(DAY, date(2024, 1, 7)) for store in stores
        )
    finally:
        for store in stores:
            store.engine.dispose()

    pd.testing.assert_frame_equal(sqlite_frame, postgres_frame)
    pd.testing.assert_frame_equal(sqlite_frame, frame)


def test_read_is_half_open_and_filters_providers(warehouse: Warehouse) -> None:
    days = tuple(date(2024, 1, d) for d in (4, 5, 6))
    binance = quality_rows(days=days)
    polygon = quality_rows(("SPY",), days, provider="polygon", interval="1d")
    warehouse.write_quality(combine(binance, polygon))

    stored = warehouse.read_quality(DAY, date(2024, 1, 6))

    assert stored["day"].unique().tolist() == [pd.Timestamp(DAY)]
    assert stored["provider"].tolist() == ["binance", "binance", "polygon"]
    only = warehouse.read_quality(date(2024, 1, 4), date(2024, 1, 7), providers=["polygon"])
    pd.testing.assert_frame_equal(only, polygon)
    assert warehouse.read_quality(DAY, DAY).empty
    assert warehouse.read_quality(DAY, date(2024, 1, 7), providers=[]).empty


def test_upsert_is_idempotent_and_replaces_only_its_keys(warehouse: Warehouse) -> None:
    outside = combine(
        quality_rows(days=(date(2024, 1, 4),)),
        quality_rows(interval="1d"),
        quality_rows(provider="consolidated"),
    )
    warehouse.write_quality(combine(outside, quality_rows()))
    before = everything(warehouse)

    assert warehouse.write_quality(quality_rows()) == 2
    pd.testing.assert_frame_equal(everything(warehouse), before)

    rescored = quality_rows(("ETHUSDT",), score=40.0)
    rescored.loc[0, ["failed_checks", "outlier_severity"]] = ["outliers:ERROR", "high"]
    warehouse.write_quality(rescored)

    expected = combine(outside, quality_rows(("BTCUSDT",)), rescored)
    pd.testing.assert_frame_equal(everything(warehouse), expected)


def test_rows_without_updated_at_are_stamped_at_the_write(warehouse: Warehouse) -> None:
    frame = quality_rows()
    frame.loc[0, "updated_at"] = pd.NaT
    minimal = pd.DataFrame(
        {
            "provider": ["consolidated"],
            "interval": ["1h"],
            "symbol": ["BTC-USD"],
            "day": [pd.Timestamp(DAY, tz="UTC")],  # a partition start, as the assets hold it
            "missing_bars": [0],
            "outlier_count": [0],
        }
    )
    before = pd.Timestamp.now(tz="UTC")
    warehouse.write_quality(combine(frame, conform_quality(minimal)))
    after = pd.Timestamp.now(tz="UTC")

    stored = everything(warehouse).set_index(["provider", "symbol"])
    stamped = stored["updated_at"].drop(("binance", "ETHUSDT"))
    assert ((stamped >= before) & (stamped <= after)).all()
    assert stored.loc[("binance", "ETHUSDT"), "updated_at"] == WRITTEN_AT
    bare = stored.loc[("consolidated", "BTC-USD")]
    assert bare["day"] == pd.Timestamp(DAY)
    assert bare["failed_checks"] == ""
    assert pd.isna(bare["quality_score"]) and pd.isna(bare["bars_compared"])


def test_a_refused_write_changes_nothing(warehouse: Warehouse) -> None:
    warehouse.write_quality(quality_rows())
    before = everything(warehouse)
    # The first row alone would be accepted; the second breaks the score's range.
    frame = combine(quality_rows(score=50.0), quality_rows(("SOLUSDT",), score=150.0))

    with pytest.raises(WarehouseError, match="nothing was changed"):
        warehouse.write_quality(frame)

    pd.testing.assert_frame_equal(everything(warehouse), before)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: pd.concat([f, f.iloc[:1]], ignore_index=True), "share a key"),
        (lambda f: f.assign(outlier_severity="severe"), "unknown outlier severity 'severe'"),
        (lambda f: f.assign(failed_checks="none"), "is not a comma-separated"),
        (lambda f: f.assign(failed_checks="outliers:ERROR,,x:WARN"), "is not a comma-separated"),
        (lambda f: f.drop(columns="missing_bars"), r"lacks columns \['missing_bars'\]"),
        (lambda f: f.assign(outlier_count=[1, None]), r"null values in \['outlier_count'\]"),
        (lambda f: f.assign(day=pd.Timestamp("2024-01-05 12:00")), "not a UTC midnight"),
    ],
)
def test_invalid_frames_are_refused_before_the_database(
    warehouse: Warehouse, change, message: str
) -> None:
    warehouse.write_quality(quality_rows(score=70.0))
    before = everything(warehouse)

    with pytest.raises(ValueError, match=message):
        warehouse.write_quality(change(quality_rows()))

    pd.testing.assert_frame_equal(everything(warehouse), before)


def test_a_year_of_rows_is_written_in_one_statement(warehouse: Warehouse) -> None:
    days = tuple(pd.date_range("2024-01-01", periods=366, freq="D").date)
    frame = quality_rows(("BTCUSDT", "ETHUSDT", "SOLUSDT"), days)
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("INSERT"):
            statements.append(statement)

    sa.event.listen(warehouse.engine, "before_cursor_execute", count)
    try:
        assert warehouse.write_quality(frame) == 3 * 366
    finally:
        sa.event.remove(warehouse.engine, "before_cursor_execute", count)

    assert len(statements) == 1
    pd.testing.assert_frame_equal(everything(warehouse), frame)
