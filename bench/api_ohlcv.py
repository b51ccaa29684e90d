"""``GET /api/v1/data/ohlcv`` of 10,000 stored 1m bars, as JSON and as CSV, under load next to a
trivial FastAPI route.

    .venv/bin/python -m bench.api_ohlcv [--seconds 10] [--connections 4] [--rounds 3]
                                        [--bars 10000] [--postgres URL]
                                        [--loader auto|wrk|python]

Run from the repository root; preferably with ``wrk`` (Debian: ``apt-get install wrk``). For each
warehouse, the bench writes ``--bars`` 1m bars (a random walk, every fifth volume NULL) of a
ticker of its own, ``binance`` ``BENCHUSDT`` (instrument ``BENCH-USD``, named by a universe file
of its own), into

- a fresh SQLite warehouse in a temporary folder, always;
- the PostgreSQL database at ``--postgres URL`` (e.g. postgresql://postgres@127.0.0.1:5432/test),
  when given: into that database's warehouse tables, where no other code writes that ticker. The
  bench refuses to start if the table holds bars of it already, and deletes exactly the rows it
  wrote when it ends.

One uvicorn process (one worker, uvloop and httptools as installed, no access log, the HTTP
protocol and limits of ``fks-api``: :func:`fks_pipelines.api.server.protocol_options`) serves
the project's app (``create_app``) on that warehouse, ``FKS_API_MAX_BARS`` = ``--bars``, every
provider pointed at a closed port (the bars all come from the warehouse; the bench checks
``source``), plus ``/bench/async``, an ``async def`` returning a constant (the **baseline**),
passed through ``routers``. Each round loads the baseline, then the JSON, then the CSV answer for
``--seconds`` with ``wrk -t1 -c<connections> -d<seconds>s --latency`` on loopback from the same
machine (else a Python generator, which measures itself as much as the server). Medians of the
rounds; ratio = route requests/s / baseline requests/s; CPU/req = the server's CPU time per
request; MB/s = answer bytes per second.
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import sqlalchemy as sa

from bench.api_price import (
    BASELINE,
    Load,
    cpu_s,
    free_port,
    run_app,
    wait_until_up,
    with_python,
    with_wrk,
)
from fks_pipelines.market.frame import build_frame
from fks_pipelines.warehouse.store import Scope, Warehouse
from fks_pipelines.warehouse.tables import ohlcv

PROVIDER, TICKER, INSTRUMENT, INTERVAL = "binance", "BENCHUSDT", "BENCH-USD", "1m"
START = pd.Timestamp("2024-03-01", tz="UTC")
UNIVERSE = f"""
instruments:
  {INSTRUMENT}: {{asset_class: crypto}}
priority: [{PROVIDER}]
providers:
  {PROVIDER}:
    {{start_date: 2024-01-01, intervals: [{INTERVAL}], symbols: {{{TICKER}: {INSTRUMENT}}}}}
"""
ROOT = Path(__file__).resolve().parent.parent

Loader = Callable[[str, int, int], Load]


def serve(port: int, warehouse_url: str, data_dir: str, max_bars: int) -> None:
    """The server process: the project's app on ``warehouse_url`` plus the trivial route."""
    universe = Path(data_dir) / "universe.yaml"
    universe.write_text(UNIVERSE)
    run_app(
        port,
        {
            "FKS_DATA_DIR": data_dir,
            "FKS_WAREHOUSE_URL": warehouse_url,
            "FKS_UNIVERSE_FILE": universe,
            "FKS_API_MAX_BARS": max_bars,
            "REDIS_URL": None,
        },
    )


def bars(count: int) -> tuple[pd.DataFrame, Scope]:
    """``count`` 1m bars of the bench's ticker from :data:`START` and the scope they fill."""
    rng = np.random.default_rng(7)
    close = 40_000.0 + rng.standard_normal(count).cumsum() * 7.3
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = rng.random(count) * 5.0
    volume = rng.random(count) * 12.0
    volume[::5] = np.nan  # NULL volumes go through both formats too
    ts = pd.date_range(START, periods=count, freq="1min")
    frame = build_frame(
        provider=PROVIDER,
        symbol=TICKER,
        interval=INTERVAL,
        ts=ts,
        open=open_,
        high=np.maximum(open_, close) + spread,
        low=np.minimum(open_, close) - spread,
        close=close,
        volume=volume,
        quote_volume=volume * close,
    )
    return frame, Scope(PROVIDER, INTERVAL, (TICKER,), START, ts[-1] + pd.Timedelta(minutes=1))


def ours(table: sa.Table = ohlcv) -> sa.ColumnElement[bool]:
    """The rows of the bench's ticker."""
    return sa.and_(
        table.c.provider == PROVIDER, table.c.interval == INTERVAL, table.c.symbol == TICKER
    )


def store(warehouse_url: str, frame: pd.DataFrame, scope: Scope) -> None:
    """Write the bench's bars; refuse when the warehouse holds bars of its ticker already."""
    warehouse = Warehouse.from_url(warehouse_url)
    warehouse.ensure_schema()
    with warehouse.engine.connect() as conn:
        found = conn.execute(sa.select(sa.func.count()).select_from(ohlcv).where(ours())).scalar()
    if found:
        raise SystemExit(f"the warehouse holds {found} {PROVIDER} {TICKER} bars already; not ours")
    warehouse.write_ohlcv(frame, scope)
    warehouse.engine.dispose()


