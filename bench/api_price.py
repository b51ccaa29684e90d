"""``GET /api/v1/data/price`` under load next to a trivial FastAPI route, with Redis up and
stopped.

    .venv/bin/python -m bench.api_price [--seconds 10] [--connections 32] [--rounds 3]
                                        [--modes up,stopped,stream]
                                        [--loader auto|wrk|python]

Run from the repository root; needs ``redis-server`` (the bench starts its own on a free port,
so that it can stop it) and preferably ``wrk`` (Debian: ``apt-get install wrk``). One uvicorn
process (one worker, uvloop and httptools as installed, no access log, the HTTP protocol and
limits of ``fks-api``: :func:`fks_pipelines.api.server.protocol_options`) serves the project's
app (``create_app``) from settings whose Binance is a local FakeBinance with its default rate
limits (10 requests/s), the price TTL the default 2 s, and the cache and limits in that Redis;
plus ``/bench/async``, an ``async def`` returning a constant (the **baseline**), passed through
``routers``.

Modes, each with a fresh Redis, server and fake:

- ``up``: Redis serves the provider cache: every answer but one per TTL is a cache hit (the bench
  checks the second request says ``cached``).
- ``stopped``: the price is fetched once, then the Redis server is killed: answers come from the
  service's own process cache, one upstream call per TTL at most (ideal: seconds / TTL per
  round). The bench checks that ``/health`` and the answers say ``process``.
- ``stream``: Redis up, and the bench writes BTCUSDT's live price every 50 ms as ``fks-stream``
  does (:class:`~fks_pipelines.realtime.prices.LivePrices`): answers come from the stream, no
  upstream call at all (the bench checks they say ``source: stream``).

Load on loopback from the same machine: ``wrk -t1 -c<connections> -d<seconds>s --latency``
(else a Python generator, which saturates itself at a few hundred requests/s: it measures
itself). Each round runs the baseline then the price for ``--seconds``; medians of the rounds.
Ratio = price requests/s / baseline requests/s in the same mode. Upstream = requests the fake
Binance received during the price runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from fks_pipelines_tests.fakes.binance import FakeBinance

PRICE = "/api/v1/data/price?symbol=BTC-USD"
BASELINE = "/bench/async"
TTL_S = float(os.environ.get("BENCH_TTL_S", "2"))  # FKS_CACHE_TTL_PRICE_S
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Load:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


def cpu_s(pid: int) -> float:
    """CPU time (user + system, every thread) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROVIDERS = ("BINANCE", "POLYGON", "COINGECKO", "COINMARKETCAP", "ALPHA_VANTAGE", "EODHD")


def run_app(port: int, fields: dict[str, object], baseline: bool = True) -> None:
    """Serve the project's app (``create_app``) from ``Settings(**fields)`` on ``port`` until
    the process ends: uvicorn with ``fks-api``'s protocol options, no access log; each provider
    whose ``FKS_<ID>_BASE_URL`` is not in ``fields`` points at a closed port (nothing reaches
    out); with ``baseline``, the trivial ``async def`` route at :data:`BASELINE` beside it."""
    import uvicorn
    from fastapi import APIRouter

    from fks_pipelines.api.app import create_app
    from fks_pipelines.api.server import protocol_options
    from fks_pipelines.settings import Settings

    routers = []
    if baseline:
        router = APIRouter()

        @router.get(BASELINE)
        async def trivial_async() -> dict[str, str]:
            return {"status": "ok"}

        routers.append(router)
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = {f"FKS_{p}_BASE_URL": closed for p in PROVIDERS}
    settings = Settings(**{**unreachable, **fields})
    uvicorn.run(
        create_app(settings, routers=routers, freeze_gc=True),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        **protocol_options(settings),
    )


