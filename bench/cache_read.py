"""Cached read of a 1,500-bar window: the project's read path next to a raw Redis GET, same run.

    .venv/bin/python -m bench.cache_read [--reads 1000] [--rounds 7] [--redis-url redis://...]

Run from the repository root. Baseline ("raw GET"): ``redis.Redis.get`` of the very key the
project stored, on a plain client of the same Redis: the cost of the cached bytes leaving Redis
with nothing done to them. Measured: ``BinanceClient.fetch_ohlcv`` of the same window on a
runtime that caches in Redis (cache key, GET, Arrow decode into a canonical frame, hit
accounting); its first call fills the cache from a local FakeBinance server and is not timed.
For context, ``decode_frame`` of the same bytes alone in a tight loop, and a raw GET followed by
``decode_frame``: the floor for any read path using this codec (decoding right after a socket
wait is slower than in a tight loop: caches are cold). Ratio = measured / baseline (1.0 = as
fast as the raw GET; the goal is at most 3). The four are interleaved over ``--rounds`` rounds
of ``--reads`` calls each and medians of the rounds reported. Flushes the Redis database it is
given (DB 14 by default) before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import pandas as pd

from bench.scratch import DEFAULT_REDIS_URL, scratch_redis
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.codec import decode_frame
from fks_pipelines.providers.runtime import RuntimeConfig, build_runtime
from fks_pipelines_tests.fakes.binance import FakeBinance

SYMBOL = "BTCUSDT"
INTERVAL = Interval.parse("1m")
START = pd.Timestamp("2024-01-05", tz="UTC")


def per_call_us(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1500, help="bars in the cached window")
    parser.add_argument("--reads", type=int, default=1000, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    end = START + args.bars * INTERVAL.offset

    with scratch_redis(args.redis_url) as raw, FakeBinance() as server:
        runtime = build_runtime(
            "binance", BinanceClient.LIMITS, RuntimeConfig(redis_url=args.redis_url)
        )
        if runtime.cache is None:
            raise SystemExit(f"no cache on {args.redis_url}: is Redis up?")
        with BinanceClient(server.url, runtime=runtime) as client:
            filled = client.fetch_ohlcv(SYMBOL, INTERVAL, START, end)
            [name] = raw.scan_iter("fks:v1:binance:ohlcv:*")
            payload = raw.get(name)
            assert payload is not None and len(filled) == args.bars
            pd.testing.assert_frame_equal(
                client.fetch_ohlcv(SYMBOL, INTERVAL, START, end), filled, check_exact=True
            )

            timings: dict[str, list[float]] = {"raw": [], "fetch": [], "decode": [], "both": []}
            for _ in range(args.rounds):
                timings["raw"].append(per_call_us(lambda: raw.get(name), args.reads))
                timings["both"].append(per_call_us(lambda: decode_frame(raw.get(name)), args.reads))
                timings["fetch"].append(
                    per_call_us(
                        lambda: client.fetch_ohlcv(SYMBOL, INTERVAL, START, end), args.reads
                    )
                )
                timings["decode"].append(per_call_us(lambda: decode_frame(payload), args.reads))
            upstream = len(server.requests_to("/fapi/v1/klines"))
            assert upstream == 1, f"{upstream} upstream requests: the timed reads were not hits"
            assert client.stats.cache_hits == 1 + args.rounds * args.reads
    median = {label: statistics.median(values) for label, values in timings.items()}
    raw_us, fetch_us = median["raw"], median["fetch"]

    print(
        f"window: {args.bars:,} bars of {INTERVAL}, {len(payload):,} bytes cached;"
        f" median of {args.rounds} interleaved rounds of {args.reads:,} reads"
    )
    rows = (
        ("raw redis GET of the stored key (baseline)", raw_us),
        ("decode_frame alone, tight loop (context)", median["decode"]),
        ("raw GET, then decode_frame (context)", median["both"]),
        ("fetch_ohlcv, cache hit", fetch_us),
    )
    for label, us in rows:
        print(f"{label + ':':<44} {us:>7.1f} µs/read  ratio {us / raw_us:.2f}")
    verdict = "met" if fetch_us <= 3 * raw_us else "MISSED"
    print(f"goal: fetch_ohlcv at most 3.00 times the raw GET: {verdict}")
    print(f"project code around GET + decode: {fetch_us - median['both']:.1f} µs/read")


if __name__ == "__main__":
    main()
