"""A one-year backfill of several symbols through Dagster itself, against a rate-limited provider.

    .venv/bin/python -m bench.backfill_dagster [--rps 2] [--interval 5m] [--symbols-count 3]
        [--start 2024-01-01] [--days 366] [--partitions-per-run N] [--warehouse-url URL]
        [--redis-url redis://127.0.0.1:6379/13 | --embedded] [--verbose] [--keep]
        [--instance 'YAML merged into the copied dagster.yaml'] [--run-config 'YAML']

Run from the repository root; it takes about three minutes at the defaults. The bench writes a
temporary universe (Binance only, the first ``--symbols-count`` of BTCUSDT, ETHUSDT, SOLUSDT, ...
at ``--interval``, partitions from ``--start``), a temporary ``DAGSTER_HOME`` holding a copy of
the project's ``dagster.yaml`` (with the ``--instance`` snippets deep-merged into it, to try a
setting without touching the project's file) and a temporary ``FKS_DATA_DIR`` (SQLite warehouse,
disk cache), then starts ``dg dev`` (webserver, daemon, code server) the way
``scripts/dev.sh`` does, on a free port. Binance is a local FakeBinance that also enforces
``--rps`` as a provider would: at most ``limit`` kline requests in any ``period``
(``Window.per_second(rps)``: 2/s is 2 in any 1 s), HTTP 429 with ``Retry-After`` beyond. The
client gets the same limit (``FKS_BINANCE_RPS``), shared by the run processes through Redis
(``--redis-url``: a scratch database, flushed before and after; ``--embedded``: no Redis, the
cache and the limits shared through files under the temporary data directory).

Once the code location is loaded and the daemon is healthy, the backfill is launched through
GraphQL exactly as the UI's Materialize -> Launch backfill does for one asset
(``launchPartitionBackfill`` with ``assetSelection`` and the ``partitionNames`` of
``[start, start + days)`` x the symbols; ``--run-config`` adds run config the UI does not send,
to try an executor), then the backfill and its runs (tag ``dagster/backfill``) are polled until
every run has finished and the daemon has closed the backfill. Everything started is stopped on
exit, Ctrl-C and SIGTERM included (``dg dev`` runs in its own process group).

Measured: runs launched and their statuses; kline requests at the server (served, and answered
429); the time of every request and of each run's stages (created, enqueued, launched, started,
step start and end, end; requests are attributed to runs by symbol, page and time); the rows in
the warehouse, compared with the bars the fake serves. Baselines: **minimum requests** = per
symbol ceil(bars in the window / 1,500), the fewest Binance's paging allows; **ideal time** =
minimum requests / rps, what a client saturating the limit from the launch on would need.
Ratios: requests / minimum (goal 1.0), wall time from the launch mutation to the end of the last
run / ideal (goal at most 1.3), 429 answers (goal 0). The client's limiter widens each window by
its 50 ms margin, so at 2 rps its own ceiling is 1.05x the ideal. The launch comes right after
the daemon's first loop, and the backfill daemon loops every 30 s, so its pick-up is near its
worst case here; the time from the first run's creation is reported as well.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

from bench.scratch import scratch_redis
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.binance import KLINES_PATH, MAX_KLINES_PER_PAGE
from fks_pipelines.providers.ratelimit import Window
from fks_pipelines.settings import PROJECT_ROOT
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines_tests.fakes.binance import FakeBinance, expected_frame
from fks_pipelines_tests.fakes.server import Request, Response

PROVIDER = "binance"
SYMBOLS = {
    "BTCUSDT": "BTC-USD",
    "ETHUSDT": "ETH-USD",
    "SOLUSDT": "SOL-USD",
    "BNBUSDT": "BNB-USD",
    "XRPUSDT": "XRP-USD",
    "DOGEUSDT": "DOGE-USD",
}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/13"  # not 14: bench.limiter_processes flushes that
BACKFILL_TAG = "dagster/backfill"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
DONE_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
DONE_BACKFILL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}
DG_BIN = PROJECT_ROOT / ".venv" / "bin" / "dg"


@dataclass(frozen=True)
class Arrival:
    """A klines request the server admitted: when (``time.time()``), for which page."""

    at: float
    symbol: str
    start_ms: int


class RateLimitedBinance(FakeBinance):
    """FakeBinance enforcing a request window on klines, as a provider counts at its door.

    A klines request arriving when ``window.limit`` requests were admitted in the last
    ``window.period_s`` seconds is answered 429 (Binance's -1003) with ``Retry-After``: the whole
    seconds until the oldest of them leaves the window. Rejected requests do not count against
    the window. Admitted requests are kept as :class:`Arrival` (wall clock, to line up with
    Dagster's timestamps).
    """

    def __init__(self, window: Window, symbols: tuple[str, ...]) -> None:
        super().__init__(symbols)
        self.window = window
        self.admitted: list[Arrival] = []
        self.rejected: list[float] = []
        self._recent: deque[float] = deque()
        self._window_lock = threading.Lock()

    def _handle(self, request: Request) -> Response:
        if request.path == KLINES_PATH:
            now = time.time()
            with self._window_lock:
                while self._recent and self._recent[0] <= now - self.window.period_s:
                    self._recent.popleft()
                if len(self._recent) >= self.window.limit:
                    self.rejected.append(now)
                    wait = self._recent[0] + self.window.period_s - now
                    return Response.json(
                        {"code": -1003, "msg": "Too many requests; current limit is exceeded."},
                        status=429,
                        headers={"Retry-After": str(max(1, math.ceil(wait)))},
                    )
                self._recent.append(now)
                self.admitted.append(
                    Arrival(
                        now,
                        request.query.get("symbol", ""),
                        int(request.query.get("startTime", 0)),
                    )
                )
        return super()._handle(request)


# --- the temporary project environment ------------------------------------------------------


def write_universe(path: Path, symbols: list[str], interval: str, start: pd.Timestamp) -> None:
    universe = {
        "instruments": {SYMBOLS[s]: {"asset_class": "crypto"} for s in symbols},
        "priority": [PROVIDER],
        "providers": {
            PROVIDER: {
                "start_date": start.date(),
                "intervals": [interval],
                "symbols": {s: SYMBOLS[s] for s in symbols},
            }
        },
    }
    path.write_text(yaml.safe_dump(universe, sort_keys=False))


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_instance(home: Path, overrides: list[str]) -> dict[str, Any]:
    """The project's dagster.yaml with ``overrides`` (YAML mappings) merged in, into ``home``."""
    config = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text()) or {}
    for snippet in overrides:
        extra = yaml.safe_load(snippet)
        if not isinstance(extra, Mapping):
            raise SystemExit(f"--instance must be a YAML mapping, got {snippet!r}")
        config = deep_merge(config, extra)
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def dagster_dev(home: Path, env: Mapping[str, str], port: int, log: Path) -> Iterator[None]:
    """``dg dev`` in its own process group, stopped with everything it started."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(DG_BIN),
                "dev",
                "-w",
                str(PROJECT_ROOT / "workspace.yaml"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
            ],
            cwd=home,  # as scripts/dev.sh: no foreign dagster.yaml in the working directory
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: run workers are stopped with it
        )
        try:
            yield
        finally:
            stopping = time.monotonic()
            _stop_group(process)
            print(f"dg dev stopped in {time.monotonic() - stopping:.1f} s")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGINT to the group we created, as Ctrl-C in a terminal would, then SIGKILL."""
    for sig, grace in ((signal.SIGINT, 20.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if process.poll() is not None and not _group_alive(process.pid):
                return
            time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def interrupt_on_signals() -> None:
    """Ctrl-C and SIGTERM raise KeyboardInterrupt, so that ``finally`` stops Dagster.

    SIGINT is set even if it was ignored (a shell's background job): an ignored SIGINT would also
    be ignored by ``dg dev``'s children, which it stops with SIGINT.
    """

    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)


# --- GraphQL ----------------------------------------------------------------------------------

WORKSPACE_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
}
"""

# What the UI sends for Materialize -> Launch backfill on one partitioned asset (a "pure asset
# backfill": ui-core/src/assets/LaunchAssetChoosePartitionsDialog.tsx, onLaunchAsBackfill).
LAUNCH_MUTATION = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

PROGRESS_QUERY = """
query Progress($backfillId: String!, $filter: RunsFilter) {
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill { status endTimestamp error { message } }
    ... on Error { message }
  }
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status } }
    ... on Error { message }
  }
}
"""

RUNS_QUERY = """
query BackfillRuns($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs {
      results {
        runId
        status
        creationTime
        startTime
        endTime
        tags { key value }
        stats {
          __typename
          ... on RunStatsSnapshot { enqueuedTime launchTime startTime endTime }
        }
        stepStats { stepKey status startTime endTime }
      }
    }
    ... on Error { message }
  }
}
"""


class GraphQL:
    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=httpx.Timeout(60.0, connect=2.0))

    def __call__(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_ready(self, timeout_s: float, log: Path) -> None:
        """Until the code location is loaded and the backfill and run-queue daemons are healthy."""
        deadline = time.monotonic() + timeout_s
        state = "webserver not answering"
        while time.monotonic() < deadline:
            try:
                data = self(WORKSPACE_QUERY)
            except (httpx.HTTPError, RuntimeError) as exc:
                state = f"webserver: {exc}"
                time.sleep(0.5)
                continue
            entries = data["workspaceOrError"].get("locationEntries", [])
            loaded = [e for e in entries if e["loadStatus"] == "LOADED"]
            errors = [
                e["locationOrLoadError"]["message"]
                for e in loaded
                if e["locationOrLoadError"]["__typename"] == "PythonError"
            ]
            if errors:
                raise SystemExit(f"code location failed to load:\n{errors[0]}")
            healthy = {
                d["daemonType"]
                for d in data["instance"]["daemonHealth"]["allDaemonStatuses"]
                if d["healthy"]
            }
            needed = {"BACKFILL", "QUEUED_RUN_COORDINATOR"}
            if entries and len(loaded) == len(entries) and needed <= healthy:
                return
            state = f"locations loaded {len(loaded)}/{len(entries)}, healthy daemons {healthy}"
            time.sleep(0.5)
        raise SystemExit(f"Dagster not ready after {timeout_s:.0f} s ({state}); see {log}")


# --- the measurement --------------------------------------------------------------------------


@dataclass
class RunTimes:
    """A backfill run as the webserver reports it, with the upstream requests it made."""

    run_id: str
    status: str
    symbol: str
    first_day: str
    last_day: str
    created: float
    enqueued: float | None
    launched: float | None
    started: float | None
    step_start: float | None
    step_end: float | None
    ended: float | None
    requests: list[float]


def location_error(data: Mapping[str, Any]) -> str | None:
    """The load error of a code location in a progress answer, if any."""
    for entry in data["workspaceOrError"].get("locationEntries", []):
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            return f"{entry['name']}: {loaded['message']}"
    return None


def code_revision() -> str:
    """The project's commit, and whether the tree differs from it (others may edit it)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def parse_runs(results: list[dict[str, Any]]) -> list[RunTimes]:
    runs = []
    for r in results:
        tags = {t["key"]: t["value"] for t in r["tags"]}
        first_day, symbol = tags.get(RANGE_START_TAG, "|").split("|", 1)
        last_day = tags.get(RANGE_END_TAG, "|").split("|", 1)[0]
        stats = r["stats"] if r["stats"]["__typename"] == "RunStatsSnapshot" else {}
        step_starts = [s["startTime"] for s in r["stepStats"] if s["startTime"]]
        step_ends = [s["endTime"] for s in r["stepStats"] if s["endTime"]]
        runs.append(
            RunTimes(
                run_id=r["runId"],
                status=r["status"],
                symbol=symbol,
                first_day=first_day,
                last_day=last_day,
                created=r["creationTime"],
                enqueued=stats.get("enqueuedTime"),
                launched=stats.get("launchTime"),
                started=r["startTime"],
                step_start=min(step_starts) if step_starts else None,
                step_end=max(step_ends) if step_ends else None,
                ended=r["endTime"],
                requests=[],
            )
        )
    return sorted(runs, key=lambda run: run.created)


