"""Cache values <-> bytes: canonical frames as an Arrow IPC stream, quotes as JSON.

Only the per-row columns travel (``ts`` and the numbers). ``provider``, ``symbol`` and
``interval`` are constant within a cached window, so they ride in the schema metadata and are
rebuilt without per-row work. Decoding hands Arrow's buffers to numpy instead of going through
``Table.to_pandas``: the cached read path is measured against a raw Redis GET
(bench/cache_read.py).
"""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.core.arrays import DatetimeArray

from fks_pipelines.market.frame import COLUMNS, TS_DTYPE, conform
from fks_pipelines.market.quote import Quote

_TEXT = ("provider", "symbol", "interval")
_FLOATS = ("open", "high", "low", "close", "volume", "vwap")
_COLUMNS = pd.Index(list(COLUMNS))
_SCHEMA = pa.schema(
    [("ts", pa.int64())] + [(name, pa.float64()) for name in _FLOATS] + [("trades", pa.int64())]
)


class CorruptEntry(ValueError):
    """Bytes that do not decode to a canonical frame."""


def encode_frame(frame: pd.DataFrame) -> bytes:
    """Encode a canonical frame whose text columns are constant (one window of one symbol)."""
    texts = {}
    for name in _TEXT:
        values = frame[name].unique()
        if len(values) > 1:
            raise ValueError(f"cached frames hold one {name}, got {list(values)}")
        texts[name] = str(values[0]) if len(values) else ""
    columns = [pa.array(frame["ts"].array.asi8, type=pa.int64())]
    columns += [
        pa.array(frame[name].to_numpy(dtype="float64"), type=pa.float64()) for name in _FLOATS
    ]
    columns.append(pa.array(frame["trades"].array, type=pa.int64(), from_pandas=True))
    schema = _SCHEMA.with_metadata({k.encode(): v.encode() for k, v in texts.items()})
    batch = pa.RecordBatch.from_arrays(columns, schema=schema)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _repeated(text: str, n: int) -> pd.arrays.ArrowStringArray:
    """``text`` repeated ``n`` times, in a pandas array of its own."""
    return pd.arrays.ArrowStringArray(_repeated_arrow(text, n))


@lru_cache(maxsize=256)
def _repeated_arrow(text: str, n: int) -> pa.ChunkedArray:
    """Arrow arrays are immutable, so frames may share one; pandas arrays are not (setitem
    swaps the array they hold), which is why each frame gets its own wrapper."""
    return pa.chunked_array([pa.repeat(pa.scalar(text, pa.large_string()), n)])


def decode_frame(data: bytes) -> pd.DataFrame:
    """Decode bytes from :func:`encode_frame`.

    Raises:
        CorruptEntry: The bytes are not such a stream.
    """
    try:
        reader = pa.ipc.open_stream(data)
        if not reader.schema.equals(_SCHEMA, check_metadata=False):
            raise CorruptEntry(f"unexpected cached schema {reader.schema}")
        table = reader.read_all()
        texts = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
        n = table.num_rows
        out: dict[str, object] = {name: _repeated(texts[name], n) for name in _TEXT}
    except (pa.ArrowException, KeyError, UnicodeDecodeError) as exc:
        raise CorruptEntry(f"cached entry does not decode: {exc}") from None
    # Arrow's buffers are read-only; a cached frame must be as editable as a fetched one, so the
    # columns are copied out (a few microseconds for a 1,500-bar window).
    ts = _writable(table.column("ts"))
    out["ts"] = DatetimeArray._simple_new(ts.view("M8[ns]"), dtype=TS_DTYPE)
    for name in _FLOATS:
        out[name] = _writable(table.column(name))
    trades = table.column("trades")
    if trades.null_count:
        values, missing = _writable(trades.fill_null(0)), _writable(trades.is_null())
    else:
        values, missing = _writable(trades), np.zeros(n, dtype=bool)
    out["trades"] = pd.arrays.IntegerArray(values, missing)
    # pandas' public constructors re-validate every column (~120 us of a ~300 us decode, measured
    # by bench/cache_read.py); these arrays already have exactly the canonical dtypes, so the
    # timestamps (DatetimeArray._simple_new above) and the frame are assembled from them
    # directly. Both are private pandas API: pandas is pinned by uv.lock, and the codec tests
    # compare decoded frames with the originals exactly, dtypes included.
    frame = pd.DataFrame._from_arrays(
        list(out.values()), columns=_COLUMNS, index=pd.RangeIndex(n), verify_integrity=False
    )
    return frame if n else conform(frame)


def _writable(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy().copy()


def encode_quote(quote: Quote) -> bytes:
    return json.dumps(
        {
            "provider": quote.provider,
            "symbol": quote.symbol,
            "price": quote.price,
            "ts": quote.ts.value,
        }
    ).encode()


def decode_quote(data: bytes) -> Quote:
    try:
        raw = json.loads(data)
        return Quote(
            provider=raw["provider"],
            symbol=raw["symbol"],
            price=float(raw["price"]),
            ts=pd.Timestamp(int(raw["ts"]), unit="ns", tz="UTC"),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"cached quote does not decode: {exc}") from None
