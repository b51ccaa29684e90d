"""Parquet exports of the consolidated series from a real warehouse (SQLite and PostgreSQL), read
back as one hive-partitioned dataset by pandas (pyarrow), polars and DuckDB."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import polars.testing
import pyarrow.parquet as pq
import pytest

from fks_pipelines.market.consolidate import COLUMNS, conform_consolidated, empty_consolidated
from fks_pipelines.market.intervals import Interval
from fks_pipelines.warehouse.export import (
    DATASET,
    PARTITION_COLUMNS,
    SCHEMA,
    ExportedFile,
    export_month,
    month_path,
)
from fks_pipelines.warehouse.store import ConsolidatedScope, Warehouse

JAN, FEB, MAR = (pd.Timestamp(m, tz="UTC") for m in ("2024-01-01", "2024-02-01", "2024-03-01"))
# (interval, instrument, month) of every file the seeded rows give.
FILES = [
    ("1h", "BTC-USD", "2024-01"),
    ("1h", "BTC-USD", "2024-02"),
    ("1h", "SPY", "2024-02"),
    ("1d", "BTC-USD", "2024-01"),
]


def bars(instrument: str, interval: str, start: str, periods: int, base: float) -> pd.DataFrame:
    """Consolidated bars with the nulls the table holds: volume, quote volume, vwap, trades and
    agreement missing on some bars, as a bar filled from another provider has them."""
    ts = pd.date_range(
        pd.Timestamp(start, tz="UTC"), periods=periods, freq=Interval.parse(interval).offset
    )
    opens = base + np.arange(periods, dtype="float64")
    frame = pd.DataFrame(
        {
            "instrument": instrument,
            "interval": interval,
            "ts": ts,
            "open": opens,
            "high": opens + 2.0,
            "low": opens - 1.0,
            "close": opens + 0.5,
            "volume": np.where(np.arange(periods) % 3 == 0, np.nan, 1.5 * opens),
            "quote_volume": np.nan,
            "vwap": np.where(np.arange(periods) == 1, np.nan, opens + 0.25),
            "trades": pd.array([None if i % 2 else 10 * i for i in range(periods)], "Int64"),
            "bar_kind": "traded",
            "source": np.where(np.arange(periods) % 2, "polygon", "binance"),
            "source_symbol": f"{instrument}-src",
            "providers": 1 + np.arange(periods) % 2,
            "agreement_bps": np.where(np.arange(periods) % 2, 3.25, np.nan),
        }
    )
    return conform_consolidated(frame)


def store(
    warehouse: Warehouse, frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp
) -> None:
    """Replace the rows of ``frame``'s instrument and interval in ``[start, end)`` with it."""
    scope = ConsolidatedScope(frame["interval"].iat[0], (frame["instrument"].iat[0],), start, end)
    warehouse.write_consolidated(frame, scope)


@pytest.fixture
def seeded(warehouse: Warehouse) -> Warehouse:
    """BTC-USD hourly across the January/February boundary, SPY hourly in February, BTC-USD
    daily in January, and ETH-USD hourly that no test exports."""
    store(warehouse, bars("BTC-USD", "1h", "2024-01-31 20:00", 8, 100.0), JAN, MAR)
    store(warehouse, bars("SPY", "1h", "2024-02-01 14:00", 7, 470.0), JAN, MAR)
    store(warehouse, bars("BTC-USD", "1d", "2024-01-29", 3, 90.0), JAN, MAR)
    store(warehouse, bars("ETH-USD", "1h", "2024-01-31 00:00", 3, 2000.0), JAN, MAR)
    return warehouse


def export_all(warehouse: Warehouse, root: Path) -> list[ExportedFile]:
    return [export_month(warehouse, root, *file) for file in FILES]


def stored(warehouse: Warehouse) -> pd.DataFrame:
    """The exported rows as the warehouse returns them, with ``ts`` in microseconds (the files'
    unit) and the ``month`` the dataset adds from the folders, in a fixed order."""
    frame = pd.concat(
        [
            warehouse.read_consolidated("1h", ["BTC-USD", "SPY"], JAN, MAR),
            warehouse.read_consolidated("1d", ["BTC-USD"], JAN, MAR),
        ],
        ignore_index=True,
    )
    frame["ts"] = frame["ts"].dt.as_unit("us")
    frame["month"] = frame["ts"].dt.strftime("%Y-%m").astype("string")
    return in_order(frame)


def in_order(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[*COLUMNS, "month"]].sort_values(
        ["interval", "instrument", "ts"], ignore_index=True
    )


def dataset(root: Path) -> Path:
    return root / DATASET


def read_pandas(root: Path) -> pd.DataFrame:
    frame = pd.read_parquet(dataset(root))
    # pyarrow reads hive partition values as dictionaries: categoricals in pandas.
    for column in (*PARTITION_COLUMNS, "month"):
        assert isinstance(frame[column].dtype, pd.CategoricalDtype), column
    return in_order(frame.astype({c: "string" for c in (*PARTITION_COLUMNS, "month")}))


def read_polars(root: Path) -> pl.DataFrame:
    frame = pl.scan_parquet(dataset(root) / "**" / "*.parquet", hive_partitioning=True).collect()
    return frame.select([*COLUMNS, "month"]).sort(["interval", "instrument", "ts"])


