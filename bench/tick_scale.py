"""Runs per tick, and the tick's time, of the catch-up sensor and a daily schedule, by symbols.

    .venv/bin/python -m bench.tick_scale [--symbols 3,30,300] [--days 7] [--repeat 5]

Run from the repository root. For each symbol count, a universe of Binance alone with that many
crypto symbols (``S000USDT``, ...) at 1h and 1d; its ``ohlcv/binance/1d`` asset's catch-up
sensor looks back ``--days`` finished days of an instance (SQLite, temporary) where nothing is
stored, so every partition is missing, and its daily schedule asks for one day. Each is
evaluated ``--repeat`` times in this process; the median is reported.

Measured: run requests per tick and the partitions they cover. Baselines: **per symbol**, the
runs of ranges that hold the symbol fixed (what the catch-up launched before it cut by day: one
run per symbol); **fewest**, ceil(partitions / 100), what a run of at most 100 partitions allows
if a range could span both dimensions (it cannot: a range holds one fixed). Tick time against an
**empty tick**, a sensor in the same instance that only returns a skip reason, and against the
instance query the tick makes (``get_status_by_partition`` over the same keys).
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import dagster as dg

from fks_pipelines.defs.schedules import build_catchup_sensor, build_daily_schedule
from fks_pipelines_tests.defs.support import target, wide_universe

NOW = datetime(2024, 7, 9, 3, 0, tzinfo=UTC)


def median_s(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="3,30,300")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    print(
        f"{'symbols':>7} {'tick':>9} {'runs':>5} {'partitions':>10} {'per symbol':>10} "
        f"{'fewest':>6} {'time ms':>8} {'vs empty':>8} {'vs query':>8}"
    )
    with dg.instance_for_test() as instance:
        empty = dg.SensorDefinition(
            "empty", evaluation_fn=lambda _: dg.SkipReason("nothing"), minimum_interval_seconds=30
        )
        empty_s, _ = median_s(lambda: empty(dg.build_sensor_context(instance=instance)), 20)
        for symbols in (int(s) for s in args.symbols.split(",")):
            daily = target("binance", "1d", universe=wide_universe(symbols))
            sensor = build_catchup_sensor(
                [daily], lookback_days=args.days, max_attempts=3, interval_s=60, clock=lambda: NOW
            )
            schedule = build_daily_schedule(daily)
            days = [NOW.date() - timedelta(days=n) for n in range(args.days, 0, -1)]
            keys = [str(k) for k in daily.trading_keys(days)]

            def tick(sensor: dg.SensorDefinition = sensor) -> dg.SensorResult:
                return sensor(dg.build_sensor_context(instance=instance))

            def query(keys: list[str] = keys, daily=daily) -> object:
                return instance.get_status_by_partition(daily.key, keys, daily.asset.partitions_def)

            tick_s, result = median_s(tick, args.repeat)
            query_s, _ = median_s(query, args.repeat)
            # Each symbol's days are consecutive and fewer than 100: one range per symbol.
            per_symbol = len({key.split("|")[1] for key in keys})
            print(
                f"{symbols:>7} {'catch-up':>9} {len(result.run_requests):>5} {len(keys):>10} "
                f"{per_symbol:>10} {math.ceil(len(keys) / 100):>6} {tick_s * 1000:>8.1f} "
                f"{tick_s / empty_s:>7.0f}x {tick_s / query_s:>7.1f}x"
            )
            context = dg.build_schedule_context(scheduled_execution_time=NOW)
            schedule_s, requests = median_s(
                lambda s=schedule, c=context: s.evaluate_tick(c).run_requests, args.repeat
            )
            print(
                f"{symbols:>7} {'schedule':>9} {len(requests):>5} {symbols:>10} {symbols:>10} "
                f"{math.ceil(symbols / 100):>6} {schedule_s * 1000:>8.1f} "
                f"{schedule_s / empty_s:>7.0f}x {'':>8}"
            )
    print(f"empty tick: {empty_s * 1000:.2f} ms")


if __name__ == "__main__":
    main()
