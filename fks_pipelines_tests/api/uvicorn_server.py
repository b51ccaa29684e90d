"""An ASGI app served by a real uvicorn server on a loopback port, in a thread, with the HTTP
protocol and request-head limits of ``fks-api`` (:func:`~fks_pipelines.api.server.
protocol_options`)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from fks_pipelines.api.server import protocol_options
from fks_pipelines.settings import Settings

_START_TIMEOUT_S = 30.0


@contextmanager
def serve(app: FastAPI, settings: Settings | None = None) -> Iterator[str]:
    """Serve ``app`` until the block ends; yields its base URL, e.g. ``http://127.0.0.1:41234``.

    The socket is bound before the server starts, so the port is known and never raced for.
    ``settings`` give the limits on request heads (default: the defaults).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = protocol_options(settings or Settings())
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT_S)
        sock.close()
