"""Stream bridge: frames/s on one core, and the lag from a kline's close to its event row.

    .venv/bin/python -m bench.stream_bridge [--postgres postgresql://...] [--frames 200000]
        [--symbols 200] [--rounds 3] [--rate 20] [--closes 2000] [--redis-url ...]

Run from the repository root. A combined-stream server runs in a process of its own (pinned to
the second core when there are two, so it does not share the bridge's): ``websockets``, no
compression, frames built before they are sent. The bridge runs in this process (pinned to the
first core, with every thread it starts): :class:`~fks_pipelines.realtime.bridge.StreamBridge`
connected to that server, live prices in Redis, closed klines through the service's own intake
(:class:`~fks_pipelines.webhooks.intake.WebhookIntake` with its Redis stream) into a fresh
warehouse: SQLite (a file in a temporary directory), then PostgreSQL with ``--postgres`` (a
scratch schema, dropped at the end). Gap fills are not exercised (the REST side answers no
bars). Redis: ``--redis-url`` (database 14 by default), flushed before and after.

1. **Throughput.** The server sends ``--frames`` frames per connection as fast as the client
   reads them: open klines of ``--symbols`` symbols in turn, every 500th a closed one. Measured:
   the bridge, from the first frame received to the last one handled (its frame count, polled
   every 5 ms), then until every closed kline is stored. Baseline, interleaved over
   ``--rounds`` rounds, same server: a bare ``websockets`` client receiving the same frames and
   doing nothing with them. Medians; ratio = bridge frames/s / baseline frames/s. Also the CPU
   time of this process and of the server per frame while they ran.
2. **CPU per frame**, no socket: ``StreamBridge.handle`` of the same frames fed from a list,
   against ``json.loads`` of them (thread CPU time, medians of the rounds).
3. **Lag.** The server sends ``--closes`` closed klines, at ``--rate`` per second over 10
   symbols, each stamped with the real time (``E``, ms, rounded) as it is sent; the bridge stores
   them. Measured per event: the moment the intake's future resolves (committed, added to the
   Redis stream, marked published; a done-callback takes ``time.time()``) minus ``E``.
   Baseline: the same kind of events stamped, parsed and submitted straight to the intake at the
   same rate, no stream. p50 and p99; and the mean of the bridge's own
   ``fks_stream_lag_seconds`` (taken after its ``await`` of the future) beside them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import redis
import sqlalchemy as sa
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bench.scratch import DEFAULT_REDIS_URL, scratch_redis, scratch_warehouse
from fks_pipelines.market.intervals import Interval
from fks_pipelines.realtime.binance import connection_urls
from fks_pipelines.realtime.bridge import StreamBridge
from fks_pipelines.realtime.prices import LivePrices
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.tables import webhook_events
from fks_pipelines.warehouse.webhook_events import Receipt
from fks_pipelines.webhooks.events import WebhookEvent, parse_events
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines.webhooks.stream import EventStream
from fks_pipelines_tests.fakes.binance_stream import frame, kline

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "fks_bench_stream"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00Z
MINUTE_MS = 60_000
DAY_MS = 1440 * MINUTE_MS
CLOSED_EVERY = 500  # one frame in this many is a closed kline
LAG_SYMBOLS = 10
DIRECT_BATCH = 10_000  # day of the direct baseline's events (the server's: its connection count)
ONE_MINUTE = Interval.parse("1m")
STREAM_MAXLEN = 100_000  # the service's default (FKS_WEBHOOK_STREAM_MAXLEN)


def symbols(count: int) -> list[str]:
    return [f"S{n:04d}USDT" for n in range(count)]


def closed_kline(symbol: str, bar: int, batch: int, event_ms: int | None = None) -> dict:
    """The closed kline of ``symbol``'s ``bar``-th minute in day ``batch`` after 2024-01-01:
    each batch (a connection, a baseline run) stores klines no other batch stores."""
    return kline(symbol, "1m", START_MS + batch * DAY_MS + bar * MINUTE_MS, True, event_ms)


def open_frames(names: Sequence[str], count: int) -> list[str]:
    """``count`` frames of open klines, the symbols in turn, prices moving within each bar."""
    bases = {s: kline(s, "1m", START_MS, False) for s in names}
    frames = []
    for n in range(count):
        base = bases[names[n % len(names)]]
        k = base["k"]
        low, high = float(k["l"]), float(k["h"])
        price = low + (high - low) * (n % 97) / 96
        frames.append(frame({**base, "E": base["E"] + n, "k": {**k, "c": f"{price:.2f}"}}))
    return frames


def mixed_frames(opens: list[str], names: Sequence[str], batch: int) -> list[str]:
    """``opens`` with every :data:`CLOSED_EVERY`-th replaced by a closed kline of ``batch``."""
    frames = list(opens)
    for n in range(CLOSED_EVERY - 1, len(frames), CLOSED_EVERY):
        bar, symbol = divmod(n // CLOSED_EVERY, len(names))
        frames[n] = frame(closed_kline(names[symbol], bar, batch))
    return frames


def closed_count(frames: int) -> int:
    return frames // CLOSED_EVERY


# -- the server process ---------------------------------------------------------------------


def run_server(core: int | None, frames: int, symbol_count: int, rate: float, closes: int) -> None:
    """Serve ``/blast/stream`` (the frame mix, as fast as read) and ``/lag/stream`` (closed
    klines stamped with the time, at ``rate``) until killed; print the port once listening."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    names = symbols(symbol_count)
    opens = open_frames(names, frames)
    lag_names = symbols(LAG_SYMBOLS)
    connections = 0

    async def handler(ws: ServerConnection) -> None:
        nonlocal connections
        connections += 1
        batch = connections
        assert ws.request is not None
        if ws.request.path.startswith("/blast/"):
            for text in mixed_frames(opens, names, batch):
                await ws.send(text)
        else:
            began = time.perf_counter()
            for n in range(closes):
                bar, symbol = divmod(n, LAG_SYMBOLS)
                event = closed_kline(lag_names[symbol], bar, batch)
                await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
                event["E"] = round(time.time() * 1000)
                await ws.send(frame(event))
        await ws.wait_closed()

    async def main() -> None:
        async with serve(
            handler, "127.0.0.1", 0, compression=None, ping_interval=None, max_size=1 << 20
        ) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(port, flush=True)
            await server.serve_forever()

    asyncio.run(main())