def delete_ours(warehouse_url: str) -> int:
    """Delete the bench's rows (only those); how many there were."""
    engine = sa.create_engine(warehouse_url, poolclass=sa.NullPool)
    with engine.begin() as conn:
        deleted = conn.execute(sa.delete(ohlcv).where(ours())).rowcount
    engine.dispose()
    return deleted


@dataclass(frozen=True)
class Result:
    warehouse: str
    loads: dict[str, list[Load]]
    cpu_us: dict[str, list[float]]
    body_bytes: dict[str, int]


def check_answers(base: str, paths: dict[str, str], frame: pd.DataFrame) -> dict[str, int]:
    """Both answers hold every stored bar, from the warehouse; their sizes in bytes."""
    json_answer = httpx.get(f"{base}{paths['json']}", timeout=60)
    body = json_answer.json()
    if (json_answer.status_code, body["source"], len(body["candles"])) != (
        200,
        "warehouse",
        len(frame),
    ):
        raise SystemExit(f"the JSON answer is not the stored bars: {json_answer.text[:300]}")
    csv_answer = httpx.get(f"{base}{paths['csv']}", timeout=60)
    table = pd.read_csv(io.StringIO(csv_answer.text))
    if (csv_answer.headers.get("x-fks-source"), len(table)) != ("warehouse", len(frame)):
        raise SystemExit(f"the CSV answer is not the stored bars: {csv_answer.text[:300]}")
    if not np.array_equal(table["volume"].to_numpy(), frame["volume"].to_numpy(), equal_nan=True):
        raise SystemExit("the CSV volumes differ from the stored ones")
    return {"json": len(json_answer.content), "csv": len(csv_answer.content)}


def run(label: str, warehouse_url: str, args: argparse.Namespace, load: Loader) -> Result:
    frame, scope = bars(args.bars)
    end = scope.end.strftime("%Y-%m-%dT%H:%M:%SZ")
    query = f"symbol={INSTRUMENT}&interval={INTERVAL}&start=2024-03-01T00:00:00Z&end={end}"
    paths = {
        "baseline": BASELINE,
        "json": f"/api/v1/data/ohlcv?{query}",
        "csv": f"/api/v1/data/ohlcv?{query}&format=csv",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    store(warehouse_url, frame, scope)
    try:
        with tempfile.TemporaryDirectory() as data_dir:
            command = [sys.executable, "-m", "bench.api_ohlcv", "--serve", str(port)]
            server = subprocess.Popen([*command, warehouse_url, data_dir, str(args.bars)], cwd=ROOT)
            try:
                wait_until_up(base)
                sizes = check_answers(base, paths, frame)
                loads: dict[str, list[Load]] = {route: [] for route in paths}
                cpu_us: dict[str, list[float]] = {route: [] for route in paths}
                for _ in range(args.rounds):
                    for route, path in paths.items():
                        before = cpu_s(server.pid)
                        done = load(f"{base}{path}", args.seconds, args.connections)
                        cpu_us[route].append((cpu_s(server.pid) - before) / done.requests * 1e6)
                        loads[route].append(done)
            finally:
                server.terminate()
                server.wait(timeout=30)
    finally:
        if label == "postgresql":
            deleted = delete_ours(warehouse_url)
            print(f"postgresql: deleted the bench's {deleted} rows", file=sys.stderr)
    return Result(label, loads, cpu_us, sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="per route and round")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bars", type=int, default=10_000)
    parser.add_argument("--postgres", metavar="URL", help="also bench this PostgreSQL database")
    parser.add_argument("--loader", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        port, warehouse_url, data_dir, max_bars = args.serve
        serve(int(port), warehouse_url, data_dir, int(max_bars))
        return
    loader = args.loader
    if loader == "auto":
        loader = "wrk" if shutil.which("wrk") else "python"
    if loader == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk); use --loader python")
    load: Loader = with_wrk if loader == "wrk" else with_python

    results = []
    with tempfile.TemporaryDirectory() as folder:
        results.append(run("sqlite", f"sqlite:///{folder}/warehouse.sqlite", args, load))
    if args.postgres:
        results.append(run("postgresql", args.postgres, args, load))
    print(
        f"loader: {loader}, {args.connections} connections, {args.rounds} rounds of "
        f"{args.seconds} s per route; {args.bars} stored {INTERVAL} bars; medians of the rounds"
    )
    print(
        f"{'warehouse':<10} {'route':<9} {'req/s':>7} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU/req':>10} {'KB':>6} {'MB/s':>6} {'errors':>6}"
    )
    for result in results:
        base_rps = statistics.median(r.requests_per_s for r in result.loads["baseline"])
        for route, runs in result.loads.items():
            rps = statistics.median(r.requests_per_s for r in runs)
            p50 = statistics.median(r.p50_ms for r in runs)
            p99 = statistics.median(r.p99_ms for r in runs)
            cpu = statistics.median(result.cpu_us[route])
            size = result.body_bytes.get(route, 0)
            errors = sum(r.errors for r in runs)
            print(
                f"{result.warehouse:<10} {route:<9} {rps:>7.1f} {rps / base_rps:>6.4f} "
                f"{p50:>8.2f} {p99:>8.2f} {cpu / 1e3:>7.1f} ms {size / 1e3:>6.0f} "
                f"{rps * size / 1e6:>6.1f} {errors:>6}"
            )


if __name__ == "__main__":
    main()