def read_duckdb(root: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """The dataset through DuckDB (as polars) and DuckDB's own column types."""
    with duckdb.connect() as con:
        # TIMESTAMPTZ values are instants; the session zone only decides how they are shown.
        con.execute("SET TimeZone = 'UTC'")
        relation = con.sql(
            f"SELECT * FROM read_parquet('{dataset(root)}/**/*.parquet', hive_partitioning = true)"
        )
        types = {
            name: str(kind) for name, kind in zip(relation.columns, relation.types, strict=True)
        }
        frame = relation.pl()
    return frame.select([*COLUMNS, "month"]).sort(["interval", "instrument", "ts"]), types


def test_the_files_hold_every_consolidated_column_but_the_partition_ones() -> None:
    assert SCHEMA.names == [c for c in COLUMNS if c not in PARTITION_COLUMNS]


def test_month_path_is_a_hive_layout_and_refuses_values_that_cannot_be_folders(
    tmp_path: Path,
) -> None:
    assert month_path(tmp_path, "1h", "BTC-USD", "2024-01") == (
        tmp_path / DATASET / "interval=1h" / "instrument=BTC-USD" / "month=2024-01" / "data.parquet"
    )
    for instrument in ("", "EUR/USD", "a=b", ".hidden", "_hidden"):
        with pytest.raises(ValueError, match="hive partition folder"):
            month_path(tmp_path, "1h", instrument, "2024-01")


def test_pandas_polars_and_duckdb_read_the_warehouse_frame_as_one_dataset(
    seeded: Warehouse, tmp_path: Path
) -> None:
    root = tmp_path / "exports"
    exported = export_all(seeded, root)

    assert [e.rows for e in exported] == [4, 4, 7, 3]
    for file, (interval, instrument, month) in zip(exported, FILES, strict=True):
        assert file.path == month_path(root, interval, instrument, month)
        assert file.bytes == file.path.stat().st_size > 0
        assert pq.read_schema(file.path).remove_metadata() == SCHEMA
    expected = stored(seeded)
    assert len(expected) == 18
    assert expected["volume"].isna().any() and expected["trades"].isna().any()
    assert str(expected["ts"].dtype) == "datetime64[us, UTC]"

    pd.testing.assert_frame_equal(read_pandas(root), expected)
    as_polars = pl.from_pandas(expected)
    assert as_polars.schema["ts"] == pl.Datetime("us", "UTC")
    assert as_polars.schema["trades"] == pl.Int64 and as_polars.schema["month"] == pl.String
    assert as_polars["volume"].null_count() == expected["volume"].isna().sum()
    polars.testing.assert_frame_equal(read_polars(root), as_polars)
    through_duckdb, types = read_duckdb(root)
    polars.testing.assert_frame_equal(through_duckdb, as_polars)
    assert types["ts"] == "TIMESTAMP WITH TIME ZONE"
    assert {types[c] for c in ("instrument", "interval", "month", "source")} == {"VARCHAR"}
    assert (types["trades"], types["providers"], types["volume"]) == ("BIGINT", "BIGINT", "DOUBLE")


def test_re_exporting_an_unchanged_month_gives_the_same_file(
    seeded: Warehouse, tmp_path: Path
) -> None:
    first = export_month(seeded, tmp_path, "1h", "BTC-USD", "2024-01")
    content = first.path.read_bytes()

    again = export_month(seeded, tmp_path, "1h", "BTC-USD", "2024-01")

    assert again == first
    assert again.path.read_bytes() == content
    assert os.listdir(first.path.parent) == ["data.parquet"]  # no temporary file left behind


def test_a_changed_month_replaces_the_file_a_reader_still_has_open(
    seeded: Warehouse, tmp_path: Path
) -> None:
    """The new file is moved over the old one: a reader that opened the old file reads it whole,
    the next reader reads the new one, and never a mix of the two."""
    old = export_month(seeded, tmp_path, "1h", "BTC-USD", "2024-02")
    changed = bars("BTC-USD", "1h", "2024-02-01 00:00", 10, 500.0)
    store(seeded, changed, FEB, MAR)

    with old.path.open("rb") as reader:
        new = export_month(seeded, tmp_path, "1h", "BTC-USD", "2024-02")
        before = pq.read_table(reader)

    assert (new.path, new.rows) == (old.path, 10)
    assert before.num_rows == 4 and before["open"][0].as_py() == 104.0
    after = pq.read_table(new.path)
    assert after["open"].to_pylist() == changed["open"].tolist()
    assert os.listdir(new.path.parent) == ["data.parquet"]
    umask = os.umask(0)
    os.umask(umask)
    assert new.path.stat().st_mode & 0o777 == 0o666 & ~umask  # not a temp file's 0600


def test_an_emptied_month_loses_its_file_and_leaves_the_dataset(
    seeded: Warehouse, tmp_path: Path
) -> None:
    export_all(seeded, tmp_path)
    spy = month_path(tmp_path, "1h", "SPY", "2024-02")
    seeded.write_consolidated(empty_consolidated(), ConsolidatedScope("1h", ("SPY",), FEB, MAR))

    assert export_month(seeded, tmp_path, "1h", "SPY", "2024-02") == ExportedFile(spy, 0, 0)
    assert not spy.exists()
    assert "SPY" not in read_polars(tmp_path)["instrument"].to_list()
    assert len(read_pandas(tmp_path)) == 18 - 7
    # A month that never had bars gets no file either.
    never = export_month(seeded, tmp_path, "1h", "SPY", "2024-03")
    assert never.rows == 0 and not never.path.exists()
