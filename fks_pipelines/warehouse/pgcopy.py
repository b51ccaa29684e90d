"""PostgreSQL ``COPY ... (FORMAT BINARY)`` streams of canonical OHLCV frames, built by numpy.

A binary COPY record is a field count followed by (length, bytes) per field. Text and NULL make
record layouts vary, so rows are grouped by their text values (provider, symbol, interval,
bar_kind) and by which nullable columns are null; within a group every record has the same layout
and the group is one numpy structured array. Groups are yielded one at a time so that the server
can ingest a group while the next is encoded.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import COLUMNS

COLUMNS_SQL = ", ".join(f'"{name}"' if name == "interval" else name for name in COLUMNS)
HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
_TEXT_COLUMNS = ("provider", "symbol", "interval", "bar_kind")
_FLOAT_COLUMNS = ("open", "high", "low", "close")
_NULLABLE_FLOATS = ("volume", "quote_volume", "vwap")
_NULLABLE_INTS = ("trades",)
_WIDTHS = {
    **{name: ">f8" for name in (*_FLOAT_COLUMNS, *_NULLABLE_FLOATS)},
    **{name: ">i8" for name in ("ts", *_NULLABLE_INTS)},
}


def copy_sql(table: str) -> str:
    """The COPY statement that reads these streams into ``table``."""
    return f"COPY {table} ({COLUMNS_SQL}) FROM STDIN (FORMAT BINARY)"


def encode(frame: pd.DataFrame) -> bytes:
    """The whole COPY stream of a canonical frame as one bytes object."""
    return b"".join(chunks(frame))


def chunks(frame: pd.DataFrame) -> Iterator[bytes]:
    """The COPY stream of a canonical frame: header, one chunk per record layout, trailer."""
    yield HEADER
    if not frame.empty:
        yield from _record_groups(frame)
    yield TRAILER


def _record_groups(frame: pd.DataFrame) -> Iterator[bytes]:
    values: dict[str, np.ndarray] = {"ts": frame["ts"].dt.as_unit("us").array.asi8 - _PG_EPOCH_US}
    values.update({name: frame[name].to_numpy(dtype="float64") for name in _FLOAT_COLUMNS})
    nulls: dict[str, np.ndarray] = {}
    for name in _NULLABLE_FLOATS:
        values[name] = frame[name].to_numpy(dtype="float64", na_value=np.nan)
        nulls[name] = np.isnan(values[name])
    for name in _NULLABLE_INTS:
        nulls[name] = frame[name].isna().to_numpy()
        values[name] = frame[name].to_numpy(dtype="int64", na_value=0)

    # One integer code per row: its null pattern and its text values.
    codes = np.zeros(len(frame), dtype=np.int64)
    for null in nulls.values():
        codes = codes * 2 + null
    texts = []
    for name in _TEXT_COLUMNS:
        column_codes, uniques = pd.factorize(frame[name])
        codes = codes * len(uniques) + column_codes
        texts.append((column_codes, uniques))
    ordered = bool(np.all(codes[1:] >= codes[:-1]))
    order = np.arange(len(codes)) if ordered else np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order])) + 1
    for rows in np.split(order, bounds):
        first = rows[0]
        yield _encode_group(
            rows=None if len(rows) == len(codes) else rows,
            texts={
                name: str(uniques[column_codes[first]])
                for name, (column_codes, uniques) in zip(_TEXT_COLUMNS, texts, strict=True)
            },
            values=values,
            null={name: bool(null[first]) for name, null in nulls.items()},
        )


def _encode_group(
    *,
    rows: np.ndarray | None,
    texts: dict[str, str],
    values: dict[str, np.ndarray],
    null: dict[str, bool],
) -> bytes:
    """Records of rows sharing their text values and null pattern, fields in COLUMNS order."""
    encoded = {name: text.encode() for name, text in texts.items()}
    layout: list[tuple[str, str]] = [("nfields", ">i2")]
    for name in COLUMNS:
        layout.append((f"{name}_len", ">i4"))
        if name in encoded:
            layout.append((name, f"S{len(encoded[name])}"))
        elif not null.get(name, False):
            layout.append((name, _WIDTHS[name]))

    records = np.empty(len(values["ts"]) if rows is None else len(rows), dtype=np.dtype(layout))
    records["nfields"] = len(COLUMNS)
    for name in COLUMNS:
        if name in encoded:
            records[f"{name}_len"] = len(encoded[name])
            records[name] = encoded[name]
        elif null.get(name, False):
            records[f"{name}_len"] = -1
        else:
            records[f"{name}_len"] = 8
            records[name] = values[name] if rows is None else values[name][rows]
    return records.tobytes()
