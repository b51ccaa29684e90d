"""Cache values <-> bytes: canonical frames as an Arrow IPC stream, quotes as JSON.

Only the per-row columns travel (``ts``, the numbers and ``bar_kind``, dictionary-encoded: a
byte per row). ``provider``, ``symbol`` and ``interval`` are constant within a cached window, so
they ride in the schema metadata and are rebuilt without per-row work. Decoding hands Arrow's
buffers to numpy instead of going through ``Table.to_pandas``: the cached read path is measured
against a raw Redis GET (bench/cache_read.py).

The schema metadata also names the format (:data:`FORMAT`). An entry written in another format (a
valid Arrow stream with another schema or format name, such as one from before ``quote_volume``
and ``bar_kind``, whose ``volume`` may mean something else) raises :class:`OutdatedEntry`: the
cache takes it for a miss and replaces it, without the warning a corrupt entry gets.
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

FORMAT = "2"
"""Bumped whenever the bytes or the meaning of a column change (2: ``quote_volume``, ``bar_kind``;
``volume`` in base units only)."""
_FORMAT_KEY = b"fks:format"
_TEXT = ("provider", "symbol", "interval")
_FLOATS = ("open", "high", "low", "close", "volume", "quote_volume", "vwap")
_KIND_TYPE = pa.dictionary(pa.int8(), pa.large_string())
_COLUMNS = pd.Index(list(COLUMNS))
_SCHEMA = pa.schema(
    [("ts", pa.int64())]
    + [(name, pa.float64()) for name in _FLOATS]
    + [("trades", pa.int64()), ("bar_kind", _KIND_TYPE)]
)


class CorruptEntry(ValueError):
    """Bytes that do not decode to a canonical frame."""


class OutdatedEntry(CorruptEntry):
    """A frame written in another format of this codec: a miss, not damage."""


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
    kinds = pa.array(frame["bar_kind"].array, type=pa.large_string())
    if isinstance(kinds, pa.ChunkedArray):  # a frame concatenated from pages keeps its chunks
        kinds = kinds.combine_chunks()
    columns.append(kinds.dictionary_encode().cast(_KIND_TYPE))
    metadata = {k.encode(): v.encode() for k, v in texts.items()}
    schema = _SCHEMA.with_metadata({**metadata, _FORMAT_KEY: FORMAT.encode()})
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
        OutdatedEntry: The bytes are a frame in another format (see the module docstring).
        CorruptEntry: The bytes are not such a stream.
    """
    try:
        reader = pa.ipc.open_stream(data)
        written = (reader.schema.metadata or {}).get(_FORMAT_KEY)
        if written != FORMAT.encode() or not reader.schema.equals(_SCHEMA, check_metadata=False):
            found = written.decode(errors="replace") if written else "none"
            raise OutdatedEntry(f"cached frame in format {found}, not {FORMAT}")
        table = reader.read_all()
        texts = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
        n = table.num_rows
        out: dict[str, object] = {name: _repeated(texts[name], n) for name in _TEXT}
        kinds = _kinds(table.column("bar_kind"), n)
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
    out["bar_kind"] = kinds
    # pandas' public constructors re-validate every column (~120 us of a ~300 us decode, measured
    # by bench/cache_read.py); these arrays already have exactly the canonical dtypes, so the
    # timestamps (DatetimeArray._simple_new above) and the frame are assembled from them
    # directly. Both are private pandas API: pandas is pinned by uv.lock, and the codec tests
    # compare decoded frames with the originals exactly, dtypes included.
    frame = pd.DataFrame._from_arrays(
        list(out.values()), columns=_COLUMNS, index=pd.RangeIndex(n), verify_integrity=False
    )
    return frame if n else conform(frame)


def _kinds(column: pa.ChunkedArray, n: int) -> pd.arrays.ArrowStringArray:
    """The ``bar_kind`` column. A window almost always holds one kind: then the shared repeated
    array, as for the text columns (decoding the dictionary costs about 80 us per 1,500 bars)."""
    if column.num_chunks == 1:
        chunk = column.chunk(0)
        if chunk.null_count == 0 and len(chunk.dictionary) == 1:
            return _repeated(chunk.dictionary[0].as_py(), n)
    return pd.arrays.ArrowStringArray(column.cast(pa.large_string()))


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
