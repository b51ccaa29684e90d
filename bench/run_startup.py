"""What a run spends before its first upstream request, next to ``import dagster``.

    .venv/bin/python -m bench.run_startup [--rounds 7] [--runs 5] [--imports-only] [--keep]

Run from the repository root. Two parts, both against a baseline measured in the same run.

**Imports.** Each round starts two fresh interpreters (this Python, the repository root as the
working directory): one times ``import dagster``, the other ``import fks_pipelines.definitions``
(which imports dagster first and builds the definitions), each with ``perf_counter`` around the
import statement inside the process, so interpreter start and exit are left out. One warm-up
round first (it also writes bytecode caches that ``PYTHONDONTWRITEBYTECODE`` would leave
stale: a deployed code location imports compiled modules), then ``--rounds`` interleaved rounds;
medians and their ratio are printed, with the packages the definitions import beyond dagster's
own, by self time from one ``python -X importtime`` run.

**A run's start.** ``dg dev`` started as :mod:`bench.backfill_dagster` starts it (temporary
``DAGSTER_HOME`` with the project's ``dagster.yaml``, a universe of Binance BTCUSDT at 1h, the
embedded mode without Redis), Binance a local FakeBinance that notes the wall-clock arrival of
every request. ``--runs`` runs, one after the other, each for a day 100 days after the last one's
(so that none is served from another's cached page), are launched through GraphQL as the UI's
Launch run does (``launchRun`` with the partition's tags); the run queue daemon launches each.
Per run, from the webserver's run stats and the fake's clock: RUN_ENQUEUED -> launched (the run
queue's tick), launched -> RUN_START (the run worker: interpreter, dagster, the code location),
RUN_START -> step start (resources), step start -> first request, and RUN_ENQUEUED -> first
request, the whole. Medians and maxima, and the medians as multiples of the median
``import dagster`` of the first part.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.backfill_dagster import (
    RUNS_QUERY,
    GraphQL,
    code_revision,
    dagster_dev,
    free_port,
    interrupt_on_signals,
    parse_runs,
    write_instance,
    write_universe,
)
from fks_pipelines.providers.binance import KLINES_PATH
from fks_pipelines.settings import PROJECT_ROOT
from fks_pipelines_tests.devserver import LAUNCH_MUTATION, TAGS_QUERY
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Request, Response

SYMBOL = "BTCUSDT"
INTERVAL = "1h"
START = pd.Timestamp("2024-01-01", tz="UTC")
DAYS_APART = 100
DONE_RUN = {"SUCCESS", "FAILURE", "CANCELED"}
TIMED_IMPORT = (
    "import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
)

LOCATION_QUERY = """
query {
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name pipelines { name } } }
          ... on PythonError { message }
        }
      }
    }
  }
}
"""

# --- imports ----------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module docstring
    return env


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter, fresh, in the repository root; its output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=_child_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )


def time_import(module: str) -> float:
    """Seconds ``import module`` takes in a fresh interpreter."""
    out = _python("-c", TIMED_IMPORT.format(module=module)).stdout
    return float(out.split()[-1])


def import_self_times(module: str) -> collections.Counter[str]:
    """Self time (s) of every module ``import module`` loads, summed per top-level package."""
    err = _python("-X", "importtime", "-c", f"import {module}").stderr
    by_module = {
        m.group(2): int(m.group(1))
        for m in re.finditer(r"^import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)$", err, re.MULTILINE)
    }
    totals: collections.Counter[str] = collections.Counter()
    for name, micros in by_module.items():
        totals[name.split(".")[0]] += micros / 1e6
    totals["__modules__"] = len(by_module)
    return totals


@dataclass(frozen=True)
class ImportTimes:
    dagster_s: float
    definitions_s: float

    @property
    def ratio(self) -> float:
        return self.definitions_s / self.dagster_s


def measure_imports(rounds: int) -> ImportTimes:
    time_import("fks_pipelines.definitions")  # warm-up: bytecode caches, page cache
    dagster, definitions = [], []
    for _ in range(rounds):
        dagster.append(time_import("dagster"))
        definitions.append(time_import("fks_pipelines.definitions"))
    times = ImportTimes(statistics.median(dagster), statistics.median(definitions))
    print(f"imports, fresh interpreters, median of {rounds} interleaved rounds:")
    print(f"  {'import dagster (baseline)':<44} {times.dagster_s:6.2f} s   1.00")
    print(
        f"  {'import fks_pipelines.definitions':<44} {times.definitions_s:6.2f} s"
        f"   {times.ratio:.2f}   (spread {min(definitions):.2f}-{max(definitions):.2f} s)"
    )
    base = import_self_times("dagster")
    ours = import_self_times("fks_pipelines.definitions")
    extra = {
        package: ours[package] - base.get(package, 0.0)
        for package in ours
        if package != "__modules__" and ours[package] - base.get(package, 0.0) >= 0.005
    }
    print(
        f"  beyond dagster's own imports (-X importtime, self time, one run):"
        f" {int(ours['__modules__'] - base['__modules__'])} more modules,"
        f" {sum(extra.values()):.2f} s; the largest:"
    )
    for package, seconds in sorted(extra.items(), key=lambda item: -item[1])[:12]:
        print(f"    {package:<30} {seconds:6.3f} s")
    return times


# --- a run's start ----------------------------------------------------------------------------


class ClockedBinance(FakeBinance):
    """FakeBinance that notes each klines request's arrival on the wall clock (``time.time()``),
    the clock of Dagster's run stats."""

    def __init__(self) -> None:
        super().__init__((SYMBOL,))
        self.arrivals: list[float] = []
        self._arrivals_lock = threading.Lock()

    def _handle(self, request: Request) -> Response:
        if request.path == KLINES_PATH:
            with self._arrivals_lock:
                self.arrivals.append(time.time())
        return super()._handle(request)

    def first_after(self, since: float) -> float | None:
        with self._arrivals_lock:
            return min((at for at in self.arrivals if at >= since), default=None)


