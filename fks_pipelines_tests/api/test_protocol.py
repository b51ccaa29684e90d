"""HTTP hygiene of the service on a real socket (uvicorn with ``fks-api``'s protocol): ``Allow``
on 405, JSON refusals of what the server cannot parse, bounded request heads, and a connection
that survives a 500."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import APIRouter

from fks_pipelines.api.app import create_app
from fks_pipelines.settings import Settings
from fks_pipelines_tests.api.rawhttp import ConnectionClosed, RawConnection, RawResponse
from fks_pipelines_tests.api.support import Fakes, uvicorn_server

MAX_HEADER_BYTES = 16_384  # FKS_API_MAX_HEADER_BYTES's default
MAX_HEADERS = 100


@pytest.fixture
def server(fakes: Fakes, tmp_path: Path) -> Iterator[str]:
    """The service's app plus a route with a bug, served like ``fks-api`` serves it."""
    bug = APIRouter()

    @bug.get("/bug")
    async def raise_a_bug() -> None:
        raise RuntimeError("a bug with a secret-ish detail")

    settings: Settings = fakes.settings(tmp_path)
    with uvicorn_server(create_app(settings, routers=[bug]), settings) as url:
        yield url


def assert_json_error(response: RawResponse, status: int, code: str) -> None:
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def send_raw(url: str, data: bytes) -> RawResponse:
    """``data`` as the whole request, then the answer."""
    with RawConnection(url) as conn:
        conn.sock.sendall(data)
        return conn.read_response()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/api/v1/data/price?symbol=BTC-USD", "GET"),
        ("DELETE", "/api/v1/data/ohlcv", "GET"),
        ("GET", "/webhooks/binance", "POST"),
        ("PUT", "/health", "GET"),
    ],
)
def test_a_405_names_the_allowed_methods(server: str, method: str, path: str, allow: str) -> None:
    with RawConnection(server) as conn:
        response = conn.request(method, path)
        again = conn.request("GET", "/health")

    assert_json_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow
    assert again.status == 200  # a refusal leaves the connection open


def test_a_request_line_over_8_kib_is_a_json_414(server: str) -> None:
    target = "/api/v1/data/price?symbol=" + "A" * 9000

    response = send_raw(server, f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

    assert_json_error(response, 414, "uri_too_long")
    assert response.headers["connection"] == "close"


def test_a_request_line_within_the_limit_is_served(server: str) -> None:
    with RawConnection(server) as conn:
        response = conn.request("GET", "/api/v1/data/price?symbol=" + "A" * 7000)

    assert_json_error(response, 422, "invalid_request")  # the symbol's own limit, not the line


def test_too_many_header_fields_are_a_json_431(server: str) -> None:
    headers = "".join(f"X-Field-{i}: 1\r\n" for i in range(MAX_HEADERS + 1))

    response = send_raw(server, f"GET /health HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())

    assert_json_error(response, 431, "too_many_headers")


def test_headers_within_the_limits_are_served(server: str) -> None:
    headers = {f"X-Field-{i}": "v" * 100 for i in range(MAX_HEADERS - 2)}  # Host and length

    with RawConnection(server) as conn:
        response = conn.request("GET", "/health", headers)

    assert response.status == 200


def test_a_huge_header_block_is_refused_before_it_is_read(server: str) -> None:
    """The issue's 64 MB header block was read whole and answered; now the server answers 431
    once the limit is passed, so the client cannot even send most of it."""
    total = 64 << 20
    chunk = b"a" * 65_536
    sent = 0
    with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), 60) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        while sent < total:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # the server closed the connection
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there
        received = b""
        try:
            while data := sock.recv(65_536):
                received += data
        except ConnectionResetError:
            pass  # unread bytes of ours make the server's close a reset

    assert received.startswith(b"HTTP/1.1 431 "), received[:200]
    assert b'"headers_too_large"' in received
    assert sent < total // 8  # answered long before the block was sent


def test_an_unparsable_request_is_a_json_400(server: str) -> None:
    response = send_raw(server, b"GET /health HTTP/1.1\r\nHost x\r\n\r\n")

    assert_json_error(response, 400, "invalid_http_request")


def test_a_500_answers_json_and_keeps_the_connection(server: str) -> None:
    with RawConnection(server) as conn:
        failed = conn.request("GET", "/bug")
        try:
            after = conn.request("GET", "/health")
        except ConnectionClosed as exc:
            pytest.fail(f"the connection did not survive the 500: {exc}")

    assert_json_error(failed, 500, "internal_error")
    assert "secret" not in failed.body.decode()
    assert failed.headers.get("connection") != "close"
    assert after.status == 200
