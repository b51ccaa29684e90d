"""PostgreSQL ``COPY ... (FORMAT BINARY)`` streams of canonical OHLCV frames, built by numpy.

A binary COPY record is a field count followed by (length, bytes) per field. Text and NULL make
record layouts vary, so rows are grouped by their text values (provider, symbol, interval) and by
which nullable columns are null; within a group every record has the same layout and the group
is one numpy structured array. Groups are yielded one at a time so that the server can ingest a
group while the next is encoded.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

COLUMNS_SQL = 'provider, symbol, "interval", ts, open, high, low, close, volume, vwap, trades'
HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in Unix microseconds
_TEXT_COLUMNS = ("provider", "symbol", "interval")
_FLOAT_COLUMNS = ("open", "high", "low", "close", "volume")
_FIELD_COUNT = 11


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
    ts = frame["ts"].dt.as_unit("us").array.asi8 - _PG_EPOCH_US
    floats = {name: frame[name].to_numpy(dtype="float64") for name in _FLOAT_COLUMNS}
    vwap = frame["vwap"].to_numpy(dtype="float64", na_value=np.nan)
    trades_null = frame["trades"].isna().to_numpy()
    trades = frame["trades"].to_numpy(dtype="int64", na_value=0)
    vwap_null = np.isnan(vwap)

    # One integer code per row: its text values and its null pattern.
    codes = vwap_null.astype(np.int64) * 2 + trades_null
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
            texts=[str(uniques[column_codes[first]]) for column_codes, uniques in texts],
            ts=ts,
            floats=floats,
            vwap=None if vwap_null[first] else vwap,
            trades=None if trades_null[first] else trades,
        )


def _encode_group(
    *,
    rows: np.ndarray | None,
    texts: list[str],
    ts: np.ndarray,
    floats: dict[str, np.ndarray],
    vwap: np.ndarray | None,
    trades: np.ndarray | None,
) -> bytes:
    def pick(values: np.ndarray) -> np.ndarray:
        return values if rows is None else values[rows]

    encoded = [text.encode() for text in texts]
    layout: list[tuple[str, str]] = [("nfields", ">i2")]
    for name, value in zip(_TEXT_COLUMNS, encoded, strict=True):
        layout += [(f"{name}_len", ">i4"), (name, f"S{len(value)}")]
    layout += [("ts_len", ">i4"), ("ts", ">i8")]
    for name in _FLOAT_COLUMNS:
        layout += [(f"{name}_len", ">i4"), (name, ">f8")]
    layout += [("vwap_len", ">i4")] + ([] if vwap is None else [("vwap", ">f8")])
    layout += [("trades_len", ">i4")] + ([] if trades is None else [("trades", ">i8")])

    records = np.empty(len(ts) if rows is None else len(rows), dtype=np.dtype(layout))
    records["nfields"] = _FIELD_COUNT
    for name, value in zip(_TEXT_COLUMNS, encoded, strict=True):
        records[f"{name}_len"] = len(value)
        records[name] = value
    records["ts_len"] = 8
    records["ts"] = pick(ts)
    for name in _FLOAT_COLUMNS:
        records[f"{name}_len"] = 8
        records[name] = pick(floats[name])
    records["vwap_len"] = -1 if vwap is None else 8
    if vwap is not None:
        records["vwap"] = pick(vwap)
    records["trades_len"] = -1 if trades is None else 8
    if trades is not None:
        records["trades"] = pick(trades)
    return records.tobytes()
