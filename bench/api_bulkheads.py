"""A cached ``GET /api/v1/data/price`` while webhooks wait on a locked ``webhook_events`` table.

    .venv/bin/python -m bench.api_bulkheads [--lock-seconds 30] [--webhooks 60]
                                            [--postgres-url postgresql://...]

Run from the repository root; needs PostgreSQL (``--postgres-url``, else
``FKS_TEST_POSTGRES_URL``; the bench works in a schema of its own, dropped at the end) and
``redis-server`` (its own, on a free port). One uvicorn process serves the project's app as
``fks-api`` does (its protocol, a frozen heap, default threads and store timeout), the warehouse
in that schema, the cache in that Redis, Binance a local FakeBinance, with a webhook secret.

The price of BTC-USD is cached (a TTL above the run) and one webhook stored first. Then the
price is asked for one request after the other on one connection: unloaded for
``--lock-seconds``, then for as long again while another connection holds ``LOCK TABLE
webhook_events`` and ``--webhooks`` signed webhooks, each on a connection of its own, wait for
it (the issue's probe: 60 webhooks on a 30 s lock; a cached price took 29.4 s). Each webhook is
sent once (no retries). Reported: the price's p50/p99/max in both phases, and how the webhooks
were answered and when.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import sqlalchemy as sa

from bench.api_price import ROOT, free_port, redis_server, run_app, wait_until_up
from fks_pipelines.webhooks.signing import signed_headers
from fks_pipelines_tests.fakes.binance import FakeBinance

PRICE = "/api/v1/data/price?symbol=BTC-USD"
SECRET = "bench-bulkheads-secret"
JULY_9 = 1720483200000
HOUR = 3_600_000


def serve(port: int, binance_url: str, redis_url: str, warehouse_url: str, data_dir: str) -> None:
    run_app(
        port,
        {
            "FKS_DATA_DIR": data_dir,
            "FKS_BINANCE_BASE_URL": binance_url,
            "REDIS_URL": redis_url,
            "FKS_WAREHOUSE_URL": warehouse_url,
            "FKS_WEBHOOK_SECRET": SECRET,
            "FKS_CACHE_TTL_PRICE_S": 3600,
        },
        baseline=False,
    )


def kline(n: int) -> bytes:
    open_ms = JULY_9 + n * HOUR
    k = {"t": open_ms, "T": open_ms + HOUR - 1, "s": "BTCUSDT", "i": "1h", "x": True}
    k.update(o="100.5", c="101.5", h="102", l="99", v="12.5")
    return json.dumps({"e": "kline", "E": open_ms + HOUR + 7, "s": "BTCUSDT", "k": k}).encode()


def deliver(base: str, raw: bytes) -> tuple[int, float]:
    started = time.monotonic()
    headers = {"Content-Type": "application/json", **signed_headers(SECRET, raw, int(time.time()))}
    with httpx.Client(base_url=base, timeout=300) as client:
        status = client.post("/webhooks/binance", content=raw, headers=headers).status_code
    return status, time.monotonic() - started


def prices_for(client: httpx.Client, seconds: float) -> list[float]:
    latencies = []
    stop = time.monotonic() + seconds
    while (started := time.monotonic()) < stop:
        response = client.get(PRICE)
        latencies.append(time.monotonic() - started)
        if response.status_code != 200 or not response.json()["cached"]:
            raise SystemExit(f"the price was not a cached 200: {response.text}")
    return latencies


def summary(latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[int(0.99 * (len(ordered) - 1))]
    return (
        f"{len(ordered):>6} {statistics.median(ordered) * 1e3:>8.2f} {p99 * 1e3:>8.2f} "
        f"{ordered[-1] * 1e3:>9.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock-seconds", type=float, default=30.0)
    parser.add_argument("--webhooks", type=int, default=60)
    parser.add_argument("--postgres-url", default=os.environ.get("FKS_TEST_POSTGRES_URL"))
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        port, binance_url, redis_url, warehouse_url, data_dir = args.serve
        serve(int(port), binance_url, redis_url, warehouse_url, data_dir)
        return
    if not args.postgres_url:
        raise SystemExit("needs PostgreSQL: --postgres-url or FKS_TEST_POSTGRES_URL")

    schema = f"fks_bench_{os.getpid()}"
    admin = sa.create_engine(args.postgres_url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    warehouse = sa.make_url(args.postgres_url).update_query_dict(
        {"options": f"-csearch_path={schema}"}
    )
    warehouse_url = warehouse.render_as_string(hide_password=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        with (
            redis_server() as (redis_url, _),
            FakeBinance() as binance,
            tempfile.TemporaryDirectory() as data_dir,
        ):
            command = [sys.executable, "-m", "bench.api_bulkheads", "--serve", str(port)]
            server = subprocess.Popen(
                [*command, binance.url, redis_url, warehouse_url, data_dir], cwd=ROOT
            )
            try:
                wait_until_up(base)
                if deliver(base, kline(-1))[0] != 202:
                    raise SystemExit("the first webhook was not stored")
                with httpx.Client(base_url=base, timeout=300) as client:
                    client.get(PRICE)
                    unloaded = prices_for(client, args.lock_seconds)
                    answers, loaded, waiting = run_locked(args, base, client, warehouse_url)
                    health = client.get("/health").json()["workers"]
            finally:
                server.terminate()
                server.wait(timeout=30)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    print(
        f"{args.webhooks} webhooks on a {args.lock_seconds:g} s table lock; cached price "
        "one request after the other"
    )
    print(f"{'price':<26} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9}")
    print(f"{'unloaded':<26} {summary(unloaded)}")
    print(f"{'webhooks waiting on lock':<26} {summary(loaded)}")
    print(f"most webhooks waiting for the store at once (/health, every 0.5 s): {waiting}")
    statuses = Counter(status for status, _ in answers)
    times = sorted(elapsed for _, elapsed in answers)
    print(
        f"webhook answers: {dict(statuses)}, after {times[0]:.1f}-{times[-1]:.1f} s "
        f"(median {statistics.median(times):.1f} s); workers after: {health}"
    )
    print(
        f"ratio of the price's p50 loaded / unloaded: "
        f"{statistics.median(loaded) / statistics.median(unloaded):.2f}"
    )


def run_locked(
    args: argparse.Namespace, base: str, client: httpx.Client, warehouse_url: str
) -> tuple[list[tuple[int, float]], list[float], int]:
    """The webhooks and the timed prices while the table is locked."""
    locker = sa.create_engine(warehouse_url, poolclass=sa.NullPool)
    peak = 0

    def watch(stop: threading.Event) -> None:
        nonlocal peak
        with httpx.Client(base_url=base, timeout=300) as own:
            while not stop.wait(0.5):
                intake = own.get("/health").json()["workers"]["intake"]
                peak = max(peak, intake["waiting_for_store"] or 0)

    try:
        with locker.connect() as conn, ThreadPoolExecutor(args.webhooks) as pool:
            conn.exec_driver_sql("LOCK TABLE webhook_events IN ACCESS EXCLUSIVE MODE")
            sent = [pool.submit(deliver, base, kline(n)) for n in range(args.webhooks)]
            stop = threading.Event()
            watcher = threading.Thread(target=watch, args=(stop,))
            watcher.start()
            loaded = prices_for(client, args.lock_seconds)
            stop.set()
            watcher.join()
            conn.rollback()
            answers = [done.result() for done in sent]
    finally:
        locker.dispose()
    return answers, loaded, peak


if __name__ == "__main__":
    main()
