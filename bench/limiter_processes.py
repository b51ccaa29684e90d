"""One provider limit shared by several processes through Redis, checked where the server counts.

    .venv/bin/python -m bench.limiter_processes [--processes 4] [--seconds 30] [--rps 10]
    .venv/bin/python -m bench.limiter_processes --rps 0.5 --seconds 20   # never two within 2 s

Run from the repository root. ``--processes`` processes each build their own runtime
(``build_runtime`` with ``ProviderLimits(requests=(Window.per_second(rps),))`` on Redis, the
cache left out so that every call is a request) and call ``BinanceClient.latest_price`` of a
local FakeBinance server in a loop, as fast as the limiter lets them, for ``--seconds`` from a
common start. The server records the arrival of every request on its own clock.

Reported: the limit (``limit`` requests per ``period`` s), the requests that arrived, the most
arrivals in any sliding window of ``period`` s (goal: at most ``limit``), the number of windows
over the limit (goal 0), the shortest span holding ``limit + 1`` arrivals (must be at least
``period``), and utilisation = arrivals during the run / (seconds x limit / period) (goal at least
90%; the limiter widens each window by its 50 ms margin, so the ceiling is period / (period +
0.05), 95% for a 1 s window). Flushes the Redis database it is given (DB 14 by default) before
and after.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import queue
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import numpy as np

from bench.scratch import DEFAULT_REDIS_URL, scratch_redis
from fks_pipelines.providers.binance import TICKER_PRICE_PATH, BinanceClient
from fks_pipelines.providers.errors import ProviderError
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
from fks_pipelines.providers.runtime import RuntimeConfig, build_runtime
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Request, Response

SYMBOL = "BTCUSDT"
_START_DELAY_S = 0.5  # from "every worker is ready" to the common start


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
    redis_url: str,
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
        RuntimeConfig(redis_url=redis_url, max_attempts=1),
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


def window_counts(arrivals: np.ndarray, period_s: float) -> np.ndarray:
    """For each arrival, how many arrivals fall in ``[it, it + period_s)`` (sorted input)."""
    return np.searchsorted(arrivals, arrivals + period_s, side="left") - np.arange(len(arrivals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rps", type=float, default=10.0, help="the provider's limit")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    window = Window.per_second(args.rps)

    spawn = mp.get_context("spawn")  # no inherited Redis connections or server threads
    ready, results = spawn.Queue(), spawn.Queue()
    go, start_at = spawn.Event(), spawn.Value("d", 0.0)
    with scratch_redis(args.redis_url), RecordingBinance() as server:
        workers = [
            spawn.Process(
                target=worker,
                args=(server.url, args.redis_url, args.rps, args.seconds),
                kwargs={"ready": ready, "go": go, "start_at": start_at, "results": results},
            )
            for _ in range(args.processes)
        ]
        for process in workers:
            process.start()
        try:
            for _ in workers:
                ready.get(timeout=60)
            started_mono = time.monotonic() + _START_DELAY_S
            start_at.value = time.time() + _START_DELAY_S
            go.set()
            reports = [results.get(timeout=args.seconds + 60) for _ in workers]
        except queue.Empty:
            raise SystemExit("a worker did not report in time") from None
        finally:
            for process in workers:
                process.join(timeout=10)
                if process.is_alive():
                    process.terminate()
                    process.join()
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
        f"{args.processes} processes, {args.seconds:g} s, limit {window.limit} per"
        f" {window.period_s:g} s (Window.per_second({args.rps:g})), shared through Redis"
    )
    print(
        f"requests: {len(arrivals)} arrived ({during} during the run), {answered} answered,"
        f" {calls} calls, {errors} errors; limiter wait {wait_s / max(calls, 1) * 1000:.0f} ms"
        " per call"
    )
    print(
        f"most arrivals in any {window.period_s:g} s window: {counts.max()}"
        f" (limit {window.limit}); windows over the limit: {over}"
        f"  (goal 0: {'met' if over == 0 else 'MISSED'})"
    )
    if len(spans):
        print(
            f"shortest span holding {window.limit + 1} arrivals: {spans.min():.3f} s"
            f" (must be ≥ {window.period_s:g} s)"
        )
    print(
        f"utilisation: {during / args.seconds:.2f} req/s of {allowed_rate:.2f} allowed ="
        f" {utilisation:.1%}  (goal ≥ 90%: {'met' if utilisation >= 0.9 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