@contextmanager
def stream_server(args: argparse.Namespace, core: int | None) -> Iterator[tuple[str, int]]:
    """The server in a process of its own: its base URL and pid."""
    command = [
        sys.executable,
        "-m",
        "bench.stream_bridge",
        "--serve",
        str(-1 if core is None else core),
    ]
    options = ["--frames", str(args.frames), "--symbols", str(args.symbols)]
    options += ["--rate", str(args.rate), "--closes", str(args.closes)]
    process = subprocess.Popen([*command, *options], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port:
            raise SystemExit("the stream server did not start")
        yield f"ws://127.0.0.1:{port}", process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_s(pid: int) -> float:
    """CPU time (user + system, every thread) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the bridge's side ----------------------------------------------------------------------


class NoBars:
    """The REST side of the bridge: no gap is filled (not measured here)."""

    def fetch_ohlcv(self, symbol: str, interval: Interval, start: object, end: object):
        return pd.DataFrame({"ts": pd.Series([], dtype="datetime64[ns, UTC]")})


class TimedSink:
    """The intake, noting when each event's future resolved: (that time, the event's ``E``)."""

    def __init__(self, intake: WebhookIntake) -> None:
        self.intake = intake
        self.done: list[tuple[float, int]] = []

    def submit(self, events: Sequence[WebhookEvent]) -> Future[list[Receipt]]:
        future = self.intake.submit(events)
        future.add_done_callback(lambda f: self._note(events, f))
        return future

    def _note(self, events: Sequence[WebhookEvent], future: Future[list[Receipt]]) -> None:
        now = time.time()
        if not future.cancelled() and future.exception() is None:
            self.done.extend((now, e.payload["E"]) for e in events)

    def lags_ms(self, since: int) -> list[float]:
        return [(at - e / 1000) * 1000 for at, e in self.done[since:]]

    async def until_stored(self, count: int, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.done) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"{count - len(self.done)} closed klines not stored")
            await asyncio.sleep(0.005)


@dataclass(frozen=True)
class Run:
    frames: int
    seconds: float
    cpu_s: float  # this process
    server_cpu_s: float

    @property
    def rate(self) -> float:
        return self.frames / self.seconds


def lag_seconds_total() -> tuple[float, float]:
    """Sum and count of ``fks_stream_lag_seconds`` so far."""
    get = REGISTRY.get_sample_value
    return get("fks_stream_lag_seconds_sum") or 0.0, get("fks_stream_lag_seconds_count") or 0.0


async def receive_only(url: str, frames: int, server_pid: int) -> Run:
    """The baseline: every frame received, nothing done with it."""
    async with connect(url, max_size=1 << 20) as ws:
        await ws.recv()
        began, cpu, server = time.perf_counter(), time.process_time(), cpu_s(server_pid)
        for _ in range(frames - 1):
            await ws.recv()
        return Run(
            frames - 1,
            time.perf_counter() - began,
            time.process_time() - cpu,
            cpu_s(server_pid) - server,
        )


def new_bridge(url: str, names: Sequence[str], sink: TimedSink, live: LivePrices | None):
    return StreamBridge(connection_urls(url, names, [ONE_MINUTE]), sink, NoBars(), live)


async def bridge_blast(
    url: str, names: Sequence[str], frames: int, sink: TimedSink, live: LivePrices, pid: int
) -> tuple[Run, float]:
    """The bridge on the frame mix: the run until the last frame is handled, and the seconds
    until the last closed kline is stored."""
    bridge = new_bridge(f"{url}/blast", names, sink, live)
    connection = bridge.connections[0]
    stored = len(sink.done) + closed_count(frames)
    task = asyncio.create_task(bridge.run())
    while connection.frames == 0:
        await asyncio.sleep(0.001)
    began, cpu, server = time.perf_counter(), time.process_time(), cpu_s(pid)
    first = connection.frames
    while connection.frames < frames:
        await asyncio.sleep(0.005)
    run = Run(
        frames - first,
        time.perf_counter() - began,
        time.process_time() - cpu,
        cpu_s(pid) - server,
    )
    await sink.until_stored(stored)
    all_stored = time.perf_counter() - began
    bridge.stop()
    await task
    return run, all_stored


async def bridge_lag(url: str, closes: int, sink: TimedSink, live: LivePrices):
    """Lags (ms) of ``closes`` streamed closed klines; the bridge's own mean lag (ms)."""
    bridge = new_bridge(f"{url}/lag", symbols(LAG_SYMBOLS), sink, live)
    since, (lag_sum, lag_count) = len(sink.done), lag_seconds_total()
    task = asyncio.create_task(bridge.run())
    await sink.until_stored(since + closes, timeout_s=closes / 2 + 60)
    bridge.stop()
    await task
    new_sum, new_count = lag_seconds_total()
    return sink.lags_ms(since), (new_sum - lag_sum) / (new_count - lag_count) * 1000


