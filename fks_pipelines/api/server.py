"""The server ``fks-api`` runs: uvicorn with limits on the request head and JSON refusals.

uvicorn's httptools protocol reads a request's line and headers without any bound (a 64 MB
header block was read whole and answered) and answers what it cannot parse with a plain-text
400. :func:`limited_protocol` makes a subclass that

- refuses a request line (method, target, version) over :data:`MAX_REQUEST_LINE` bytes with
  414 ``uri_too_long``;
- refuses a head (request line and header block) over ``max_head_bytes`` with 431
  ``headers_too_large`` as soon as that many bytes arrived without its end: what is buffered per
  request stays bounded, whatever a client sends;
- refuses more than ``max_headers`` header fields with 431 ``too_many_headers``;
- answers any other unparsable request with 400 ``invalid_http_request``;

each in the service's JSON error shape, closing the connection (the rest of what the client
sent cannot be read as a request). A request within the limits costs one length check per chunk
read. Without httptools the server falls back to uvicorn's h11 protocol with its own bound on
the head (``h11_max_incomplete_event_size``), which answers plain-text 400s.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from fks_pipelines.settings import Settings

MAX_REQUEST_LINE = 8192
"""Longest request line (method, target, version) accepted: 8 KiB, as nginx and gunicorn."""


class RequestRefused(Exception):
    """Raised from a parser callback to refuse the request with ``status`` and ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def limited_protocol(max_head_bytes: int, max_headers: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the limits of the module docstring.

    Raises:
        ImportError: httptools is not installed.
    """
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    max_line = min(MAX_REQUEST_LINE, max_head_bytes)

    class LimitedHttpToolsProtocol(HttpToolsProtocol):
        """See :mod:`fks_pipelines.api.server`."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True  # reading a request's line and headers, not its body
            self._head_bytes = 0
            self._header_count = 0
            self._refusal: RequestRefused | None = None

        def data_received(self, data: bytes) -> None:
            # Within a head, feed the parser at most what is left of the head's budget: what
            # httptools buffers for a header it has not finished (or a request line) stays
            # bounded, and a head that has not ended within the budget is refused.
            while data:
                if not self._in_head:
                    super().data_received(data)
                    return
                room = max_head_bytes - self._head_bytes
                if room <= 0:
                    self._refuse_head()
                    return
                piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
                self._head_bytes += len(piece)
                super().data_received(piece)
                if self.transport.is_closing():
                    return

        def _refuse_head(self) -> None:
            if not self._header_count and len(getattr(self, "url", b"")) >= max_line - 16:
                self._refusal = _uri_too_long(max_line)
            else:
                self._refusal = RequestRefused(
                    431,
                    "headers_too_large",
                    f"the request line and headers are over {max_head_bytes} bytes",
                )
            self.send_400_response("")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._header_count = 0

        def on_url(self, url: bytes) -> None:
            super().on_url(url)
            if len(self.url) > max_line:
                raise _uri_too_long(max_line)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_count += 1
            if self._header_count > max_headers:
                raise RequestRefused(
                    431, "too_many_headers", f"the request has over {max_headers} header fields"
                )
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True
            self._head_bytes = 0

        def send_400_response(self, msg: str) -> None:
            refusal = (
                self._refusal
                or _callback_refusal()
                or RequestRefused(400, "invalid_http_request", "the request is not valid HTTP/1.1")
            )
            self._refusal = None
            body = json.dumps({"error": {"code": refusal.code, "message": refusal.message}})
            content = [STATUS_LINE[refusal.status]]
            for name, value in self.server_state.default_headers:
                content.extend([name, b": ", value, b"\r\n"])
            content.extend(
                [
                    b"content-type: application/json\r\n",
                    b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                    b"connection: close\r\n",
                    b"\r\n",
                    body.encode("ascii"),
                ]
            )
            self.transport.write(b"".join(content))
            self.transport.close()

    return LimitedHttpToolsProtocol


def _uri_too_long(max_line: int) -> RequestRefused:
    return RequestRefused(414, "uri_too_long", f"the request target is over {max_line} bytes")


def _callback_refusal() -> RequestRefused | None:
    """The :class:`RequestRefused` a parser callback raised, if that is why parsing failed
    (httptools raises its own error from it, with the callback's as ``__context__``)."""
    error = sys.exc_info()[1]
    while error is not None:
        if isinstance(error, RequestRefused):
            return error
        error = error.__context__
    return None


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for ``fks-api``: host, port and the limits of the request head
    (``FKS_API_MAX_HEADER_BYTES``, ``FKS_API_MAX_HEADERS``)."""
    options: dict[str, Any] = {"host": settings.api_host, "port": settings.api_port}
    return {**options, **protocol_options(settings)}


def protocol_options(settings: Settings) -> dict[str, Any]:
    """The HTTP protocol of :func:`server_options` alone (for a server on another socket)."""
    try:
        protocol = limited_protocol(settings.api_max_header_bytes, settings.api_max_headers)
    except ImportError:
        return {"http": "h11", "h11_max_incomplete_event_size": settings.api_max_header_bytes}
    return {"http": protocol}
