"""Cache values <-> bytes: exact round trips, independent decoded frames, corrupt bytes."""

from collections.abc import Callable, Sequence

import pandas as pd
import pyarrow as pa
import pytest

from fks_pipelines.market.frame import build_frame, empty_frame, validate
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.codec import (
    FORMAT,
    CorruptEntry,
    OutdatedEntry,
    decode_frame,
    decode_quote,
    encode_frame,
    encode_quote,
)
from fks_pipelines_tests.providers.support import encode_format_1


def bars(
    vwap: list[float | None] | None,
    trades: list[int | None] | None,
    *,
    volume: Sequence[float | None] | None = (12.5, 0.0, 3.0),
    quote_volume: Sequence[float | None] | None = (1256.25, 0.0, 298.5),
    bar_kind: Sequence[str] | str = "traded",
) -> pd.DataFrame:
    return build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=pd.date_range("2024-01-05", periods=3, freq="h", tz="UTC"),
        open=[100.0, 101.5, 99.25],
        high=[101.0, 102.0, 100.0],
        low=[99.0, 100.5, 98.75],
        close=[100.5, 101.0, 99.5],
        volume=list(volume) if volume is not None else None,
        quote_volume=list(quote_volume) if quote_volume is not None else None,
        vwap=vwap,
        trades=pd.array(trades, dtype="Int64") if trades is not None else None,
        bar_kind=bar_kind,
    )


@pytest.mark.parametrize(
    "frame",
    [
        bars(vwap=[100.2, 101.2, 99.4], trades=[10, 20, 30]),
        bars(vwap=[100.2, None, 99.4], trades=[10, None, 30]),
        bars(vwap=None, trades=None),
        bars(None, None, volume=[12.5, None, 3.0], bar_kind=["traded", "auction", "traded"]),
        bars(None, None, volume=None, quote_volume=[2.4e9, None, 2.5e9], bar_kind="sampled"),
        empty_frame(),
    ],
    ids=[
        "complete",
        "null-vwap-and-trades",
        "all-null-vwap-and-trades",
        "auction-without-volume",
        "sampled-with-quote-volume-only",
        "empty",
    ],
)
def test_frames_round_trip_exactly(frame: pd.DataFrame) -> None:
    decoded = decode_frame(encode_frame(frame))

    pd.testing.assert_frame_equal(decoded, frame, check_exact=True)
    validate(decoded)


def test_a_frame_concatenated_from_pages_round_trips() -> None:
    """Its text columns are chunked Arrow arrays, one chunk per page."""
    first = bars(vwap=None, trades=None)
    second = first.assign(ts=first["ts"] + pd.Timedelta(hours=3), bar_kind="auction")
    frame = pd.concat([first, second], ignore_index=True)

    pd.testing.assert_frame_equal(decode_frame(encode_frame(frame)), frame, check_exact=True)


def set_text(frame: pd.DataFrame) -> None:
    frame.loc[0, "symbol"] = "ETHUSDT"


def set_ts(frame: pd.DataFrame) -> None:
    frame.loc[0, "ts"] = pd.Timestamp("2020-01-01", tz="UTC")


def replace_column(frame: pd.DataFrame) -> None:
    frame["close"] = frame["close"] * 2


def add_in_place(frame: pd.DataFrame) -> None:
    frame["volume"] += 1


def set_price(frame: pd.DataFrame) -> None:
    frame.loc[0, "open"] = 1.0


def set_vwap(frame: pd.DataFrame) -> None:
    frame.loc[frame["volume"] == 0, "vwap"] = 0.0


def set_trades(frame: pd.DataFrame) -> None:
    frame.loc[0, "trades"] = 99


def set_quote_volume(frame: pd.DataFrame) -> None:
    frame.loc[1, "quote_volume"] = 7.0


def set_kind(frame: pd.DataFrame) -> None:
    frame.loc[0, "bar_kind"] = "auction"