def direct_lag(sink: TimedSink, closes: int, rate: float, batch: int) -> list[float]:
    """The baseline: events like the server's, stamped, parsed and submitted at ``rate``."""
    names, since = symbols(LAG_SYMBOLS), len(sink.done)
    began = time.perf_counter()
    for n in range(closes):
        bar, symbol = divmod(n, LAG_SYMBOLS)
        event = closed_kline(names[symbol], bar, batch)
        time.sleep(max(0.0, began + n / rate - time.perf_counter()))
        event["E"] = round(time.time() * 1000)
        sink.submit(parse_events("binance", json.dumps(event).encode()).events)
    deadline = time.monotonic() + 60
    while len(sink.done) < since + closes and time.monotonic() < deadline:
        time.sleep(0.01)
    return sink.lags_ms(since)


def cpu_per_frame(frames: list[str], rounds: int) -> dict[str, float]:
    """Thread CPU µs per frame: ``json.loads``, then ``StreamBridge.handle`` (medians)."""
    names = symbols(1)  # handle() keeps whatever symbol a frame carries
    sink = TimedSink(WebhookIntake(None, "sqlite://"))  # handle() only queues closed events
    results: dict[str, list[float]] = {"json.loads": [], "handle": []}
    for _ in range(rounds):
        began = time.thread_time()
        for text in frames:
            json.loads(text)
        results["json.loads"].append(time.thread_time() - began)
        bridge = new_bridge("ws://unused", names, sink, None)
        began = time.thread_time()
        for text in frames:
            bridge.handle(text)
        results["handle"].append(time.thread_time() - began)
    return {k: statistics.median(v) / len(frames) * 1e6 for k, v in results.items()}


# -- warehouses -----------------------------------------------------------------------------


