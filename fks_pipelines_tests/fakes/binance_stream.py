"""A Binance USD-M combined-stream server: ``/stream?streams=a/b/...`` over WebSocket.

Runs in a thread on ``127.0.0.1:<free port>``. The test decides what is sent and when: frames to
every connection subscribed to a stream, a close like Binance's 24-hour one, a dropped TCP
connection, refused connections. Frames are wrapped as Binance wraps them,
``{"stream": <name>, "data": <event>}``; kline values agree with the REST fake
(:func:`fks_pipelines_tests.fakes.binance.bar_values`), so a streamed kline and the same kline
fetched from REST are the same bar.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from fks_pipelines_tests.fakes.binance import INTERVAL_MS, bar_values


def kline(
    symbol: str,
    interval: str,
    open_ms: int,
    closed: bool,
    event_ms: int | None = None,
    price: float | None = None,
) -> dict[str, Any]:
    """A kline event as Binance streams it; values from the REST fake's bar at ``open_ms``
    (``price``, if given, replaces the close of an open kline)."""
    step = INTERVAL_MS[interval]
    values = {k: float(v[0]) for k, v in bar_values(np.array([open_ms]), step).items()}
    close = price if price is not None else values["close"]
    return {
        "e": "kline",
        "E": event_ms if event_ms is not None else open_ms + (step if closed else step // 2),
        "s": symbol,
        "k": {
            "t": open_ms,
            "T": open_ms + step - 1,
            "s": symbol,
            "i": interval,
            "f": 100,
            "L": 200,
            "o": f"{values['open']:.2f}",
            "c": f"{close:.2f}",
            "h": f"{max(values['high'], close):.2f}",
            "l": f"{min(values['low'], close):.2f}",
            "v": f"{values['volume']:.3f}",
            "n": int(values["trades"]),
            "x": closed,
            "q": f"{values['quote_volume']:.5f}",
            "V": "0",
            "Q": "0",
            "B": "0",
        },
    }


def frame(event: dict[str, Any]) -> str:
    """``event`` wrapped as a combined stream sends it."""
    k = event["k"]
    return json.dumps({"stream": f"{event['s'].lower()}@kline_{k['i']}", "data": event})


@dataclass
class _Client:
    connection: ServerConnection
    streams: frozenset[str]


@dataclass
class FakeBinanceStream:
    """The server (see the module). Use as a context manager.

    Attributes:
        connects: The stream list of every connection opened, in order.
        refuse: Connections to refuse (HTTP 503) before accepting again.
    """

    connects: list[frozenset[str]] = field(default_factory=list)
    refuse: int = 0
    _clients: list[_Client] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _server: Server | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> FakeBinanceStream:
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def main() -> None:
                self._server = await serve(
                    self._serve, "127.0.0.1", 0, process_request=self._admit, ping_interval=None
                )
                started.set()
                await self._server.wait_closed()

            loop.run_until_complete(main())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def __exit__(self, *_: object) -> None:
        assert self._loop is not None and self._server is not None
        self._loop.call_soon_threadsafe(self._server.close)
        assert self._thread is not None
        self._thread.join(10)

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}"

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._clients)

    def send(self, events: Iterable[dict[str, Any] | str | bytes]) -> None:
        """Send ``events`` (kline events, wrapped here; or raw frames, as they are) in order to
        every connection subscribed to their stream (raw frames: to every connection)."""
        frames = []
        for event in events:
            if isinstance(event, dict):
                text = frame(event)
                frames.append((json.loads(text)["stream"], text))
            else:
                frames.append((None, event))
        self._call(self._send(frames))

    def close_all(self, code: int = 1000, reason: str = "") -> None:
        """Close every connection with a close frame (Binance's 24-hour cut is one)."""
        self._call(self._close_all(code, reason))

    def drop_all(self) -> None:
        """Cut every connection's TCP stream without a close frame."""
        self._call(self._drop_all())

    def _call(self, coroutine: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    async def _send(self, frames: list[tuple[str | None, str | bytes]]) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            for stream, text in frames:
                if stream is None or stream in client.streams:
                    try:
                        await client.connection.send(text)
                    except Exception:  # a client gone meanwhile misses the rest
                        break

    async def _close_all(self, code: int, reason: str) -> None:
        with self._lock:
            clients = list(self._clients)
        await asyncio.gather(*(c.connection.close(code, reason) for c in clients))

    async def _drop_all(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.connection.transport.abort()

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        names = parse_qs(parts.query).get("streams", [""])[0]
        if parts.path != "/stream" or not names:
            return Response(400, "Bad Request", Headers(), b"Invalid request")
        if self.refuse:
            self.refuse -= 1
            return Response(503, "Service Unavailable", Headers(), b"")
        return None

    async def _serve(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        client = _Client(connection, frozenset(query["streams"][0].split("/")))
        with self._lock:
            self.connects.append(client.streams)
            self._clients.append(client)
        try:
            await connection.wait_closed()
        finally:
            with self._lock:
                self._clients.remove(client)
