"""Cached ``GET /api/v1/data/price`` under load, next to trivial FastAPI routes on the same server.

    .venv/bin/python -m bench.api_price [--seconds 10] [--connections 16] [--rounds 3]
                                        [--redis-url redis://...] [--loader auto|wrk|python]

Run from the repository root. One uvicorn process (one worker, uvloop and httptools as
installed, no access log) serves the project's app (``create_app``), built from settings whose
Binance is a local FakeBinance and whose cache and limits are in Redis (the database given, DB 14
by default, flushed before and after), with two more routes passed through ``routers``:
``/bench/async`` (``async def`` returning a constant) and ``/bench/sync`` (the same as a ``def``,
run in the thread pool like the data routes). The price of ``BTC-USD`` is fetched once before
timing and its TTL set above the run, so every timed request is a cache hit; the bench checks
that the fake server received exactly one request.

Load on loopback from the same machine: ``wrk`` when installed (Debian: ``apt-get install wrk``)
with one thread and ``--connections`` keep-alive connections, else a Python generator (asyncio,
httpx, the same number of concurrent keep-alive connections), which costs more CPU per request
and so measures lower; the figures say which one ran. Each round runs each route for
``--seconds``; routes are interleaved, and the medians of the rounds are reported. Baseline: the
``async def`` route. Ratio = price requests/s / baseline requests/s (1.0 = as fast as a route that
does nothing); p99 latency next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.scratch import DEFAULT_REDIS_URL, scratch_redis
from fks_pipelines_tests.fakes.binance import FakeBinance

PRICE = "/api/v1/data/price?symbol=BTC-USD"
ROUTES = {"async route": "/bench/async", "sync route": "/bench/sync", "cached price": PRICE}


@dataclass(frozen=True)
class Load:
    requests_per_s: float
    p99_ms: float
    errors: int
    requests: int


def cpu_s(pid: int) -> float:
    """CPU time (user + system, every thread) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(port: int, binance_url: str, redis_url: str, data_dir: str) -> None:
    """The server process: the project's app plus the trivial routes, on ``port``."""
    import uvicorn
    from fastapi import APIRouter

    from fks_pipelines.api.app import create_app
    from fks_pipelines.settings import Settings

    router = APIRouter()

    @router.get("/bench/async")
    async def trivial_async() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/bench/sync")
    def trivial_sync() -> dict[str, str]:
        return {"status": "ok"}

    closed = f"http://127.0.0.1:{free_port()}"  # nothing else reaches out
    settings = Settings(
        FKS_DATA_DIR=data_dir,
        FKS_BINANCE_BASE_URL=binance_url,
        REDIS_URL=redis_url,
        FKS_CACHE_TTL_PRICE_S=3600,
        **{
            f"FKS_{p}_BASE_URL": closed
            for p in ("POLYGON", "COINGECKO", "COINMARKETCAP", "ALPHA_VANTAGE", "EODHD")
        },
    )
    app = create_app(settings, routers=[router])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


def with_wrk(url: str, seconds: int, connections: int) -> Load:
    result = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    )
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", result.stdout).group(1))
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", result.stdout).groups()
    p99_ms = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    total = int(re.search(r"(\d+) requests in", result.stdout).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result.stdout)
    timeouts = re.search(r"Socket errors:.*?(\d+) timeout", result.stdout)
    errors = sum(int(found.group(1)) for found in (non_2xx, timeouts) if found)
    return Load(rps, p99_ms, errors, total)


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
        p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1e3
        return Load(len(latencies) / elapsed, p99, errors, len(latencies))

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per route and round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--loader", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--serve", nargs=4, metavar=("PORT", "BINANCE", "REDIS", "DIR"))
    args = parser.parse_args()
    if args.serve:
        port, binance_url, redis_url, data_dir = args.serve
        serve(int(port), binance_url, redis_url, data_dir)
        return

    loader = args.loader
    if loader == "auto":
        loader = "wrk" if shutil.which("wrk") else "python"
    if loader == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk); use --loader python")
    load = with_wrk if loader == "wrk" else with_python

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (
        scratch_redis(args.redis_url),
        FakeBinance() as binance,
        tempfile.TemporaryDirectory() as data_dir,
    ):
        command = [sys.executable, "-m", "bench.api_price", "--serve", str(port)]
        server = subprocess.Popen(
            [*command, binance.url, args.redis_url, data_dir],
            cwd=Path(__file__).resolve().parent.parent,
        )
        try:
            wait_until_up(base)
            first = httpx.get(f"{base}{PRICE}").json()
            second = httpx.get(f"{base}{PRICE}").json()
            if (first["cached"], second["cached"]) != (False, True):
                raise SystemExit(f"the price is not served from the cache: {first}, {second}")
            results: dict[str, list[Load]] = {name: [] for name in ROUTES}
            cpu_us: dict[str, list[float]] = {name: [] for name in ROUTES}
            for _ in range(args.rounds):
                for name, path in ROUTES.items():
                    before = cpu_s(server.pid)
                    done = load(f"{base}{path}", args.seconds, args.connections)
                    cpu_us[name].append((cpu_s(server.pid) - before) / done.requests * 1e6)
                    results[name].append(done)
            upstream = len(binance.requests)
        finally:
            server.terminate()
            server.wait(timeout=30)

    rps = {
        name: statistics.median(r.requests_per_s for r in runs) for name, runs in results.items()
    }
    p99 = {name: statistics.median(r.p99_ms for r in runs) for name, runs in results.items()}
    cpu = {name: statistics.median(values) for name, values in cpu_us.items()}
    errors = sum(r.errors for runs in results.values() for r in runs)
    print(
        f"loader: {loader}, {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds} s per route; upstream requests: {upstream}; non-200 answers: {errors}"
    )
    print(f"{'route':<14} {'requests/s':>11} {'ratio':>6} {'p99 ms':>8} {'server CPU/request':>19}")
    for name in ROUTES:
        print(
            f"{name:<14} {rps[name]:>11.0f} {rps[name] / rps['async route']:>6.2f} "
            f"{p99[name]:>8.2f} {cpu[name]:>15.0f} µs ({cpu[name] / cpu['async route']:.1f}x)"
        )


if __name__ == "__main__":
    main()
