"""Webhook intake through a real uvicorn server on loopback: events/s with durability, and a burst.

    .venv/bin/python -m bench.webhook_intake [--warehouse sqlite postgres] [--seconds 5]
        [--rounds 3] [--concurrency 32] [--burst 10000] [--postgres-url ...] [--redis-url ...]

Run from the repository root; needs ``wrk``. For each warehouse, a uvicorn server (one process,
the default worker thread pool) serves ``bench.webhook_app``: ``POST /webhooks/binance`` on the
service's own intake (HMAC check, parsing, a committed insert into ``webhook_events``, ``XADD``
to the Redis stream, marking it published), and ``POST /baseline``, which reads the body and
answers 202. ``wrk`` (one thread, ``--concurrency`` connections, ``--seconds`` per run) posts
distinct kline events signed beforehand (``bench/webhook_intake.lua``), so the client costs
little next to the server; the rows stored are checked against the requests wrk completed.

Baselines, measured in the same run and interleaved with the intake over ``--rounds`` rounds
(medians reported):

- **trivial route**: the same kind of bodies to ``/baseline`` on the same server: the ceiling
  of this server and client with nothing done.
- **raw insert**: ``--raw-events`` rows inserted into ``webhook_events`` by this process, one
  plain ``INSERT`` and commit per event from ``--concurrency`` threads: the durable write alone.

Then a burst: ``--burst`` distinct events, each sent once by wrk over ``2 x --concurrency``
connections as fast as the server answers, until every one is answered. At the end the stored
rows and the stream entries are counted: lost = acknowledged (202) - stored must be 0.

SQLite: a file in a temporary directory. PostgreSQL: ``--postgres-url`` (default
``FKS_TEST_POSTGRES_URL``), in a scratch schema dropped at the end. Redis: ``--redis-url``
(database 12 by default), flushed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.scratch import scratch_redis, scratch_warehouse
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.tables import webhook_events
from fks_pipelines.webhooks.events import parse_events
from fks_pipelines.webhooks.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signed_headers
from fks_pipelines.webhooks.stream import STREAM

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "fks_bench_webhooks"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
HOUR_MS = 3_600_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00Z
STALL_S = 15.0  # a burst whose stored count stops growing this long is over


class Events:
    """Distinct closed kline events: every call to :meth:`take` gives bodies never sent before."""

    def __init__(self) -> None:
        self._next = 0

    def take(self, count: int) -> list[bytes]:
        first, self._next = self._next, self._next + count
        return [self._body(n) for n in range(first, first + count)]

    @staticmethod
    def _body(n: int) -> bytes:
        symbol = ("BTCUSDT", "ETHUSDT", "SOLUSDT")[n % 3]
        open_ms = START_MS + (n // 3) * HOUR_MS
        payload = {
            "e": "kline",
            "E": open_ms + HOUR_MS + 17,
            "s": symbol,
            "k": {
                "t": open_ms,
                "T": open_ms + HOUR_MS - 1,
                "s": symbol,
                "i": "1h",
                "f": 100 + n,
                "L": 200 + n,
                "o": "42000.10",
                "c": "42100.50",
                "h": "42210.00",
                "l": "41950.20",
                "v": "1520.337",
                "n": 4211,
                "x": True,
                "q": "64000000.12",
                "V": "760.1",
                "Q": "32000000.06",
                "B": "0",
            },
        }
        return json.dumps(payload, separators=(",", ":")).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def uvicorn_server(env: dict[str, str]) -> Iterator[str]:
    """``bench.webhook_app`` under uvicorn in a process of its own; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "bench.webhook_app:create_app"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            "--no-access-log",
        ],
        cwd=ROOT,
        env={**os.environ, **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"uvicorn exited with {process.returncode}")
            try:
                if httpx.post(f"{url}/baseline", content=b"{}").status_code == 202:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("uvicorn did not start within 60 s") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    status_errors: int
    p99_ms: float
    statuses: dict[int, int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def signed_requests(bodies: Sequence[bytes], secret: str, workdir: str) -> Path:
    """The requests file of the wrk script: ``bodies`` signed now."""
    requests = Path(workdir) / "requests.tsv"
    now = int(time.time())
    with requests.open("w") as out:
        for raw in bodies:
            signed = signed_headers(secret, raw, now)
            out.write(f"{signed[TIMESTAMP_HEADER]}\t{signed[SIGNATURE_HEADER]}\t{raw.decode()}\n")
    return requests


def wrk_command(
    server: str, path: str, requests: Path, connections: int, seconds: int, once: bool
) -> list[str]:
    return [
        *("wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "60s"),
        *("-s", str(ROOT / "bench" / "webhook_intake.lua"), server, "--", str(requests), path),
        *(["once"] if once else []),
    ]


def wrk(
    server: str,
    path: str,
    bodies: Sequence[bytes],
    secret: str,
    workdir: str,
    connections: int,
    seconds: int,
) -> WrkRun:
    """One wrk run of ``seconds`` posting ``bodies`` round and round."""
    requests = signed_requests(bodies, secret, workdir)
    result = subprocess.run(
        wrk_command(server, path, requests, connections, seconds, once=False),
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return WrkRun(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        status_errors=figures["status_errors"],
        p99_ms=figures["p99_us"] / 1000,
        statuses={},
    )


def wrk_burst(
    server: str,
    bodies: Sequence[bytes],
    secret: str,
    workdir: str,
    connections: int,
    stored: Callable[[], int],
) -> WrkRun:
    """Each of ``bodies`` posted once to the intake, as fast as it answers.

    wrk runs until interrupted, so this watches ``stored()`` (new rows) and interrupts it once
    every event is stored, or once nothing was stored for :data:`STALL_S` (refusals). The time
    is taken until the last event was stored.
    """
    requests = signed_requests(bodies, secret, workdir)
    command = wrk_command(server, "/webhooks/binance", requests, connections, 3600, once=True)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = last_progress = time.perf_counter()
    count = 0
    while count < len(bodies) and time.perf_counter() - last_progress < STALL_S:
        time.sleep(0.1)
        if (now := stored()) > count:
            count, last_progress = now, time.perf_counter()
    elapsed = last_progress - started
    time.sleep(1.0)  # the answers of the last commits reach wrk
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    figures = json.loads(out.strip().splitlines()[-1])
    return WrkRun(
        requests=len(bodies),
        seconds=elapsed,
        status_errors=0,
        p99_ms=figures["p99_us"] / 1000,
        statuses={int(status): n for status, n in figures["statuses"].items()},
    )


def count_rows(warehouse: Warehouse) -> int:
    with warehouse.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one()


def raw_inserts(warehouse: Warehouse, bodies: Sequence[bytes], threads: int) -> float:
    """Seconds to insert the events of ``bodies`` one plain INSERT and commit each."""
    rows = []
    now = datetime.now(UTC).replace(tzinfo=None) if warehouse.dialect == "sqlite" else None
    for raw in bodies:
        [event] = parse_events("binance", raw).events
        start, end = event.start, event.end
        if warehouse.dialect == "sqlite":
            start, end = start.replace(tzinfo=None), end.replace(tzinfo=None)
        rows.append(
            {
                "id": event.id,
                "payload_hash": event.payload_hash,
                "received_at": now or datetime.now(UTC),
                "source": event.source,
                "provider": event.provider,
                "symbol": event.symbol,
                "interval": event.interval,
                "window_start": start,
                "window_end": end,
                "closed": event.closed,
                "payload": event.payload,
                "status": "pending",
                "published": False,
            }
        )
    statement = sa.insert(webhook_events)

    def insert(row: dict[str, object]) -> None:
        with warehouse.transaction("raw insert") as conn:
            conn.execute(statement, row)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(insert, rows))
    return time.perf_counter() - started


def run(kind: str, args: argparse.Namespace) -> None:
    events = Events()
    secret = secrets.token_hex(16)
    with (
        scratch_warehouse(kind, args.postgres_url, SCHEMA) as url,
        scratch_redis(args.redis_url) as redis,
        tempfile.TemporaryDirectory(prefix="fks-bench-wrk-") as workdir,
    ):
        warehouse = Warehouse.from_url(url)
        env = {"FKS_WEBHOOK_SECRET": secret, "FKS_WAREHOUSE_URL": url, "REDIS_URL": args.redis_url}
        with uvicorn_server(env) as server:

            def load(path: str, bodies: Sequence[bytes], seconds: int = args.seconds) -> WrkRun:
                return wrk(server, path, bodies, secret, workdir, args.concurrency, seconds)

            load("/webhooks/binance", events.take(args.pool), seconds=1)  # warm up
            runs: dict[str, list[WrkRun]] = {"trivial": [], "intake": []}
            raw: list[float] = []
            for _ in range(args.rounds):
                runs["trivial"].append(load("/baseline", events.take(1000)))
                before = count_rows(warehouse)
                fresh = events.take(args.pool)
                intake = load("/webhooks/binance", fresh)
                stored = count_rows(warehouse) - before
                if intake.requests > len(fresh):
                    raise SystemExit(f"wrk sent {intake.requests} requests: raise --pool")
                # Each completed request stored a new event (requests still in flight when wrk
                # stopped may add a few more), and none was refused.
                if intake.status_errors or stored < intake.requests:
                    raise SystemExit(f"intake lost events: {intake}, {stored} stored")
                runs["intake"].append(intake)
                bodies = events.take(args.raw_events)
                raw.append(args.raw_events / raw_inserts(warehouse, bodies, args.concurrency))
            report(kind, args, runs, statistics.median(raw))

            before, stream_before = count_rows(warehouse), redis.xlen(STREAM)
            burst = wrk_burst(
                server,
                events.take(args.burst),
                secret,
                workdir,
                2 * args.concurrency,
                lambda: count_rows(warehouse) - before,
            )
        stored, published = count_rows(warehouse) - before, redis.xlen(STREAM) - stream_before
        acknowledged = burst.statuses.get(202, 0)
        print(
            f"  burst: {args.burst} events stored in {burst.seconds:.1f} s ({burst.rate:,.0f}/s,"
            f" p99 {burst.p99_ms:.0f} ms), answers {dict(sorted(burst.statuses.items()))}; "
            f"stored {stored}, published {published}, lost {acknowledged - stored}"
        )
        warehouse.engine.dispose()


def report(
    kind: str, args: argparse.Namespace, runs: dict[str, list[WrkRun]], raw_rate: float
) -> None:
    trivial = statistics.median(r.rate for r in runs["trivial"])
    intake = statistics.median(r.rate for r in runs["intake"])
    p99 = {name: statistics.median(r.p99_ms for r in measured) for name, measured in runs.items()}
    print(
        f"{kind}: {args.rounds} rounds of {args.seconds} s, {args.concurrency} connections "
        "(medians)\n"
        f"  trivial route (baseline) {trivial:8,.0f}/s  p99 {p99['trivial']:6.1f} ms\n"
        f"  raw insert    (baseline) {raw_rate:8,.0f}/s\n"
        f"  webhook intake           {intake:8,.0f}/s  p99 {p99['intake']:6.1f} ms"
        f"  = {intake / trivial:.2f} x trivial route, {intake / raw_rate:.2f} x raw insert"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--warehouse", nargs="+", choices=["sqlite", "postgres"], default=["sqlite", "postgres"]
    )
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument(
        "--pool",
        type=int,
        default=30_000,
        help="events signed for each intake run (each sent once)",
    )
    parser.add_argument("--raw-events", type=int, default=2000, help="raw inserts per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "FKS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark needs wrk (apt-get install wrk)")
    for kind in args.warehouse:
        run(kind, args)


if __name__ == "__main__":
    main()