@pytest.mark.parametrize(
    "mutate",
    [
        set_text,
        set_ts,
        replace_column,
        add_in_place,
        set_price,
        set_vwap,
        set_trades,
        set_quote_volume,
        set_kind,
    ],
)
def test_frames_decoded_from_the_same_bytes_are_independent(
    mutate: Callable[[pd.DataFrame], None],
) -> None:
    original = bars(vwap=[100.2, None, 99.4], trades=[10, None, 30])
    data = encode_frame(original)
    first, second = decode_frame(data), decode_frame(data)

    mutate(first)

    pd.testing.assert_frame_equal(second, original, check_exact=True)
    pd.testing.assert_frame_equal(decode_frame(data), original, check_exact=True)
    assert not first.equals(original)


@pytest.mark.parametrize(
    "mutate",
    [
        set_text,
        set_ts,
        replace_column,
        add_in_place,
        set_price,
        set_vwap,
        set_trades,
        set_quote_volume,
        set_kind,
    ],
)
def test_the_same_edits_work_on_a_frame_that_was_never_cached(
    mutate: Callable[[pd.DataFrame], None],
) -> None:
    frame = bars(vwap=[100.2, None, 99.4], trades=[10, None, 30])
    mutate(frame)
    assert not frame.equals(bars(vwap=[100.2, None, 99.4], trades=[10, None, 30]))


def test_a_frame_of_several_symbols_is_not_encoded() -> None:
    frame = pd.concat([bars(None, None), bars(None, None).assign(symbol="ETHUSDT")])
    with pytest.raises(ValueError, match="one symbol"):
        encode_frame(frame.astype({"symbol": "string"}))


def arrow_stream_of_another_shape() -> bytes:
    batch = pa.RecordBatch.from_pydict({"ts": [1, 2], "price": [1.0, 2.0]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    "data",
    [b"", b"garbage, not arrow", encode_frame(bars(None, None))[:40]],
    ids=["empty", "text", "truncated"],
)
def test_bytes_that_are_not_a_frame_are_a_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntry) as caught:
        decode_frame(data)
    assert not isinstance(caught.value, OutdatedEntry)


def with_format(data: bytes, name: bytes) -> bytes:
    """``data`` re-written with the format named ``name`` in its metadata."""
    table = pa.ipc.open_stream(data).read_all()
    schema = table.schema.with_metadata({**table.schema.metadata, b"fks:format": name})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize(
    "data",
    [
        encode_format_1(bars([100.2, 101.2, 99.4], [10, 20, 30])),
        encode_format_1(empty_frame()),
        with_format(encode_frame(bars(None, None)), b"3"),
        with_format(encode_format_1(bars(None, None)), FORMAT.encode()),
        arrow_stream_of_another_shape(),
    ],
    ids=["format-1", "format-1-empty", "a-later-format", "format-1-columns-named-2", "other"],
)
def test_a_frame_written_in_another_format_is_an_outdated_entry(data: bytes) -> None:
    # Format 1's volume could be USD (CoinMarketCap) or derived coins (CoinGecko): never decoded
    # into today's columns, whatever it holds.
    with pytest.raises(OutdatedEntry) as caught:
        decode_frame(data)
    assert isinstance(caught.value, CorruptEntry)  # anything that handles corrupt entries copes


def test_quotes_round_trip_exactly() -> None:
    quote = Quote(
        provider="binance",
        symbol="BTCUSDT",
        price=42123.45,
        ts=pd.Timestamp("2024-01-05T10:30:00.123456789Z"),
    )

    assert decode_quote(encode_quote(quote)) == quote


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", b"{}", b'{"provider": "binance", "symbol": "X", "price": "n/a", "ts": 1}'],
    ids=["not-json", "missing-fields", "bad-price"],
)
def test_bytes_that_are_not_a_quote_are_a_corrupt_entry(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode_quote(data)
