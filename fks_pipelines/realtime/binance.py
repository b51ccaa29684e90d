"""Binance USD-M futures kline streams: what to subscribe to, what a frame says, what was missed.

Pure: no sockets, no clocks of its own. The stream service (issue 18) connects to the combined
stream endpoint, hands each text frame to :func:`parse_frame`, passes a closed kline's ``data`` to
the same intake a signed webhook reaches, and after a reconnect asks the REST client for the
window :func:`missed_window` names.

Binance's rules for market streams (USD-M "Websocket Market Streams"): a combined stream is
``<base>/stream?streams=<name1>/<name2>/...``, names lowercase (``btcusdt@kline_1h``), at most
:data:`MAX_STREAMS_PER_CONNECTION` streams per connection, frames wrapped as
``{"stream": <name>, "data": <event>}``; a connection lives at most 24 hours; the server pings
every 3 minutes and drops a connection that has not answered within 10; at most 10 incoming
messages per second per connection (subscribing through the URL sends none).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import ValidationError

from fks_pipelines.market.intervals import Interval
from fks_pipelines.webhooks.events import BinanceKlineEvent

MAX_STREAMS_PER_CONNECTION = 1024


class FrameError(ValueError):
    """A frame that is not a kline event of the combined stream; says why."""


def stream_name(symbol: str, interval: str) -> str:
    """``btcusdt@kline_1h``: Binance's name of a symbol's kline stream."""
    return f"{symbol.lower()}@kline_{interval}"


def connection_urls(
    base_url: str,
    symbols: Iterable[str],
    intervals: Iterable[Interval],
    per_connection: int = MAX_STREAMS_PER_CONNECTION,
) -> dict[str, list[tuple[str, Interval]]]:
    """Combined-stream URLs covering every symbol x interval, at most ``per_connection``
    streams each, with the (symbol, interval) streams each carries, in a stable order (so a
    restart subscribes the same way)."""
    if per_connection < 1:
        raise ValueError("per_connection must be at least 1")
    by_name = {stream_name(s, i.name): (s, i) for s in symbols for i in intervals}
    names = sorted(by_name)
    base = base_url.rstrip("/")
    return {
        f"{base}/stream?streams={'/'.join(chunk)}": [by_name[name] for name in chunk]
        for chunk in (
            names[at : at + per_connection] for at in range(0, len(names), per_connection)
        )
    }


@dataclass(frozen=True)
class KlineFrame:
    """One kline event of a combined stream.

    Attributes:
        stream: The stream it came on (``btcusdt@kline_1h``).
        symbol: Binance's symbol (``BTCUSDT``).
        interval: The kline's interval name.
        open_ms: The kline's open, Unix ms (:attr:`open_time` as a timestamp).
        closed: Whether the kline has closed (``k.x``): only then is it a bar to store.
        price: Its latest close, the live price.
        event_ms: When Binance emitted the event, Unix ms (:attr:`event_time`).
        data: The event itself, as the webhook intake takes it.
    """

    stream: str
    symbol: str
    interval: str
    open_ms: int
    closed: bool
    price: float
    event_ms: int
    data: dict[str, Any]

    # Timestamps on demand: making two per frame cost a fifth of a frame's handling
    # (bench/stream_bridge), and most frames need neither.
    @property
    def open_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.open_ms, unit="ms", tz="UTC")

    @property
    def event_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.event_ms, unit="ms", tz="UTC")


def parse_frame(text: str | bytes) -> KlineFrame:
    """The kline event of one combined-stream text frame.

    Raises:
        FrameError: Not JSON, not ``{"stream": ..., "data": ...}``, not a valid kline event
            (the intake's own rules), or an event of another stream than the one named.
    """
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise FrameError(f"the frame is not JSON: {exc}") from None
    if not isinstance(frame, dict) or not isinstance(frame.get("stream"), str):
        raise FrameError('the frame is not {"stream": <name>, "data": <event>}')
    stream, data = frame["stream"], frame.get("data")
    if not isinstance(data, dict):
        raise FrameError(f"{stream}: the frame has no event object under data")
    try:
        event = BinanceKlineEvent.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'data'}: {error['msg']}"
            for error in exc.errors()
        )
        raise FrameError(f"{stream}: not a kline event ({problems})") from None
    if stream != stream_name(event.s, event.k.i):
        raise FrameError(f"{stream}: carries a {event.s} {event.k.i} kline")
    return KlineFrame(
        stream=stream,
        symbol=event.s,
        interval=event.k.i,
        open_ms=event.k.t,
        closed=event.k.x,
        price=float(event.k.c),
        event_ms=event.E,
        data=data,
    )


def missed_window(
    last_closed_open: pd.Timestamp | None,
    interval: Interval,
    now: pd.Timestamp,
    since: pd.Timestamp,
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """``[start, end)`` of the bar opens that closed while a stream was not listening.

    ``last_closed_open`` is the open of the last closed kline the stream passed on; None when
    none yet, and then the gap starts with the bar open at ``since`` (when the service began
    listening: that bar closed after it). ``now`` is when the stream listens again; ``end`` is
    the open of the bar still open then, which will arrive on the stream. None when no bar
    closed in between.
    """
    if last_closed_open is None:
        start = since.floor(interval.offset)
    else:
        start = last_closed_open + interval.offset
    end = now.floor(interval.offset)
    return (start, end) if start < end else None