def stored_rows(url: str) -> int:
    store = Warehouse.from_url(url)
    try:
        with store.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one()
    finally:
        store.engine.dispose()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_kind(
    kind: str, url: str, args: argparse.Namespace, server: tuple[str, int], client: redis.Redis
) -> None:
    base, pid = server
    names = symbols(args.symbols)
    intake = WebhookIntake(None, url, EventStream.from_url(args.redis_url, STREAM_MAXLEN))
    sink = TimedSink(intake)
    live = LivePrices(client)
    warm = closed_kline(names[0], 0, DIRECT_BATCH - 1)
    sink.submit(parse_events("binance", json.dumps(warm).encode()).events).result(60)

    async def throughput() -> tuple[list[Run], list[Run], list[float]]:
        baseline, bridge, stored = [], [], []
        for _ in range(args.rounds):
            baseline.append(await receive_only(f"{base}/blast/stream?streams=x", args.frames, pid))
            run, all_stored = await bridge_blast(base, names, args.frames, sink, live, pid)
            bridge.append(run)
            stored.append(all_stored)
        return baseline, bridge, stored

    baseline, bridge, stored = asyncio.run(throughput())
    base_rate = statistics.median(r.rate for r in baseline)
    rate = statistics.median(r.rate for r in bridge)
    print(f"\n{kind}: {args.frames:,} frames x {args.rounds} rounds, {args.symbols} symbols")
    for name, runs in (("bare client (baseline)", baseline), ("bridge", bridge)):
        here = statistics.median(r.cpu_s / r.frames for r in runs) * 1e6
        there = statistics.median(r.server_cpu_s / r.frames for r in runs) * 1e6
        print(
            f"  {name:<23} {statistics.median(r.rate for r in runs):>9,.0f} frames/s"
            f"  ratio {statistics.median(r.rate for r in runs) / base_rate:5.3f}"
            f"  CPU per frame: this process {here:5.1f} µs, server {there:5.1f} µs"
        )
    print(
        f"  every closed kline stored {statistics.median(stored):.2f} s after the first frame"
        f" (last frame handled at {args.frames / rate:.2f} s)"
    )

    streamed, own_mean = asyncio.run(bridge_lag(base, args.closes, sink, live))
    direct = direct_lag(sink, args.closes, args.rate, DIRECT_BATCH)
    print(f"  lag, {args.closes:,} closed klines at {args.rate:g}/s:")
    for name, lags in (
        ("straight to the intake (baseline)", direct),
        ("through the stream", streamed),
    ):
        p50, p99 = percentile(lags, 0.5), percentile(lags, 0.99)
        print(f"    {name:<34} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  max {max(lags):6.1f} ms")
    print(f"    fks_stream_lag_seconds mean over the same events: {own_mean:.1f} ms")
    intake.close()
    expected = 1 + args.rounds * closed_count(args.frames) + 2 * args.closes
    rows = stored_rows(url)
    print(
        f"  rows in webhook_events: {rows:,} (expected {expected:,}); live prices: "
        f"{sum(1 for _ in client.scan_iter('*:live:*')):,} symbols"
    )
    if rows != expected:
        raise SystemExit("closed klines were lost or stored twice")


def pin() -> tuple[int | None, int | None]:
    """Pin this process (every thread) to one core; the other core for the server."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    for thread in os.listdir("/proc/self/task"):
        os.sched_setaffinity(int(thread), {cores[0]})
    return cores[0], cores[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", help="also on PostgreSQL at this URL (scratch schema)")
    parser.add_argument("--frames", type=int, default=200_000, help="frames per connection")
    parser.add_argument("--symbols", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="closed klines/s (lag)")
    parser.add_argument("--closes", type=int, default=2000, help="closed klines (lag)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        run_server(
            None if args.serve < 0 else args.serve,
            args.frames,
            args.symbols,
            args.rate,
            args.closes,
        )
        return
    bridge_core, server_core = pin()
    print(f"bridge on core {bridge_core}, server on core {server_core}")
    names = symbols(args.symbols)
    costs = cpu_per_frame(mixed_frames(open_frames(names, args.frames), names, 0), args.rounds)
    print(
        f"CPU per frame, no socket: json.loads {costs['json.loads']:.1f} µs (baseline), "
        f"StreamBridge.handle {costs['handle']:.1f} µs "
        f"(ratio {costs['handle'] / costs['json.loads']:.1f})"
    )
    kinds = ["sqlite", "postgres"] if args.postgres else ["sqlite"]
    with stream_server(args, server_core) as server, scratch_redis(args.redis_url) as client:
        for kind in kinds:
            with scratch_warehouse(kind, args.postgres, SCHEMA) as url:
                run_kind(kind, url, args, server, client)
            client.flushdb()


if __name__ == "__main__":
    main()
