"""Command 1, ``scripts/dev.sh``, for real: Dagster's current CLI, and a clean stop on a signal.

Each test starts the script as a user would (see :mod:`fks_pipelines_tests.devserver`) with a
temporary ``DAGSTER_HOME`` and ``FKS_DATA_DIR``, waits until the UI answers with the code
location loaded, launches a run as the UI does and waits until that run's worker is inside its
first request to a local Binance that never answers in time, then signals the script and checks
that the script exits within :data:`STOP_WITHIN_S` and that nothing it started (webserver,
daemon, code servers, run worker) is left. Every wait is bounded; on failure the whole session
is killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fks_pipelines.providers.binance import KLINES_PATH
from fks_pipelines_tests.devserver import (
    DevScript,
    dev_env,
    launch_run,
    loaded_location,
    session_processes,
)
from fks_pipelines_tests.fakes.binance import FakeBinance

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads process sessions from /proc"
)

READY_WITHIN_S = 120.0
REQUEST_WITHIN_S = 90.0
STOP_WITHIN_S = 15.0
# What the old `dagster dev` printed on every start, and what any other outdated call would.
FORBIDDEN = ("SupersessionWarning", "DeprecationWarning")

PARTITION_QUERY = """
query Partition($selector: PipelineSelector!) {
  pipelineOrError(params: $selector) {
    __typename
    ... on Pipeline { partitionKeysOrError(limit: 1) { partitionKeys } }
  }
}
"""


@dataclass(frozen=True)
class Stop:
    """How the script is told to stop."""

    signal: signal.Signals
    to_group: bool  # Ctrl-C in a terminal signals the foreground process group
    sigint_ignored: bool  # started as a background job of a non-interactive shell


STOPS = {
    "sigterm": Stop(signal.SIGTERM, to_group=False, sigint_ignored=False),
    "ctrl-c": Stop(signal.SIGINT, to_group=True, sigint_ignored=False),
    # The stop that used to hang: Python keeps the inherited SIG_IGN for SIGINT and Dagster maps
    # SIGTERM onto SIGINT's handler, so `dagster dev` ignored SIGTERM.
    "sigterm-background-job": Stop(signal.SIGTERM, to_group=False, sigint_ignored=True),
}
# What `./scripts/dev.sh &` in a script does to SIGINT; exec keeps SIG_IGN.
IGNORING_SIGINT = ("bash", "-c", 'trap "" INT; exec "$@"', "bash")


@pytest.fixture
def binance() -> Iterator[FakeBinance]:
    """A Binance that takes longer to answer than any test waits: the run stays in its step."""
    with FakeBinance() as fake:
        fake.latency_s = 600.0
        yield fake


def _first_binance_partition(dev: DevScript, location: dict[str, Any]) -> tuple[str, str]:
    """A Binance job of the code location and its first partition."""
    [repository] = location["repositories"]
    jobs = sorted(p["name"] for p in repository["pipelines"] if "binance" in p["name"])
    assert jobs, f"no Binance job in {repository['pipelines']}"
    selector = {
        "repositoryLocationName": location["name"],
        "repositoryName": repository["name"],
        "pipelineName": jobs[0],
    }
    job = dev.query(PARTITION_QUERY, {"selector": selector})["pipelineOrError"]
    [partition] = job["partitionKeysOrError"]["partitionKeys"]
    return jobs[0], partition


@pytest.mark.parametrize("stop", list(STOPS.values()), ids=list(STOPS))
def test_dev_script_uses_the_current_cli_and_stops_everything_on_a_signal(
    stop: Stop, binance: FakeBinance, tmp_path: Path
) -> None:
    env = dev_env(tmp_path, FKS_BINANCE_BASE_URL=binance.url)
    dev = DevScript(tmp_path, env, prefix=IGNORING_SIGINT if stop.sigint_ignored else ())
    try:
        location = dev.wait_for(
            "code location and run queue", READY_WITHIN_S, lambda: loaded_location(dev)
        )
        services = session_processes(dev.sid)
        assert any("/dg dev " in command for command in services.values()), services
        run_id = launch_run(dev, location, *_first_binance_partition(dev, location))
        dev.wait_for(
            f"request from run {run_id}", REQUEST_WITHIN_S, lambda: binance.requests_to(KLINES_PATH)
        )
        # The run worker (a process the code server spawns) and its log tailers.
        assert set(session_processes(dev.sid)) - set(services), "no run worker in the session"

        if stop.to_group:
            os.killpg(dev.sid, stop.signal)
        else:
            os.kill(dev.process.pid, stop.signal)
        signalled = time.monotonic()
        try:
            dev.process.wait(timeout=STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"dev.sh still running {STOP_WITHIN_S:.0f} s after {stop.signal.name}; "
                f"processes: {session_processes(dev.sid)}\n{dev.tail()}"
            )
        took = time.monotonic() - signalled
        assert session_processes(dev.sid) == {}, f"left behind after {took:.1f} s"
        assert dev.process.returncode == 128 + stop.signal, dev.tail()
        output = dev.output()
        assert not [word for word in FORBIDDEN if word in output], output
    finally:
        dev.close()
