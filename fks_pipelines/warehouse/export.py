"""Parquet exports of the consolidated series, for research tools (pandas, polars, DuckDB).

One file per interval, instrument and UTC month, in hive-style folders, so that the whole tree
reads as ONE dataset whose folder names become columns::

    <root>/ohlcv_consolidated/interval=1h/instrument=BTC-USD/month=2024-01/data.parquet

The partition values (``interval``, ``instrument``, ``month``) live only in the folder names, not
in the files: pyarrow (pandas) refuses a dataset where a column is both in the files and in the
path ("Unable to merge: Field interval has incompatible types"), while polars and DuckDB read it
either way. Readers get ``interval`` and ``instrument`` back from the path (pandas as
categoricals, polars and DuckDB as strings) plus ``month`` (``YYYY-MM``).

``ts`` is stored as ``timestamp[us, UTC]``: pandas, polars and DuckDB all read it as UTC
(DuckDB reads nanosecond timestamps without their time zone). Prices and volumes are float64,
``trades`` and ``providers`` int64, text columns strings; missing values are Parquet nulls.

A file is written to a hidden temporary file in its own folder and moved over the old one with
``os.replace``, so a reader sees the old file or the new one, never half of one. The temporary
name starts with a dot and ends in ``.tmp``: pyarrow skips dot-files, and a ``**/*.parquet``
glob (how polars and DuckDB should read the tree) does not match it; polars given the folder
itself refuses a folder holding one. A month without bars has no file.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fks_pipelines.warehouse.store import Warehouse

DATASET = "ohlcv_consolidated"
FILE_NAME = "data.parquet"
PARTITION_COLUMNS = ("interval", "instrument")
"""Consolidated columns kept in the folder names only (``month`` is the third folder level)."""

SCHEMA = pa.schema(
    [
        pa.field("ts", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("open", pa.float64()),
        pa.field("high", pa.float64()),
        pa.field("low", pa.float64()),
        pa.field("close", pa.float64()),
        pa.field("volume", pa.float64()),
        pa.field("quote_volume", pa.float64()),
        pa.field("vwap", pa.float64()),
        pa.field("trades", pa.int64()),
        pa.field("bar_kind", pa.string()),
        pa.field("source", pa.string()),
        pa.field("source_symbol", pa.string()),
        pa.field("providers", pa.int64()),
        pa.field("agreement_bps", pa.float64()),
    ]
)
"""The columns of every file: the consolidated columns except the partition ones. Fixed, so
that a month whose column is all null still has the type the other files have."""


@dataclass(frozen=True)
class ExportedFile:
    """One exported month: its path, its rows and its size (0 and 0 when it has no bars and
    therefore no file)."""

    path: Path
    rows: int
    bytes: int


def month_window(month: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``[start, end)`` in UTC of the month ``YYYY-MM``."""
    period = pd.Period(month, freq="M")
    return (
        period.start_time.tz_localize("UTC"),
        (period + 1).start_time.tz_localize("UTC"),
    )


def month_path(root: Path, interval: str, instrument: str, month: str) -> Path:
    """The file of ``instrument``'s bars at ``interval`` opening in the UTC month ``YYYY-MM``.

    Raises:
        ValueError: A value that cannot be a hive folder name: empty, holding ``/`` or ``=``,
            or starting with ``.`` or ``_`` (which pyarrow would skip as a hidden folder).
    """
    for name, value in (("interval", interval), ("instrument", instrument)):
        if not value or "/" in value or "=" in value or value[0] in "._":
            raise ValueError(f"{name} {value!r} cannot name a hive partition folder")
    folder = f"month={pd.Period(month, freq='M').strftime('%Y-%m')}"
    return root / DATASET / f"interval={interval}" / f"instrument={instrument}" / folder / FILE_NAME


def export_month(
    warehouse: Warehouse, root: Path, interval: str, instrument: str, month: str
) -> ExportedFile:
    """Write ``instrument``'s consolidated bars of one UTC month to its Parquet file.

    Replaces the file whole (idempotent: an unchanged month gives the same rows); a month whose
    bars are gone loses its file.
    """
    path = month_path(root, interval, instrument, month)
    start, end = month_window(month)
    bars = warehouse.read_consolidated(interval, [instrument], start, end)
    if bars.empty:
        path.unlink(missing_ok=True)
        return ExportedFile(path, 0, 0)
    table = pa.Table.from_pandas(bars, schema=SCHEMA, preserve_index=False)
    _write_atomically(table, path)
    return ExportedFile(path, table.num_rows, path.stat().st_size)


def _write_atomically(table: pa.Table, path: Path) -> None:
    """Write ``table`` to ``path`` through a temporary file beside it and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Opened by name (not mkstemp, which creates it 0600), so the file gets the umask's mode.
        with temporary.open("xb") as sink:
            pq.write_table(table, sink)
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