def attribute_requests(runs: list[RunTimes], arrivals: list[Arrival], span: pd.Timedelta) -> int:
    """Give each request to the run that made it: same symbol, a page overlapping the run's days,
    sent while its step ran. Returns the number of requests no run accounts for."""
    span_ms = span.value // 1_000_000
    unassigned = 0
    for arrival in arrivals:
        for run in runs:
            if run.symbol != arrival.symbol or run.step_start is None:
                continue
            first_ms = pd.Timestamp(run.first_day, tz="UTC").value // 1_000_000
            end_ms = (pd.Timestamp(run.last_day, tz="UTC") + pd.Timedelta(days=1)).value
            overlaps = arrival.start_ms < end_ms // 1_000_000 and (
                arrival.start_ms + span_ms > first_ms
            )
            during = run.step_start - 0.5 <= arrival.at <= (run.step_end or math.inf) + 0.5
            if overlaps and during:
                run.requests.append(arrival.at)
                break
        else:
            unassigned += 1
    return unassigned


def bars_in(interval: Interval, start: pd.Timestamp, end: pd.Timestamp) -> int:
    return (end - start) // interval.offset


def check_warehouse(
    url: str, symbols: list[str], interval: str, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[int, list[str]]:
    """Rows stored for the backfill's window, and what differs from the bars the fake serves."""
    stored = Warehouse.from_url(url).read_ohlcv(PROVIDER, interval, symbols, start, end)
    problems = []
    for symbol in symbols:
        got = stored[stored["symbol"] == symbol].reset_index(drop=True)
        want = expected_frame(symbol, interval, str(start.date()), str(end.date()))
        if len(got) != len(want):
            problems.append(f"{symbol}: {len(got):,} rows, expected {len(want):,}")
        elif not (
            np.array_equal(got["ts"].to_numpy(), want["ts"].to_numpy())
            and np.allclose(got["close"].to_numpy(), want["close"].to_numpy())
        ):
            problems.append(f"{symbol}: bars differ from the ones served")
    return len(stored), problems


@dataclass(frozen=True)
class Outcome:
    """What one backfill did, next to its baselines."""

    runs: list[RunTimes]
    backfill_status: str
    launched_at: float
    closed_at: float
    arrivals: list[float]
    rejected: list[float]
    minimum: int
    ideal_s: float
    rows: int
    expected_rows: int
    problems: list[str]
    unassigned: int

    @property
    def last_end(self) -> float:
        ends = [r.ended for r in self.runs if r.ended]
        return max(ends) if ends else self.closed_at

    @property
    def wall_s(self) -> float:
        return self.last_end - self.launched_at

    @property
    def first_created(self) -> float | None:
        return min((r.created for r in self.runs), default=None)


def _stat(values: list[float]) -> str:
    if not values:
        return "     - /      -"
    return f"{statistics.median(values):6.1f} / {max(values):6.1f}"


def _idle_gaps(arrivals: list[float], window: Window) -> list[tuple[float, float]]:
    """``(at, seconds)`` of each stretch without a request longer than the limiter explains."""
    threshold = window.period_s + 0.5
    return [
        (a, b - a - window.period_s) for a, b in itertools.pairwise(arrivals) if b - a > threshold
    ]


def report(args: argparse.Namespace, window: Window, out: Outcome) -> None:
    statuses: dict[str, int] = {}
    for run in out.runs:
        statuses[run.status] = statuses.get(run.status, 0) + 1
    served = len(out.arrivals)

    def since(ts: float | None) -> str:
        return f"{ts - out.launched_at:7.1f} s" if ts is not None else "      -"

    first_req = out.arrivals[0] if served else None
    last_req = out.arrivals[-1] if served else None
    starts = [r.started for r in out.runs if r.started]
    after_pickup = out.last_end - out.first_created if out.first_created else float("nan")
    print()
    print(
        f"{'runs launched':<46} {len(out.runs)}"
        f"  ({', '.join(f'{n} {s}' for s, n in statuses.items())}); backfill {out.backfill_status}"
    )
    print(
        f"{'kline requests served / minimum':<46} {served} / {out.minimum}"
        f" = {served / out.minimum:.2f}x   (minimum: {len(args.symbol_list)} symbols x"
        f" ceil({out.expected_rows // len(args.symbol_list):,} bars / {MAX_KLINES_PER_PAGE:,}))"
    )
    print(f"{'requests answered 429 (goal 0)':<46} {len(out.rejected)}")
    print(
        f"{'wall time launch -> last run end / ideal':<46} {out.wall_s:.1f} s / {out.ideal_s:.1f} s"
        f" = {out.wall_s / out.ideal_s:.2f}x   (ideal: {out.minimum} requests / {args.rps:g} rps)"
    )
    print(
        f"{'  the same from the first run created':<46} {after_pickup:.1f} s"
        f" = {after_pickup / out.ideal_s:.2f}x"
    )
    print(f"{'warehouse rows / expected':<46} {out.rows:,} / {out.expected_rows:,}")
    for problem in out.problems:
        print(f"  WAREHOUSE MISMATCH: {problem}")

    print()
    print("timeline (seconds after the launch mutation was sent):")
    print(f"  first run created (backfill daemon tick)        {since(out.first_created)}")
    print(f"  first run started (run queue, run worker)       {since(min(starts, default=None))}")
    print(f"  first upstream request                          {since(first_req)}")
    print(f"  last upstream request                           {since(last_req)}")
    print(f"  last run ended                                  {since(out.last_end)}")
    print(f"  backfill closed by the daemon                   {since(out.closed_at)}")
    if first_req is not None and last_req is not None and served > 1:
        span = last_req - first_req
        rate = (served - 1) / span
        ceiling = window.limit / (window.period_s + 0.05)
        gaps = _idle_gaps(out.arrivals, window)
        print(
            f"  requests: {span:.1f} s from first to last, {rate:.2f}/s = {rate / args.rps:.0%} of"
            f" the limit (limiter ceiling {ceiling / args.rps:.0%});"
            f" {len(gaps)} pauses without a request totalling {sum(g for _, g in gaps):.1f} s"
        )
        for at, gap in sorted(gaps, key=lambda g: -g[1])[:6]:
            print(f"    {gap:5.1f} s idle from {since(at)}")

    print()
    print("per run, median / max (seconds):")
    phases = [
        ("created -> enqueued", lambda r: (r.created, r.enqueued)),
        ("enqueued -> launched (run queue, pools)", lambda r: (r.enqueued, r.launched)),
        ("launched -> started (run worker process)", lambda r: (r.launched, r.started)),
        ("started -> step start (pool slot, step proc)", lambda r: (r.started, r.step_start)),
        ("step start -> first request", lambda r: (r.step_start, min(r.requests, default=None))),
        (
            "first -> last request",
            lambda r: (min(r.requests, default=None), max(r.requests, default=None)),
        ),
        (
            "last request -> step end (write, metadata)",
            lambda r: (max(r.requests, default=None), r.step_end),
        ),
        ("step end -> run end", lambda r: (r.step_end, r.ended)),
        ("created -> run end", lambda r: (r.created, r.ended)),
    ]
    for label, pick in phases:
        pairs = [pick(r) for r in out.runs]
        values = [b - a for a, b in pairs if a is not None and b is not None]
        print(f"  {label:<46} {_stat(values)}")
    counts = [len(r.requests) for r in out.runs]
    print(
        f"  {'requests per run':<46} {statistics.median(counts):6.0f} / {max(counts):6d}"
        + (f"   ({out.unassigned} not attributed)" if out.unassigned else "")
    )
    if args.verbose:
        print()
        for r in out.runs:
            print(
                f"  {r.run_id[:8]} {r.status:<7} {r.symbol:<8} {r.first_day}..{r.last_day}"
                f" created {since(r.created)} started {since(r.started)}"
                f" step {since(r.step_start)} .. {since(r.step_end)} end {since(r.ended)}"
                f" requests {len(r.requests):3d}"
                f" {since(min(r.requests, default=None))} .. {since(max(r.requests, default=None))}"
            )
        for at in out.rejected:
            print(f"  429 at {since(at)}")


def run_backfill(args: argparse.Namespace, tmp: Path) -> None:
    interval = Interval.parse(args.interval)
    start = pd.Timestamp(args.start, tz="UTC")
    end = start + pd.Timedelta(days=args.days)
    symbols = args.symbol_list
    bars = bars_in(interval, start, end)
    minimum = len(symbols) * math.ceil(bars / MAX_KLINES_PER_PAGE)
    window = Window.per_second(args.rps)

    home, data = tmp / "dagster_home", tmp / "data"
    data.mkdir()
    write_universe(tmp / "universe.yaml", symbols, args.interval, start)
    instance = write_instance(home, args.instance)
    warehouse_url = args.warehouse_url or f"sqlite:///{data / 'warehouse.sqlite'}"
    log = tmp / "dagster.log"

    server = RateLimitedBinance(window, tuple(symbols))
    server.now_ms = int(time.time() * 1000)  # the real clock: run processes use it too
    env = {k: v for k, v in os.environ.items() if not k.startswith("FKS_") and k != "REDIS_URL"}
    port = free_port()
    partition_names = [
        f"{day:%Y-%m-%d}|{symbol}"
        for symbol in symbols
        for day in pd.date_range(start, end, freq="D", inclusive="left")
    ]

    print(
        f"backfill of ohlcv/{PROVIDER}/{args.interval}: {start:%Y-%m-%d} .. {end:%Y-%m-%d}"
        f" ({args.days} days) x {len(symbols)} symbols ({', '.join(symbols)}) ="
        f" {len(partition_names):,} partitions, {args.partitions_per_run or 100} per run;"
        f" limit {window.limit} requests / {window.period_s:g} s at the server and the client;"
        f" {'Redis ' + args.redis_url if args.redis_url else 'embedded (no Redis)'};"
        f" warehouse {'SQLite' if not args.warehouse_url else sa_backend(args.warehouse_url)}"
    )
    print(f"code: {code_revision()}; {os.cpu_count()} CPUs")
    if args.instance:
        print(f"instance (dagster.yaml + --instance): {instance}")
    if args.run_config:
        print(f"run config: {args.run_config}")

    redis_scope = scratch_redis(args.redis_url) if args.redis_url else contextlib.nullcontext()
    with redis_scope, server:
        env.update(
            DAGSTER_HOME=str(home),
            FKS_DATA_DIR=str(data),
            FKS_UNIVERSE_FILE=str(tmp / "universe.yaml"),
            FKS_BINANCE_BASE_URL=server.url,
            FKS_BINANCE_RPS=str(args.rps),
        )
        if args.warehouse_url:
            env["FKS_WAREHOUSE_URL"] = args.warehouse_url
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        if args.partitions_per_run:
            env["FKS_BACKFILL_PARTITIONS_PER_RUN"] = str(args.partitions_per_run)

        started = time.monotonic()
        with dagster_dev(home, env, port, log):
            gql = GraphQL(f"http://127.0.0.1:{port}")
            gql.wait_ready(args.ready_timeout, log)
            print(f"dg dev ready in {time.monotonic() - started:.1f} s (port {port})")

            params: dict[str, Any] = {
                "assetSelection": [{"path": ["ohlcv", PROVIDER, args.interval]}],
                "partitionNames": partition_names,
                "fromFailure": False,
                "tags": [],
            }
            if args.run_config:  # not what the UI sends: for trying executor settings
                params["runConfigData"] = yaml.safe_load(args.run_config)
            launched_at = time.time()  # the click on "Launch backfill"
            answer = gql(LAUNCH_MUTATION, {"backfillParams": params})["launchPartitionBackfill"]
            if answer["__typename"] != "LaunchBackfillSuccess":
                raise SystemExit(f"launch failed: {answer}")
            backfill_id = answer["backfillId"]
            print(
                f"backfill {backfill_id} launched (mutation answered in"
                f" {time.time() - launched_at:.2f} s); waiting for its runs ..."
            )

            run_filter = {"tags": [{"key": BACKFILL_TAG, "value": backfill_id}]}
            deadline = time.monotonic() + args.timeout
            status, closed_at, last_line = "REQUESTED", time.time(), ""
            broken_since: float | None = None
            while True:
                data_ = gql(PROGRESS_QUERY, {"backfillId": backfill_id, "filter": run_filter})
                # The backfill daemon waits silently while the code location does not load
                # (e.g. the tree was edited mid-run): say so instead of waiting for the timeout.
                error = location_error(data_)
                if error is None:
                    broken_since = None
                elif broken_since is None:
                    broken_since = time.monotonic()
                    print(f"code location failed to load, waiting for it: {error[:300]}")
                elif time.monotonic() - broken_since > args.location_grace:
                    raise SystemExit(f"code location still failing; see {log}:\n{error}")
                backfill = data_["partitionBackfillOrError"]
                status = backfill.get("status", backfill["__typename"])
                results = data_["runsOrError"].get("results", [])
                done = sum(r["status"] in DONE_RUN for r in results)
                line = (
                    f"  {time.time() - launched_at:6.0f} s: backfill {status}, runs {done}/"
                    f"{len(results)} done, requests {len(server.admitted)}"
                    f" (429: {len(server.rejected)})"
                )
                if line.split(":", 1)[1] != last_line:
                    print(line, flush=True)
                    last_line = line.split(":", 1)[1]
                if status in DONE_BACKFILL and done == len(results):
                    closed_at = backfill.get("endTimestamp") or time.time()
                    if backfill.get("error"):
                        print(f"backfill error: {backfill['error']['message']}")
                    break
                if time.monotonic() > deadline:
                    print(f"timed out after {args.timeout:.0f} s; see {log}")
                    closed_at = time.time()
                    break
                time.sleep(args.poll)
            runs = parse_runs(gql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]["results"])

        rows, problems = check_warehouse(warehouse_url, symbols, args.interval, start, end)
    arrivals = sorted(server.admitted, key=lambda a: a.at)
    unassigned = attribute_requests(runs, arrivals, MAX_KLINES_PER_PAGE * interval.offset)
    outcome = Outcome(
        runs=runs,
        backfill_status=status,
        launched_at=launched_at,
        closed_at=closed_at,
        arrivals=[a.at for a in arrivals],
        rejected=server.rejected,
        minimum=minimum,
        ideal_s=minimum / args.rps,
        rows=rows,
        expected_rows=len(symbols) * bars,
        problems=problems,
        unassigned=unassigned,
    )
    report(args, window, outcome)


