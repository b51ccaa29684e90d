"""Warehouse read speed: the project's read path next to a raw read of the same rows, same run.

    .venv/bin/python -m bench.warehouse_read [--rows 1000000] [--rounds 3]
                                             [--url postgresql://...] [--skip-sqlite]

Rows: ``--rows`` 1m bars of four symbols (bench/warehouse_write.py's frame: NULL-free prices,
volumes, vwap and trades), written once into ``ohlcv`` and, as a consolidated series, into
``ohlcv_consolidated``.

PostgreSQL (a scratch schema, dropped afterwards):

- **baseline**: ``COPY (SELECT <the read's columns> ... ORDER BY symbol, ts) TO STDOUT (FORMAT
  BINARY)`` through psycopg, every byte received and nothing decoded: the rows leaving the server
  in its cheapest form.
- **read_ohlcv** / **read_consolidated**: the warehouse's read path (ADBC into Arrow, then
  pandas and the frame's dtypes).
- context: the SQLAlchemy Core query the read path replaced (one Python row per bar), and
  ConnectorX when it is installed (``uv pip install connectorx``; not a project dependency).

SQLite (a fresh file): baseline ``sqlite3`` ``execute(<the same SELECT>).fetchall()``; measured
the read path. Ratio = baseline seconds / measured seconds (1.0 = as fast as the raw read). The
steps are interleaved over ``--rounds`` rounds; medians reported.

Then the I/O manager: ``WarehouseIOManager.load_input`` for a daily downstream partition range of
30 days x 3 symbols of 1m bars against one ``read_ohlcv`` of the same window (the read path
alone).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from bench.warehouse_write import make_frame
from fks_pipelines.defs.io_manager import WarehouseIOManager
from fks_pipelines.defs.partitions import day_symbol_partitions
from fks_pipelines.defs.resources import WarehouseResource
from fks_pipelines.market import consolidate
from fks_pipelines.market.frame import COLUMNS, conform
from fks_pipelines.warehouse.reads import Select, libpq_uri
from fks_pipelines.warehouse.store import ConsolidatedScope, Scope, Warehouse
from fks_pipelines.warehouse.tables import ohlcv

SCHEMA = "fks_bench_read"
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")


def consolidated_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The provider frame as a consolidated series: one instrument per symbol."""
    out = frame.rename(columns={"symbol": "instrument"}).drop(columns=["provider"])
    out["instrument"] = out["instrument"].str.replace("USDT", "-USD")
    out["source"] = "binance"
    out["source_symbol"] = frame["symbol"]
    out["providers"] = 1
    out["agreement_bps"] = float("nan")
    return consolidate.conform_consolidated(out)


def selects(scope: Scope) -> tuple[Select, Select]:
    instruments = [s.replace("USDT", "-USD") for s in scope.symbols]
    bars = Select(
        "ohlcv",
        COLUMNS,
        {"provider": scope.provider, "interval": scope.interval},
        "symbol",
        list(scope.symbols),
        scope.start,
        scope.end,
    )
    series = Select(
        "ohlcv_consolidated",
        consolidate.COLUMNS,
        {"interval": scope.interval},
        "instrument",
        instruments,
        scope.start,
        scope.end,
    )
    return bars, series