def serve(port: int, binance_url: str, redis_url: str, data_dir: str) -> None:
    """The server process: the project's app plus the trivial route, on ``port``."""
    run_app(
        port,
        {
            "FKS_DATA_DIR": data_dir,
            "FKS_BINANCE_BASE_URL": binance_url,
            "REDIS_URL": redis_url,
            "FKS_CACHE_TTL_PRICE_S": TTL_S,
        },
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throwaway ``redis-server`` (no persistence) on a free port: its URL and process."""
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        if time.monotonic() > deadline:
            raise SystemExit("redis-server did not start")
        time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


def wait_until_up(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the server did not come up")
        time.sleep(0.2)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def with_wrk(url: str, seconds: int, connections: int) -> Load:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(*re.search(r"\s50%\s+([\d.]+)(us|ms|s)", out).groups())
    p99 = _ms(*re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out).groups())
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    timeouts = re.search(r"Socket errors:.*?(\d+) timeout", out)
    errors = sum(int(found.group(1)) for found in (non_2xx, timeouts) if found)
    return Load(rps, p50, p99, errors, total)


def with_python(url: str, seconds: int, connections: int) -> Load:
    async def run() -> Load:
        latencies: list[float] = []
        errors = 0
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(limits=limits) as client:
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                nonlocal errors
                while (started := time.perf_counter()) < stop:
                    response = await client.get(url)
                    latencies.append(time.perf_counter() - started)
                    errors += response.status_code != 200

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        latencies.sort()
        p50 = latencies[len(latencies) // 2] * 1e3
        p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1e3
        return Load(len(latencies) / elapsed, p50, p99, errors, len(latencies))

    return asyncio.run(run())


@dataclass(frozen=True)
class ModeResult:
    mode: str
    baseline: list[Load]
    price: list[Load]
    cpu_us: dict[str, list[float]]
    upstream: list[int]
    served_from: str


class LiveWriter(contextlib.AbstractContextManager["LiveWriter"]):
    """Writes BTCUSDT's live price every 50 ms in a thread, as fks-stream's flusher does."""

    def __init__(self, redis_url: str) -> None:
        import redis

        from fks_pipelines.realtime.prices import LivePrices

        self._client = redis.Redis.from_url(redis_url)
        self._prices = LivePrices(self._client)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LiveWriter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()

    def _run(self) -> None:
        import pandas as pd

        price = 43_000.0
        while not self._stop.wait(0.05):
            price += 0.5
            self._prices.put("BTCUSDT", price, pd.Timestamp.now(tz="UTC"))


def run_mode(mode: str, args: argparse.Namespace, load: object) -> ModeResult:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        redis_server() as (redis_url, redis_process),
        FakeBinance() as binance,
        tempfile.TemporaryDirectory() as data_dir,
        contextlib.ExitStack() as stack,
    ):
        command = [sys.executable, "-m", "bench.api_price", "--serve", str(port)]
        server = subprocess.Popen([*command, binance.url, redis_url, data_dir], cwd=ROOT)
        try:
            wait_until_up(base)
            first = httpx.get(f"{base}{PRICE}").json()
            second = httpx.get(f"{base}{PRICE}").json()
            if (first["cached"], second["cached"]) != (False, True):
                raise SystemExit(f"the price is not served from a cache: {first}, {second}")
            writer = LiveWriter(redis_url) if mode == "stream" else contextlib.nullcontext()
            stack.enter_context(writer)
            if mode == "stream":
                time.sleep(0.2)
                if httpx.get(f"{base}{PRICE}").json()["source"] != "stream":
                    raise SystemExit("with live prices written, the price is not the stream's")
            if mode == "stopped":
                redis_process.send_signal(signal.SIGKILL)
                redis_process.wait(timeout=10)
                time.sleep(TTL_S + 0.1)  # the entry in the process's cache is filled on a miss
                for _ in range(3):
                    httpx.get(f"{base}{PRICE}")
            answer = httpx.get(f"{base}{PRICE}").json()
            served_from = f"{answer['source']}/{answer['cache']}"
            health = httpx.get(f"{base}/health").json()["price_cache"]["serving"]
            if mode == "stopped" and (served_from, health) != ("rest/process", "process"):
                raise SystemExit(f"with Redis stopped: answer {served_from}, health {health}")
            baseline, price, upstream = [], [], []
            cpu_us: dict[str, list[float]] = {"baseline": [], "price": []}
            for _ in range(args.rounds):
                before = cpu_s(server.pid)
                done = load(f"{base}{BASELINE}", args.seconds, args.connections)  # type: ignore[operator]
                cpu_us["baseline"].append((cpu_s(server.pid) - before) / done.requests * 1e6)
                baseline.append(done)
                calls, before = len(binance.requests), cpu_s(server.pid)
                done = load(f"{base}{PRICE}", args.seconds, args.connections)  # type: ignore[operator]
                cpu_us["price"].append((cpu_s(server.pid) - before) / done.requests * 1e6)
                upstream.append(len(binance.requests) - calls)
                price.append(done)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return ModeResult(mode, baseline, price, cpu_us, upstream, f"{served_from} (health: {health})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per route and round")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default="up,stopped,stream", help="up, stopped, stream")
    parser.add_argument("--loader", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--serve", nargs=4, metavar=("PORT", "BINANCE", "REDIS", "DIR"))
    args = parser.parse_args()
    if args.serve:
        port, binance_url, redis_url, data_dir = args.serve
        serve(int(port), binance_url, redis_url, data_dir)
        return
    if not shutil.which("redis-server"):
        raise SystemExit("redis-server is not installed")
    loader = args.loader
    if loader == "auto":
        loader = "wrk" if shutil.which("wrk") else "python"
    if loader == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk); use --loader python")
    load = with_wrk if loader == "wrk" else with_python

    results = [run_mode(mode, args, load) for mode in args.modes.split(",")]
    print(
        f"loader: {loader}, {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds} s per route; price TTL {TTL_S:g} s; medians of the rounds"
    )
    print(
        f"{'mode':<8} {'route':<9} {'req/s':>7} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'p99/p50':>7} {'CPU/req':>8} {'errors':>6} {'upstream (ideal)':>17} served from"
    )
    for result in results:
        ideal = 0 if result.mode == "stream" else args.seconds / TTL_S
        base_rps = statistics.median(r.requests_per_s for r in result.baseline)
        for route, runs in (("baseline", result.baseline), ("price", result.price)):
            rps = statistics.median(r.requests_per_s for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            p99 = statistics.median(r.p99_ms for r in runs)
            cpu = statistics.median(result.cpu_us[route])
            errors = sum(r.errors for r in runs)
            upstream, served = "", ""
            if route == "price":
                upstream = f"{statistics.median(result.upstream):.0f} ({ideal:.0f})"
                served = result.served_from
            print(
                f"{result.mode:<8} {route:<9} {rps:>7.0f} {rps / base_rps:>6.2f} {p50:>7.2f} "
                f"{p99:>7.2f} {p99 / p50:>7.1f} {cpu:>5.0f} µs {errors:>6} {upstream:>17} {served}"
            )


if __name__ == "__main__":
    main()