@dataclass(frozen=True)
class RunStart:
    run_id: str
    status: str
    enqueued: float | None
    launched: float | None
    started: float | None
    step_start: float | None
    first_request: float | None


def launch_run(gql: GraphQL, partition: str) -> str:
    """Launch ``partition`` of the Binance job as the UI's Launch run does; its run id."""
    [entry] = gql(LOCATION_QUERY)["workspaceOrError"]["locationEntries"]
    location = entry["locationOrLoadError"]
    if location["__typename"] != "RepositoryLocation":
        raise SystemExit(f"code location failed to load: {location}")
    [repository] = location["repositories"]
    [job] = [p["name"] for p in repository["pipelines"] if "binance" in p["name"]]
    selector = {
        "repositoryLocationName": entry["name"],
        "repositoryName": repository["name"],
        "pipelineName": job,
    }
    answer = gql(TAGS_QUERY, {"selector": selector, "partition": partition})
    tags = answer["pipelineOrError"]["partition"]["tagsOrError"]
    if tags["__typename"] != "PartitionTags":
        raise SystemExit(f"no tags for partition {partition}: {tags}")
    params = {
        "selector": {**selector, "jobName": selector.pop("pipelineName")},
        "runConfigData": {},
        "executionMetadata": {"tags": tags["results"]},
    }
    launched = gql(LAUNCH_MUTATION, {"params": params})["launchRun"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise SystemExit(f"launch failed: {launched}")
    return launched["run"]["runId"]


def wait_run(gql: GraphQL, run_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        [run] = gql(RUNS_QUERY, {"filter": {"runIds": [run_id]}})["runsOrError"]["results"]
        if run["status"] in DONE_RUN:
            return run
        time.sleep(0.5)
    raise SystemExit(f"run {run_id} not finished after {timeout_s:.0f} s")


def measure_runs(count: int, tmp: Path, ready_timeout_s: float) -> list[RunStart]:
    home, data = tmp / "dagster_home", tmp / "data"
    data.mkdir()
    write_instance(home, [])
    write_universe(tmp / "universe.yaml", [SYMBOL], INTERVAL, START)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FKS_") and k != "REDIS_URL"}
    log = tmp / "dagster.log"
    port = free_port()
    runs: list[RunStart] = []
    with ClockedBinance() as server:
        server.now_ms = int(time.time() * 1000)
        env.update(
            DAGSTER_HOME=str(home),
            FKS_DATA_DIR=str(data),
            FKS_UNIVERSE_FILE=str(tmp / "universe.yaml"),
            FKS_BINANCE_BASE_URL=server.url,
        )
        started = time.monotonic()
        with dagster_dev(home, env, port, log):
            gql = GraphQL(f"http://127.0.0.1:{port}")
            gql.wait_ready(ready_timeout_s, log)
            print(f"dg dev ready in {time.monotonic() - started:.1f} s (port {port})")
            # A Binance page of 1h bars spans 62 days: a run whose day lies in a page another run
            # fetched is served from the cache, without a request.
            for day in pd.date_range(START, periods=count, freq=f"{DAYS_APART}D"):
                submitted = time.time()
                run_id = launch_run(gql, f"{day:%Y-%m-%d}|{SYMBOL}")
                [times] = parse_runs([wait_run(gql, run_id, 300.0)])
                runs.append(
                    RunStart(
                        run_id=run_id,
                        status=times.status,
                        enqueued=times.enqueued,
                        launched=times.launched,
                        started=times.started,
                        step_start=times.step_start,
                        first_request=server.first_after(submitted),
                    )
                )
    return runs


def report_runs(runs: list[RunStart], baseline_s: float) -> None:
    statuses = collections.Counter(run.status for run in runs)
    print(f"runs: {len(runs)} ({', '.join(f'{n} {s}' for s, n in statuses.items())})")
    print(f"per run, seconds (median / max), and the median / import dagster ({baseline_s:.2f} s):")
    phases = [
        ("RUN_ENQUEUED -> launched (run queue)", "enqueued", "launched"),
        ("launched -> RUN_START (run worker start)", "launched", "started"),
        ("RUN_START -> step start (resources)", "started", "step_start"),
        ("step start -> first request", "step_start", "first_request"),
        ("RUN_ENQUEUED -> first request", "enqueued", "first_request"),
    ]
    for label, start, end in phases:
        values = [
            getattr(run, end) - getattr(run, start)
            for run in runs
            if getattr(run, start) is not None and getattr(run, end) is not None
        ]
        if not values:
            print(f"  {label:<44}      -")
            continue
        median = statistics.median(values)
        print(f"  {label:<44} {median:6.2f} / {max(values):6.2f}   {median / baseline_s:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved import rounds")
    parser.add_argument("--runs", type=int, default=5, help="runs launched one after another")
    parser.add_argument("--imports-only", action="store_true", help="skip the runs")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    print(f"code: {code_revision()}; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    imports = measure_imports(args.rounds)
    if args.imports_only:
        return

    interrupt_on_signals()
    tmp = Path(tempfile.mkdtemp(prefix="fks-bench-run-startup-"))
    keep = args.keep
    try:
        print()
        report_runs(measure_runs(args.runs, tmp, args.ready_timeout), imports.dagster_s)
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