def timed(step: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = step()
    return time.perf_counter() - started, value


def interleave(steps: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds of each step, the steps run in turn each round; checks they agree."""
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            elapsed, _value = timed(step)
            seconds[name].append(elapsed)
    return {name: statistics.median(values) for name, values in seconds.items()}


def report(title: str, rows: int, medians: dict[str, float], baseline: str) -> None:
    print(f"\n{title} ({rows:,} rows)")
    for name, seconds in medians.items():
        ratio = medians[baseline] / seconds
        tag = "  (baseline)" if name == baseline else f"  ratio {ratio:.2f}"
        print(f"  {name:<34} {seconds:7.3f} s  {rows / seconds:>11,.0f} rows/s{tag}")


def postgres(args: argparse.Namespace, frame: pd.DataFrame, scope: Scope) -> Warehouse:
    admin = sa.create_engine(args.url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
    admin.dispose()
    # The schema in the URL itself, so that both psycopg and ADBC's libpq connections use it.
    url = sa.make_url(args.url).update_query_dict({"options": f"-csearch_path={SCHEMA}"})
    warehouse = Warehouse(sa.create_engine(url))
    warehouse.ensure_schema()
    warehouse.write_ohlcv(frame, scope)
    series = consolidated_frame(frame)
    instruments = tuple(series["instrument"].unique())
    warehouse.write_consolidated(
        series, ConsolidatedScope(scope.interval, instruments, scope.start, scope.end)
    )
    with warehouse.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE ohlcv"))
        conn.execute(sa.text("VACUUM ANALYZE ohlcv_consolidated"))
    return warehouse


def copy_to(warehouse: Warehouse, select: Select) -> Callable[[], int]:
    sql = f"COPY ({select.postgres()}) TO STDOUT (FORMAT BINARY)"

    def run() -> int:
        received = 0
        with warehouse.engine.connect() as conn:
            raw = conn.connection.driver_connection
            with raw.cursor() as cursor, cursor.copy(sql) as copy:
                for block in copy:
                    received += len(block)
        return received

    return run


def sqlalchemy_read(warehouse: Warehouse, scope: Scope) -> Callable[[], pd.DataFrame]:
    """The read path before this one: SQLAlchemy Core rows into a frame."""

    def run() -> pd.DataFrame:
        query = (
            sa.select(*(ohlcv.c[name] for name in COLUMNS))
            .where(
                ohlcv.c.provider == scope.provider,
                ohlcv.c.interval == scope.interval,
                ohlcv.c.symbol.in_(list(scope.symbols)),
                ohlcv.c.ts >= scope.start.to_pydatetime(),
                ohlcv.c.ts < scope.end.to_pydatetime(),
            )
            .order_by(ohlcv.c.symbol, ohlcv.c.ts)
        )
        with warehouse.engine.connect() as conn:
            rows = conn.execute(query).all()
        return conform(pd.DataFrame(rows, columns=list(COLUMNS)))

    return run


def connectorx_read(warehouse: Warehouse, select: Select) -> Callable[[], pd.DataFrame] | None:
    try:
        import connectorx  # optional, for comparison only
    except ImportError:
        return None
    uri = libpq_uri(warehouse.engine.url)
    sql = select.postgres()

    def run() -> pd.DataFrame:
        table = connectorx.read_sql(uri, sql, return_type="arrow")
        return conform(table.to_pandas())

    return run


def bench_postgres(args: argparse.Namespace, frame: pd.DataFrame, scope: Scope) -> Warehouse:
    warehouse = postgres(args, frame, scope)
    bars, series = selects(scope)
    read = lambda: warehouse.read_ohlcv(  # noqa: E731
        scope.provider, scope.interval, scope.symbols, scope.start, scope.end
    )
    expected = read()
    assert len(expected) == len(frame)
    pd.testing.assert_frame_equal(sqlalchemy_read(warehouse, scope)(), expected)
    steps: dict[str, Callable[[], object]] = {
        "raw COPY TO (FORMAT BINARY)": copy_to(warehouse, bars),
        "read_ohlcv": read,
        "SQLAlchemy rows (the old path)": sqlalchemy_read(warehouse, scope),
    }
    cx = connectorx_read(warehouse, bars)
    if cx is not None:
        pd.testing.assert_frame_equal(cx(), expected)
        steps["ConnectorX (context)"] = cx
    report(
        "PostgreSQL, ohlcv",
        len(frame),
        interleave(steps, args.rounds),
        "raw COPY TO (FORMAT BINARY)",
    )
    instruments = list(series.keys)
    consolidated = {
        "raw COPY TO (FORMAT BINARY)": copy_to(warehouse, series),
        "read_consolidated": lambda: warehouse.read_consolidated(
            scope.interval, instruments, scope.start, scope.end
        ),
    }
    report(
        "PostgreSQL, ohlcv_consolidated",
        len(frame),
        interleave(consolidated, args.rounds),
        "raw COPY TO (FORMAT BINARY)",
    )
    return warehouse


def bench_sqlite(args: argparse.Namespace, frame: pd.DataFrame, scope: Scope, folder: Path) -> None:
    path = folder / "warehouse.sqlite"
    warehouse = Warehouse(sa.create_engine(f"sqlite:///{path}"))
    warehouse.ensure_schema()
    warehouse.write_ohlcv(frame, scope)
    series = consolidated_frame(frame)
    instruments = list(series["instrument"].unique())
    warehouse.write_consolidated(
        series, ConsolidatedScope(scope.interval, tuple(instruments), scope.start, scope.end)
    )
    bars, consolidated = selects(scope)

    def fetch(select: Select) -> Callable[[], int]:
        sql, params = select.sqlite()

        def run() -> int:
            conn = sqlite3.connect(path)
            try:
                return len(conn.execute(sql, params).fetchall())
            finally:
                conn.close()

        return run

    for title, name, select, read in (
        (
            "SQLite, ohlcv",
            "read_ohlcv",
            bars,
            lambda: warehouse.read_ohlcv(
                scope.provider, scope.interval, scope.symbols, scope.start, scope.end
            ),
        ),
        (
            "SQLite, ohlcv_consolidated",
            "read_consolidated",
            consolidated,
            lambda: warehouse.read_consolidated(
                scope.interval, instruments, scope.start, scope.end
            ),
        ),
    ):
        assert fetch(select)() == len(read()) == len(frame)
        steps = {"raw sqlite3 fetchall": fetch(select), name: read}
        report(title, len(frame), interleave(steps, args.rounds), "raw sqlite3 fetchall")
    warehouse.engine.dispose()


def bench_io_manager(warehouse: Warehouse, url: str, rounds: int) -> None:
    """30 days x 3 symbols of 1m bars: the I/O manager against one read of the window."""
    symbols = list(SYMBOLS[:3])
    start = pd.Timestamp("2022-01-01", tz="UTC")
    end = start + pd.Timedelta(days=30)
    partitions = day_symbol_partitions(start.date(), symbols)
    manager = WarehouseIOManager(warehouse=WarehouseResource(url=url))
    keys = dg.PartitionKeyRange(f"2022-01-01|{symbols[0]}", f"2022-01-30|{symbols[-1]}")

    # Built once: building a context outside a run creates an ephemeral Dagster instance
    # (about 140 ms), which a run's loading does not pay.
    context = dg.build_input_context(
        asset_key=dg.AssetKey(["ohlcv", "binance", "1m"]),
        partition_key="2022-01-30",  # the downstream partition (a daily asset's last day)
        asset_partition_key_range=keys,
        asset_partitions_def=partitions,
    )
    load = lambda: manager.load_input(context)  # noqa: E731

    read = lambda: warehouse.read_ohlcv("binance", "1m", symbols, start, end)  # noqa: E731
    loaded = load()
    assert len(loaded) == 30 * 1440 * 3, f"{len(loaded)} rows: --rows must be 172,800 or more"
    pd.testing.assert_frame_equal(loaded, read())
    report(
        "I/O manager, 30 days x 3 symbols of 1m bars",
        len(loaded),
        interleave(
            {"read_ohlcv of the window": read, "WarehouseIOManager.load_input": load}, rounds
        ),
        "read_ohlcv of the window",
    )


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
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    frame, scope = make_frame(args.rows, SYMBOLS)
    print(f"{len(frame):,} 1m bars of {len(SYMBOLS)} symbols; medians of {args.rounds} rounds")
    warehouse = bench_postgres(args, frame, scope)
    try:
        url = warehouse.engine.url.render_as_string(hide_password=False)
        bench_io_manager(Warehouse.from_url(url), url, args.rounds)
    finally:
        warehouse.engine.dispose()
        admin = sa.create_engine(args.url, poolclass=sa.NullPool)
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        admin.dispose()
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            bench_sqlite(args, frame, scope, Path(folder))


if __name__ == "__main__":
    main()
