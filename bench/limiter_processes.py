"""One provider limit shared by several processes, through Redis and through files (embedded
mode), checked where the server counts; then what one acquisition costs on each.

    .venv/bin/python -m bench.limiter_processes [--processes 4] [--seconds 30] [--rps 10]
    .venv/bin/python -m bench.limiter_processes --rps 0.5 --seconds 20   # never two within 2 s
    .venv/bin/python -m bench.limiter_processes --backends files         # embedded mode only

Run from the repository root. For each backend of ``--backends`` (``redis``: ``REDIS_URL``;
``files``: no Redis, ``cache_dir`` a temporary directory, as ``./scripts/dev.sh`` runs),
``--processes`` processes each build their own runtime (``build_runtime`` with
``ProviderLimits(requests=(Window.per_second(rps),))``, the cache left out so that every call is a
request) and call ``BinanceClient.latest_price`` of a local FakeBinance server in a loop, as fast
as the limiter lets them, for ``--seconds`` from a common start. The server records the arrival
of every request on its own clock.

Reported per backend: the limit (``limit`` requests per ``period`` s), the requests that arrived,
the most arrivals in any sliding window of ``period`` s (goal: at most ``limit``), the number of
windows over the limit (goal 0), the shortest span holding ``limit + 1`` arrivals (must be at
least ``period``), and utilisation = arrivals during the run / (seconds x limit / period) (goal
at least 90%; the limiter widens each window by its 50 ms margin, so the ceiling is period /
(period + 0.05), 95% for a 1 s window).

Then the cost of ``RateLimiter.acquire`` under a limit it never reaches (a million per second),
so that only the shared state is measured (the pause read, the window check and append):
alone, the median of 7 interleaved rounds of ``--acquisitions`` in this process; and contended,
``--processes`` processes acquiring in a loop for 3 s from a common start (acquisitions per
second, all processes together). Baseline: Redis, measured in the same run; ratio = files /
Redis (for the time of one acquisition; for the contended rate, Redis / files). In-process
limits (no Redis, no data directory) are shown for reference. Flushes the Redis database it is
given (DB 14 by default) before and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import queue
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np

from bench.scratch import DEFAULT_REDIS_URL, scratch_redis
from fks_pipelines.providers.binance import TICKER_PRICE_PATH, BinanceClient
from fks_pipelines.providers.errors import ProviderError
from fks_pipelines.providers.ratelimit import ProviderLimits, RateLimiter, Window
from fks_pipelines.providers.runtime import RuntimeConfig, build_runtime
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Request, Response

SYMBOL = "BTCUSDT"
BACKENDS = ("redis", "files")
_START_DELAY_S = 0.5  # from "every worker is ready" to the common start
_CONTENDED_S = 3.0
_ROUNDS = 7
UNREACHED = ProviderLimits(requests=(Window(limit=1_000_000, period_s=1.0),))


class RecordingBinance(FakeBinance):
    """FakeBinance noting when each request arrives (``time.monotonic()``, this process)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []
        self._arrivals_lock = threading.Lock()

    def _handle(self, request: Request) -> Response:
        arrived = time.monotonic()
        with self._arrivals_lock:
            self.arrivals.append(arrived)
        return super()._handle(request)


def worker(
    server_url: str,
    config: dict[str, Any],
    rps: float,
    seconds: float,
    ready: Queue[bool],
    go: Event,
    start_at: Synchronized[float],
    results: Queue[tuple[int, int, float]],
) -> None:
    """Call ``latest_price`` until ``start_at + seconds`` (wall clock); report the counts."""
    runtime = build_runtime(
        "binance",
        ProviderLimits(requests=(Window.per_second(rps),)),
        RuntimeConfig(max_attempts=1, **config),
    )
    runtime = dataclasses.replace(runtime, cache=None)
    calls = errors = 0
    with BinanceClient(server_url, runtime=runtime) as client:
        ready.put(True)
        if not go.wait(timeout=120):
            return  # the parent gave up on the run
        time.sleep(max(0.0, start_at.value - time.time()))
        deadline = start_at.value + seconds
        while time.time() < deadline:
            calls += 1
            try:
                client.latest_price(SYMBOL)
            except ProviderError:
                errors += 1
        results.put((calls, errors, client.stats.limiter_wait_s))


def acquirer(
    config: dict[str, Any],
    seconds: float,
    ready: Queue[bool],
    go: Event,
    start_at: Synchronized[float],
    results: Queue[int],
) -> None:
    """Acquire from a limit never reached until ``start_at + seconds``; report how many."""
    limiter = limiter_for(config)
    limiter.acquire()  # opens the shared log before the start
    ready.put(True)
    if not go.wait(timeout=120):
        return
    time.sleep(max(0.0, start_at.value - time.time()))
    deadline = start_at.value + seconds
    count = 0
    while time.time() < deadline:
        limiter.acquire()
        count += 1
    results.put(count)


def limiter_for(config: dict[str, Any]) -> RateLimiter:
    return build_runtime("binance", UNREACHED, RuntimeConfig(**config)).limiter


def run_together(
    target: Callable[..., None], args: tuple[Any, ...], processes: int, seconds: float
) -> tuple[list[Any], float]:
    """Run ``target(*args, ready=, go=, start_at=, results=)`` in ``processes`` spawned processes
    released at one instant; returns their reports and that instant (``time.monotonic()``)."""
    spawn = mp.get_context("spawn")  # no inherited connections, file locks or server threads
    ready, results = spawn.Queue(), spawn.Queue()
    go, start_at = spawn.Event(), spawn.Value("d", 0.0)
    workers = [
        spawn.Process(
            target=target,
            args=args,
            kwargs={"ready": ready, "go": go, "start_at": start_at, "results": results},
        )
        for _ in range(processes)
    ]
    for process in workers:
        process.start()
    try:
        for _ in workers:
            ready.get(timeout=60)
        started_mono = time.monotonic() + _START_DELAY_S
        start_at.value = time.time() + _START_DELAY_S
        go.set()
        return [results.get(timeout=seconds + 60) for _ in workers], started_mono
    except queue.Empty:
        raise SystemExit("a worker did not report in time") from None
    finally:
        for process in workers:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()