def sa_backend(url: str) -> str:
    return url.split(":", 1)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rps", type=float, default=2.0, help="the provider's request limit")
    parser.add_argument("--interval", default="5m", help="bar interval of the asset")
    parser.add_argument("--symbols-count", type=int, default=3, choices=range(1, len(SYMBOLS) + 1))
    parser.add_argument("--start", default="2024-01-01", help="first partition (and anchor)")
    parser.add_argument("--days", type=int, default=366, help="daily partitions per symbol")
    parser.add_argument(
        "--partitions-per-run", type=int, help="FKS_BACKFILL_PARTITIONS_PER_RUN (default 100)"
    )
    parser.add_argument("--warehouse-url", help="warehouse URL (default: SQLite in a temp dir)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL, help="scratch Redis database")
    parser.add_argument(
        "--embedded", action="store_true", help="no Redis: cache and limits shared through files"
    )
    parser.add_argument(
        "--instance",
        action="append",
        default=[],
        help="YAML mapping merged into the copied dagster.yaml (repeatable)",
    )
    parser.add_argument(
        "--run-config",
        help="run config YAML sent with the backfill (the UI sends none), e.g."
        " '{execution: {config: {in_process: {}}}}'",
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after (s)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument(
        "--location-grace", type=float, default=90.0, help="give up on a failing code location (s)"
    )
    parser.add_argument("--poll", type=float, default=2.0, help="status poll interval (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--verbose", action="store_true", help="one line per run")
    args = parser.parse_args()
    args.symbol_list = list(SYMBOLS)[: args.symbols_count]
    if args.embedded:
        args.redis_url = None

    interrupt_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix="fks-bench-dagster-"))
    keep = args.keep
    try:
        run_backfill(args, tmp)
    except BaseException:
        keep = True  # the Dagster log and storage explain what went wrong
        raise
    finally:
        if keep:
            print(f"kept {tmp} (dagster.log: the output of dg dev)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
