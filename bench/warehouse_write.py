"""Warehouse write speed on PostgreSQL: the project's write path next to raw COPY, same run.

    uv run python bench/warehouse_write.py [--rows 1000000] [--url postgresql://...]

Baseline ("raw COPY"): the same rows, already encoded, copied with one COPY BINARY into an empty
table identical to ``ohlcv`` (same primary key and constraints): the cost of the rows entering
that table with no idempotency machinery. For context, the same COPY into an index-free table.
Measured: ``Warehouse.write_ohlcv`` of the frame (encoding, scope DELETE, COPY, commit), first
into an empty scope, then replacing the same rows (the re-run case). Ratio = baseline time /
measured time (1.0 = as fast as raw COPY). The three measurements are interleaved over
``--rounds`` rounds and medians reported; each timed step starts after a CHECKPOINT so that it does
not pay for the previous step's WAL. Runs in a scratch schema that it drops afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import pandas as pd
import sqlalchemy as sa

from fks_pipelines.market.frame import build_frame
from fks_pipelines.warehouse import pgcopy
from fks_pipelines.warehouse.store import Scope, Warehouse

SCHEMA = "fks_bench"


def make_frame(rows: int, symbols: tuple[str, ...]) -> tuple[pd.DataFrame, Scope]:
    per_symbol = rows // len(symbols)
    start = pd.Timestamp("2022-01-01", tz="UTC")
    rng = np.random.default_rng(7)
    parts = []
    for symbol in symbols:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, per_symbol)))
        spread = np.abs(rng.normal(0, 1e-3, per_symbol)) * close
        parts.append(
            build_frame(
                provider="binance",
                symbol=symbol,
                interval="1m",
                ts=pd.date_range(start, periods=per_symbol, freq="min"),
                open=close,
                high=close + spread,
                low=close - spread,
                close=close,
                volume=rng.uniform(0, 50, per_symbol),
                vwap=close,
                trades=rng.integers(0, 500, per_symbol),
            )
        )
    frame = pd.concat(parts, ignore_index=True)
    end = start + pd.Timedelta(minutes=per_symbol)
    return frame, Scope("binance", "1m", symbols, start, end)


def checkpoint(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("CHECKPOINT"))


def raw_copy_seconds(engine: sa.Engine, payload: bytes, like: str) -> float:
    """Seconds for one COPY BINARY of ``payload`` into a fresh table built ``LIKE ohlcv``."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE raw_copy (LIKE ohlcv {like})"))
    checkpoint(engine)
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        started = time.perf_counter()
        with cursor.copy(pgcopy.copy_sql("raw_copy")) as copy:
            copy.write(payload)
    elapsed = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE raw_copy"))
    return elapsed


def write_seconds(
    engine: sa.Engine, warehouse: Warehouse, frame: pd.DataFrame, scope: Scope
) -> float:
    checkpoint(engine)
    started = time.perf_counter()
    warehouse.write_ohlcv(frame, scope)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--url",
        default=os.environ.get(
            "FKS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    args = parser.parse_args()

    admin = sa.create_engine(args.url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    engine = sa.create_engine(args.url, connect_args={"options": f"-csearch_path={SCHEMA}"})
    try:
        warehouse = Warehouse(engine)
        warehouse.ensure_schema()
        frame, scope = make_frame(args.rows, ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"))
        rows = len(frame)

        payload = pgcopy.encode(frame)
        timings: dict[str, list[float]] = {"bare": [], "raw": [], "first": [], "replace": []}
        for _ in range(args.rounds):
            timings["bare"].append(raw_copy_seconds(engine, payload, "INCLUDING DEFAULTS"))
            timings["raw"].append(raw_copy_seconds(engine, payload, "INCLUDING ALL"))
            with engine.begin() as conn:
                conn.execute(sa.text("TRUNCATE ohlcv"))
            timings["first"].append(write_seconds(engine, warehouse, frame, scope))
            timings["replace"].append(write_seconds(engine, warehouse, frame, scope))
            assert warehouse.count_ohlcv() == rows
        bare, raw, first, replace = (statistics.median(timings[k]) for k in timings)

        print(f"rows: {rows:,}, median of {args.rounds} interleaved rounds")
        print(f"raw COPY BINARY, no index (context): {rows / bare:>10,.0f} rows/s")
        print(f"raw COPY BINARY into ohlcv's shape:  {rows / raw:>10,.0f} rows/s  (baseline)")
        for label, seconds in (("empty scope", first), ("replacing the rows", replace)):
            print(
                f"write_ohlcv, {label + ':':<23} {rows / seconds:>10,.0f} rows/s"
                f"  ratio {raw / seconds:.2f}"
            )
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        admin.dispose()


if __name__ == "__main__":
    main()
