"""Command 1, ``scripts/dev.sh``, started for a test as a user would, and driven over GraphQL.

The script runs in a session of its own (like a terminal's), on a free port, with the
environment the test gives it; its output goes to files. :class:`DevScript` waits for things
with a bound, talks GraphQL to the webserver, and on close kills whatever the session still
holds. Process sessions are read from ``/proc`` (Linux).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from fks_pipelines.settings import PROJECT_ROOT

DEV_SCRIPT = PROJECT_ROOT / "scripts" / "dev.sh"

READY_QUERY = """
query {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on RepositoryLocation { repositories { name pipelines { name } } }
          ... on PythonError { message }
        }
      }
    }
  }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}
"""

TAGS_QUERY = """
query Tags($selector: PipelineSelector!, $partition: String!) {
  pipelineOrError(params: $selector) {
    ... on Pipeline {
      partition(partitionName: $partition) {
        tagsOrError { __typename ... on PartitionTags { results { key value } } }
      }
    }
  }
}
"""

LAUNCH_MUTATION = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_processes(sid: int) -> dict[int, str]:
    """Live processes of session ``sid``: pid -> command line. Zombies are dead and left out."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:  # it ended while we looked
            continue
        # Fields after the command name, which may itself hold spaces and parentheses:
        # state ppid pgrp session ...
        state, _ppid, _pgrp, session = stat.rsplit(")", 1)[1].split()[:4]
        if int(session) == sid and state != "Z":
            found[int(entry)] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
    return found


def kill_session(sid: int) -> None:
    for pid in session_processes(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def dev_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a dev.sh under test: a fresh ``DAGSTER_HOME`` holding the project's
    ``dagster.yaml`` (as the script links it), a fresh ``FKS_DATA_DIR``, no provider key, no
    Redis, plus ``extra``."""
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    data.mkdir()
    (home / "dagster.yaml").symlink_to(PROJECT_ROOT / "dagster.yaml")
    keys = ("POLYGON_API_KEY", "COINGECKO_API_KEY", "COINMARKETCAP_API_KEY", "EODHD_API_KEY")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FKS_") and k not in (*keys, "ALPHA_VANTAGE_API_KEY", "REDIS_URL")
    }
    env.update(DAGSTER_HOME=str(home), FKS_DATA_DIR=str(data), **extra)
    return env


class DevScript:
    """``scripts/dev.sh --port <port>`` started in a session of its own, output in files.

    Args:
        tmp_path: Where its output files go.
        env: Its environment (see :func:`dev_env`).
        prefix: A command to start it through (e.g. a shell that ignores SIGINT first).
    """

    def __init__(self, tmp_path: Path, env: dict[str, str], prefix: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.out = tmp_path / "dev.out"
        self.err = tmp_path / "dev.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [*prefix, str(DEV_SCRIPT), "--port", str(self.port)],
                cwd=PROJECT_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        self.sid = self.process.pid
        self.graphql = httpx.Client(base_url=self.url, timeout=httpx.Timeout(30.0, connect=2.0))

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.graphql.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def wait_for(self, what: str, within_s: float, probe: Callable[[], Any]) -> Any:
        """Call ``probe`` until it returns a truthy value; fail if the script ends or time runs out.

        HTTP errors count as "not yet" (the webserver is still starting).
        """
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"dev.sh exited ({self.process.returncode}) while waiting for {what}:\n"
                    f"{self.tail()}"
                )
            try:
                value = probe()
            except httpx.HTTPError:
                value = None
            if value:
                return value
            time.sleep(0.5)
        pytest.fail(f"no {what} within {within_s:.0f} s:\n{self.tail()}")

    def finished(self, run_id: str) -> str | None:
        """The run's status once it has finished; None before."""
        run = self.query(RUN_QUERY, {"runId": run_id})["runOrError"]
        return run["status"] if run.get("status") in FINISHED else None

    def close(self) -> None:
        self.graphql.close()
        if self.process.poll() is None:
            self.process.kill()
        kill_session(self.sid)
        self.process.wait(timeout=10)


def loaded_location(dev: DevScript) -> dict[str, Any] | None:
    """The loaded code location once the run queue's daemon is healthy; None before."""
    data = dev.query(READY_QUERY)
    entries = data["workspaceOrError"].get("locationEntries") or []
    if not entries or entries[0]["loadStatus"] != "LOADED":
        return None
    location = entries[0]["locationOrLoadError"]
    if location["__typename"] == "PythonError":
        pytest.fail(f"the code location failed to load:\n{location['message']}")
    healthy = {
        status["daemonType"]
        for status in data["instance"]["daemonHealth"]["allDaemonStatuses"]
        if status["healthy"]
    }
    return {"name": entries[0]["name"], **location} if "QUEUED_RUN_COORDINATOR" in healthy else None


def launch_run(dev: DevScript, location: dict[str, Any], job: str, partition: str) -> str:
    """Launch one partition of ``job`` as the UI's Launch run does; the run's id."""
    [repository] = location["repositories"]
    selector = {
        "repositoryLocationName": location["name"],
        "repositoryName": repository["name"],
        "pipelineName": job,
    }
    tags = dev.query(TAGS_QUERY, {"selector": selector, "partition": partition})
    tags_or_error = tags["pipelineOrError"]["partition"]["tagsOrError"]
    assert tags_or_error["__typename"] == "PartitionTags", tags_or_error
    launch_selector = {**selector, "jobName": selector.pop("pipelineName")}
    params = {
        "selector": launch_selector,
        "runConfigData": {},
        "executionMetadata": {"tags": tags_or_error["results"]},
    }
    answer = dev.query(LAUNCH_MUTATION, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]