@contextmanager
def backend(name: str, redis_url: str) -> Iterator[dict[str, Any]]:
    """Runtime settings sharing limits through ``name``, on fresh state."""
    if name == "redis":
        with scratch_redis(redis_url):
            yield {"redis_url": redis_url}
    elif name == "files":
        with tempfile.TemporaryDirectory(prefix="fks-bench-limits-") as directory:
            yield {"cache_dir": Path(directory)}
    else:
        yield {}


def window_counts(arrivals: np.ndarray, period_s: float) -> np.ndarray:
    """For each arrival, how many arrivals fall in ``[it, it + period_s)`` (sorted input)."""
    return np.searchsorted(arrivals, arrivals + period_s, side="left") - np.arange(len(arrivals))


def measure_limit(name: str, config: dict[str, Any], args: argparse.Namespace) -> None:
    window = Window.per_second(args.rps)
    with RecordingBinance() as server:
        reports, started_mono = run_together(
            worker, (server.url, config, args.rps, args.seconds), args.processes, args.seconds
        )
        arrivals = np.sort(np.array(server.arrivals))
        answered = len(server.requests_to(TICKER_PRICE_PATH))

    calls = sum(r[0] for r in reports)
    errors = sum(r[1] for r in reports)
    wait_s = sum(r[2] for r in reports)
    counts = window_counts(arrivals, window.period_s)
    over = int((counts > window.limit).sum())
    spans = arrivals[window.limit :] - arrivals[: -window.limit]
    during = int(((arrivals >= started_mono) & (arrivals < started_mono + args.seconds)).sum())
    allowed_rate = window.limit / window.period_s
    utilisation = during / (args.seconds * allowed_rate)

    print(
        f"[{name}] {args.processes} processes, {args.seconds:g} s, limit {window.limit} per"
        f" {window.period_s:g} s (Window.per_second({args.rps:g}))"
    )
    print(
        f"  requests: {len(arrivals)} arrived ({during} during the run), {answered} answered,"
        f" {calls} calls, {errors} errors; limiter wait {wait_s / max(calls, 1) * 1000:.0f} ms"
        " per call"
    )
    print(
        f"  most arrivals in any {window.period_s:g} s window: {counts.max()}"
        f" (limit {window.limit}); windows over the limit: {over}"
        f"  (goal 0: {'met' if over == 0 else 'MISSED'})"
    )
    if len(spans):
        print(
            f"  shortest span holding {window.limit + 1} arrivals: {spans.min():.3f} s"
            f" (must be ≥ {window.period_s:g} s)"
        )
    print(
        f"  utilisation: {during / args.seconds:.2f} req/s of {allowed_rate:.2f} allowed ="
        f" {utilisation:.1%}  (goal ≥ 90%: {'met' if utilisation >= 0.9 else 'MISSED'})"
    )


def measure_cost(names: list[str], args: argparse.Namespace) -> None:
    """Time one acquisition per backend, alone (interleaved rounds) and contended."""
    alone: dict[str, list[float]] = {name: [] for name in names}
    with ExitStack() as stack:
        limiters = {
            name: limiter_for(stack.enter_context(backend(name, args.redis_url))) for name in names
        }
        for limiter in limiters.values():
            limiter.acquire()  # connections and log files opened before timing
        for _ in range(_ROUNDS):
            for name, limiter in limiters.items():
                started = time.perf_counter()
                for _ in range(args.acquisitions):
                    limiter.acquire()
                alone[name].append((time.perf_counter() - started) / args.acquisitions * 1e6)
    contended: dict[str, float] = {}
    for name in names:
        with backend(name, args.redis_url) as config:
            counts, _ = run_together(acquirer, (config, _CONTENDED_S), args.processes, _CONTENDED_S)
        contended[name] = sum(counts) / _CONTENDED_S

    base_alone = statistics.median(alone["redis"]) if "redis" in alone else None
    base_rate = contended.get("redis")
    print(
        f"cost of one acquisition (limit never reached): alone, median of {_ROUNDS} rounds of"
        f" {args.acquisitions:,}; contended, {args.processes} processes for {_CONTENDED_S:g} s"
    )
    for name in names:
        per_call = statistics.median(alone[name])
        ratio = f" ({per_call / base_alone:.2f}x Redis)" if base_alone else ""
        rate_ratio = f" ({base_rate / contended[name]:.2f}x Redis)" if base_rate else ""
        print(
            f"  {name:<10} alone {per_call:8.1f} µs per acquisition{ratio};"
            f" contended {contended[name]:8.0f} acquisitions/s,"
            f" {1e6 / contended[name]:8.1f} µs each{rate_ratio}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rps", type=float, default=10.0, help="the provider's limit")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated: redis, files"
    )
    parser.add_argument("--acquisitions", type=int, default=2000, help="per round, alone")
    args = parser.parse_args()
    names = args.backends.split(",")
    if unknown := set(names) - set(BACKENDS):
        parser.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")

    for name in names:
        with backend(name, args.redis_url) as config:
            measure_limit(name, config, args)
    measure_cost([*names, "in-process"], args)


if __name__ == "__main__":
    main()
