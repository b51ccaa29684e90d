"""Cache hit next to cache miss against a provider answering in 100 ms, Redis and disk cache.

    .venv/bin/python -m bench.cache_hit_miss [--windows 30] [--hit-passes 10] [--latency-ms 100]

Run from the repository root. A local FakeBinance server waits ``--latency-ms`` before every
answer, as a distant API would. Baseline ("miss"): ``BinanceClient.fetch_ohlcv`` of
``--windows`` distinct 1,500-bar windows on an empty cache, each one upstream request (lock,
limiter, HTTP, parsing, storing). Measured ("hit"): the same windows again, served from the
cache, ``--hit-passes`` times over. Speed-up = mean miss / mean hit (goal at least 50). Run once
on a runtime caching in Redis and once on the embedded disk cache (``cache_dir``, a temporary
directory removed afterwards). Flushes the Redis database it is given (DB 14 by default) before
and after.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.scratch import DEFAULT_REDIS_URL, scratch_redis
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.binance import KLINES_PATH, MAX_KLINES_PER_PAGE, BinanceClient
from fks_pipelines.providers.cache import DiskBackend
from fks_pipelines.providers.runtime import RuntimeConfig, build_runtime
from fks_pipelines_tests.fakes.binance import FakeBinance

SYMBOL = "BTCUSDT"
INTERVAL = Interval.parse("1m")
START = pd.Timestamp("2024-01-01", tz="UTC")


def run(
    config: RuntimeConfig, windows: int, hit_passes: int, bars: int, latency_s: float
) -> dict[str, float]:
    """Mean ms per ``fetch_ohlcv`` of ``windows`` misses, then of the same windows as hits."""
    runtime = build_runtime("binance", BinanceClient.LIMITS, config)
    if runtime.cache is None:
        raise SystemExit(f"no cache with {config}: is Redis up?")
    span = bars * INTERVAL.offset
    starts = [START + k * span for k in range(windows)]
    timings: dict[str, list[float]] = {"miss": [], "hit": []}
    try:
        with FakeBinance() as server, BinanceClient(server.url, runtime=runtime) as client:
            server.latency_s = latency_s
            for label, passes in (("miss", 1), ("hit", hit_passes)):
                for start in starts * passes:
                    started = time.perf_counter()
                    frame = client.fetch_ohlcv(SYMBOL, INTERVAL, start, start + span)
                    timings[label].append((time.perf_counter() - started) * 1000)
                    assert len(frame) == bars
            upstream = len(server.requests_to(KLINES_PATH))
            stats = client.stats
            assert upstream == windows, f"{upstream} upstream requests for {windows} windows"
            assert (stats.cache_misses, stats.cache_hits) == (windows, windows * hit_passes)
            limiter_wait_ms = stats.limiter_wait_s * 1000 / windows
    finally:
        if isinstance(backend := runtime.cache.backend, DiskBackend):
            backend.cache.close()
    return {
        "miss": statistics.mean(timings["miss"]),
        "hit": statistics.mean(timings["hit"]),
        "hit_median": statistics.median(timings["hit"]),
        "limiter_wait": limiter_wait_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=30, help="distinct windows fetched")
    parser.add_argument("--hit-passes", type=int, default=10, help="reads of each window as hits")
    parser.add_argument("--bars", type=int, default=1500, help="bars per window (one page)")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="server answer delay")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    if not 1 <= args.bars <= MAX_KLINES_PER_PAGE:
        parser.error(f"--bars must be 1..{MAX_KLINES_PER_PAGE}: one upstream request per miss")
    latency_s = args.latency_ms / 1000

    counts = (args.windows, args.hit_passes, args.bars)
    results = {}
    with scratch_redis(args.redis_url):
        results["Redis"] = run(RuntimeConfig(redis_url=args.redis_url), *counts, latency_s)
    with tempfile.TemporaryDirectory(prefix="fks-bench-cache-") as directory:
        results["disk cache"] = run(RuntimeConfig(cache_dir=Path(directory)), *counts, latency_s)

    print(
        f"{args.windows} distinct windows of {args.bars:,} bars of {INTERVAL},"
        f" server latency {args.latency_ms:.0f} ms; mean per call over {args.windows} misses"
        f" and {args.windows * args.hit_passes} hits"
    )
    for backend, figures in results.items():
        speed_up = figures["miss"] / figures["hit"]
        print(
            f"{backend + ':':<11} miss {figures['miss']:7.1f} ms (baseline;"
            f" limiter wait {figures['limiter_wait']:.1f} ms),"
            f" hit {figures['hit']:6.2f} ms (median {figures['hit_median']:.2f}),"
            f" speed-up {speed_up:6.0f}x  (goal ≥ 50: {'met' if speed_up >= 50 else 'MISSED'})"
        )


if __name__ == "__main__":
    main()
