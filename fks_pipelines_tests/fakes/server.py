"""A real HTTP server on a loopback port, driven by a Python handler, recording every request."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Request:
    """A request as the server received it.

    Attributes:
        received_at: The server's ``time.monotonic()`` when the request arrived, so that pacing
            can be checked where the provider would count it.
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    received_at: float = 0.0
    body: bytes = b""


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0

    @classmethod
    def json(
        cls, payload: object, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> Response:
        return cls(
            status=status,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **(headers or {})},
        )


Handler = Callable[[Request], Response]


class _QuietServer(ThreadingHTTPServer):
    """Tests make clients give up on slow answers; the write that then fails is expected.

    Closing does not wait for the handler threads (daemons): one still reading a kept-alive
    connection that a client left open would hold a test's teardown forever.
    """

    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalHttpServer:
    """Serve ``handler`` on ``127.0.0.1:<free port>`` in a thread; use as a context manager.

    Attributes:
        requests: Every request received, in arrival order.
        latency_s: Extra delay before every answer (on top of a response's own ``delay_s``).
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.latency_s = 0.0
        self._lock = threading.Lock()
        outer = self

        class _RequestHandler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; without TCP_NODELAY the body of a delayed
            # answer on a kept-alive connection waits ~40 ms for the client's delayed ACK.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                request = Request(
                    method=self.command,
                    path=parts.path,
                    query=dict(parse_qsl(parts.query)),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    received_at=time.monotonic(),
                    body=self.rfile.read(int(self.headers.get("Content-Length") or 0)),
                )
                with outer._lock:
                    outer.requests.append(request)
                response = outer.handler(request)
                if response.delay_s or outer.latency_s:
                    threading.Event().wait(response.delay_s + outer.latency_s)
                if any(name.lower() == "date" for name in response.headers):
                    # A response that states its own Date gets no second one (tests of clients
                    # that read it); send_response would add the server's clock.
                    self.log_request(response.status)
                    self.send_response_only(response.status)
                    self.send_header("Server", self.version_string())
                else:
                    self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: object) -> None:
                """Keep test output quiet."""

        self._server = _QuietServer(("127.0.0.1", 0), _RequestHandler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def requests_to(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> LocalHttpServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
