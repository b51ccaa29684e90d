"""The service through a real socket: uvicorn in a thread, and ``fks-api`` as its own process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from fks_pipelines.api.app import create_app
from fks_pipelines.settings import Settings
from fks_pipelines_tests.api.support import Fakes, uvicorn_server
from fks_pipelines_tests.fakes.binance import FakeBinance

ROOT = Path(__file__).resolve().parents[2]


def test_price_and_health_through_uvicorn_on_a_socket(fakes: Fakes, tmp_path: Path) -> None:
    with uvicorn_server(create_app(fakes.settings(tmp_path))) as url, httpx.Client() as client:
        price = client.get(f"{url}/api/v1/data/price", params={"symbol": "BTC-USD"})
        again = client.get(f"{url}/api/v1/data/price", params={"symbol": "BTC-USD"})
        health = client.get(f"{url}/health")
        refused = client.get(f"{url}/api/v1/data/price", params={"symbol": "DOGE-USD"})

    assert price.status_code == 200
    assert (price.json()["cached"], again.json()["cached"]) == (False, True)
    assert health.json()["status"] == "ok"
    assert refused.status_code == 404
    assert refused.headers["content-type"] == "application/json"
    assert len(fakes.binance.requests) == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_console_script_serves_on_the_configured_port(tmp_path: Path) -> None:
    port = free_port()
    closed = f"http://127.0.0.1:{free_port()}"
    with FakeBinance() as binance:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "FKS_API_PORT": str(port),
            "FKS_DATA_DIR": str(tmp_path),
            "FKS_BINANCE_BASE_URL": binance.url,
            # Nothing reaches the internet: the other providers point at a closed port.
            **{
                f"FKS_{p}_BASE_URL": closed
                for p in ("POLYGON", "COINGECKO", "COINMARKETCAP", "ALPHA_VANTAGE", "EODHD")
            },
        }
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "fks-api")],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            health = wait_for(f"http://127.0.0.1:{port}/health")
            price = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/data/price", params={"symbol": "SOL-USD"}
            )
            # The console script serves with the limits on request heads.
            crowded = httpx.get(
                f"http://127.0.0.1:{port}/health", headers={f"X-{i}": "1" for i in range(150)}
            )
        finally:
            process.send_signal(signal.SIGINT)
            output = process.communicate(timeout=30)[0].decode()

    assert health.json()["providers"]["polygon"]["configured"] is False
    assert (price.status_code, price.json()["provider"]) == (200, "binance"), output
    assert (crowded.status_code, crowded.json()["error"]["code"]) == (431, "too_many_headers")
    assert f"Uvicorn running on http://127.0.0.1:{port}" in output
    assert process.returncode == 0


def wait_for(url: str, timeout_s: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_importing_the_app_opens_no_connection() -> None:
    probe = (
        "import socket\n"
        "def refuse(self, *args):\n"
        "    raise SystemExit(f'connection attempted at import: {args}')\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.create_connection = lambda *a, **k: refuse(None, *a)\n"
        "import fks_pipelines.api.app\n"
        "print('imported')\n"
    )
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:6379/11"}

    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


@pytest.mark.parametrize(
    "variable",
    [
        "FKS_API_PORT",
        "FKS_API_MAX_BARS",
        "FKS_API_DATA_THREADS",
        "FKS_API_INTAKE_THREADS",
        "FKS_API_THREAD_WAIT_S",
        "FKS_API_MAX_HEADER_BYTES",
        "FKS_API_MAX_HEADERS",
        "FKS_WEBHOOK_STORE_TIMEOUT_S",
    ],
)
def test_api_settings_refuse_nonsense(variable: str) -> None:
    with pytest.raises(ValidationError, match=variable):
        Settings(**{variable: 0})
