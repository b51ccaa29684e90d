"""``fks-stream`` run as its console script, as compose runs it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from fks_pipelines_tests.devserver import free_port

BIN = Path(sys.executable).parent


@contextmanager
def fks_stream(env: dict[str, str], log: Path) -> Iterator[StreamService]:
    """``fks-stream`` with ``env`` (plus a free ``FKS_STREAM_PORT``), once its ``/health`` says
    ``ok``; killed on exit if still running (a test stops it with :meth:`StreamService.stop`,
    SIGTERM as compose does, and asserts how it stopped)."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [str(BIN / "fks-stream")],
            env={**env, "FKS_STREAM_HOST": "127.0.0.1", "FKS_STREAM_PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        service = StreamService(process, f"http://127.0.0.1:{port}", log)
        try:
            service.wait_until(lambda: service.health().get("status") == "ok", "/health ok")
            yield service
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


class StreamService:
    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    def health(self) -> dict[str, Any]:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).json()
        except httpx.HTTPError:
            return {}

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=2).text

    def stop(self) -> int:
        """SIGTERM, as compose stops it; its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(30)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
        """Until ``condition()``; fail with the log's tail if the service ends or time runs out."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"{what}: " + self.log.read_text()[-3000:]
            time.sleep(0.1)
