"""Binance combined kline streams: subscriptions, frames (documented and broken), missed bars."""

import json

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.realtime.binance import (
    MAX_STREAMS_PER_CONNECTION,
    FrameError,
    connection_urls,
    missed_window,
    parse_frame,
    stream_name,
)
from fks_pipelines.webhooks.events import BINANCE_EXAMPLE
from fks_pipelines_tests.webhooks.samples import BINANCE_DOCS_KLINE


def frame(data: object, stream: str = "btcusdt@kline_1h") -> str:
    return json.dumps({"stream": stream, "data": data})


def test_urls_name_lowercase_streams_and_split_at_the_connection_limit() -> None:
    symbols = [f"SYM{n}USDT" for n in range(600)]

    carried = connection_urls(
        "wss://fstream.example/", symbols, [Interval.parse("1h"), Interval.parse("1d")]
    )
    urls = list(carried)

    assert len(urls) == 2  # 1,200 streams
    first = urls[0].removeprefix("wss://fstream.example/stream?streams=").split("/")
    second = urls[1].removeprefix("wss://fstream.example/stream?streams=").split("/")
    assert len(first) == MAX_STREAMS_PER_CONNECTION and len(second) == 1200 - 1024
    assert first[0] == "sym0usdt@kline_1d" and all(name == name.lower() for name in first)
    assert set(first).isdisjoint(second)
    assert [stream_name(s, i.name) for s, i in carried[urls[0]]] == first
    assert [stream_name(s, i.name) for s, i in carried[urls[1]]] == second
    assert connection_urls("wss://x", ["BTCUSDT"], [Interval.parse("1h")]) == {
        "wss://x/stream?streams=btcusdt@kline_1h": [("BTCUSDT", Interval.parse("1h"))]
    }


def test_a_closed_kline_frame_carries_the_event_the_intake_takes() -> None:
    parsed = parse_frame(frame(BINANCE_EXAMPLE))

    assert parsed.stream == stream_name("BTCUSDT", "1h") == "btcusdt@kline_1h"
    assert (parsed.symbol, parsed.interval, parsed.closed) == ("BTCUSDT", "1h", True)
    assert parsed.open_time == pd.Timestamp("2024-01-04T23:00:00Z")
    assert parsed.event_time == pd.Timestamp(1704412800123, unit="ms", tz="UTC")
    assert parsed.price == 44210.0
    assert parsed.data == BINANCE_EXAMPLE


def test_the_documented_open_kline_is_a_live_price_only() -> None:
    parsed = parse_frame(frame(BINANCE_DOCS_KLINE, "btcusdt@kline_1m").encode())

    assert parsed.closed is False
    assert parsed.price == 0.002


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", '{"stream"'),
        (json.dumps({"data": BINANCE_EXAMPLE}), '{"stream"'),
        (json.dumps({"stream": "btcusdt@kline_1h"}), "no event object"),
        (frame({**BINANCE_EXAMPLE, "e": "aggTrade"}), "not a kline event"),
        (frame({**BINANCE_EXAMPLE, "k": {**BINANCE_EXAMPLE["k"], "h": "1"}}), "high"),
        (frame({**BINANCE_EXAMPLE, "k": {**BINANCE_EXAMPLE["k"], "x": "true"}}), "k.x"),
        (frame(BINANCE_EXAMPLE, "ethusdt@kline_1h"), "carries a BTCUSDT 1h kline"),
    ],
    ids=[
        "not-json",
        "not-object",
        "no-stream",
        "no-data",
        "other-event",
        "low-high",
        "string-flag",
        "wrong-stream",
    ],
)
def test_broken_frames_say_why(text: str, says: str) -> None:
    with pytest.raises(FrameError) as refused:
        parse_frame(text)

    assert says in str(refused.value)


HOUR = Interval.parse("1h")
T = pd.Timestamp


def test_missed_window_after_a_reconnect() -> None:
    # Last closed kline opened 10:00; back at 13:20: 11:00 and 12:00 closed unseen, 13:00 is open.
    assert missed_window(T("2024-01-05T10:00Z"), HOUR, T("2024-01-05T13:20Z"), T("2024")) == (
        T("2024-01-05T11:00Z"),
        T("2024-01-05T13:00Z"),
    )
    # Back within the same bar: nothing closed in between.
    assert missed_window(T("2024-01-05T10:00Z"), HOUR, T("2024-01-05T11:59Z"), T("2024")) is None
    # Nothing seen since listening began at 10:30: the 10:00 bar closed at 11:00, unseen.
    assert missed_window(None, HOUR, T("2024-01-05T12:05Z"), T("2024-01-05T10:30Z")) == (
        T("2024-01-05T10:00Z"),
        T("2024-01-05T12:00Z"),
    )
