"""The production compose stack, run for a test on a real Docker daemon, and driven from outside.

:class:`Stack` is ``docker-compose.yml`` with the test's override (``docker-compose.e2e.yml``:
host networking on ports of its own) under the compose project ``fks-e2e``: it renders the merged
configuration once (dropping the ``ports`` that host networking cannot publish), builds, starts,
waits for every health check, and stops. :class:`Dagster` talks to the stack's webserver over
GraphQL: dagster-graphql's client where it has the call (launching a job's run, a run's status),
the same ``/graphql`` endpoint for the rest (backfills, sensors, event logs).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import yaml
from dagster_graphql import DagsterGraphQLClient

from fks_pipelines.settings import PROJECT_ROOT

COMPOSE_FILE = PROJECT_ROOT / "docker-compose.yml"
OVERRIDE_FILE = Path(__file__).with_name("docker-compose.e2e.yml")
PROJECT = "fks-e2e"
IMAGE = "fks-pipelines:e2e"
NETWORK = "fks-e2e"

# The override's ports (docker-compose.e2e.yml): below Linux's ephemeral range (32768-60999),
# where a client connection of anything else on the machine may hold the port at any moment.
POSTGRES_PORT = 15432
REDIS_PORT = 16379
GRPC_PORT = 14000
WEBSERVER_PORT = 13000
API_PORT = 18003
STREAM_PORT = 18004
PORTS = (POSTGRES_PORT, REDIS_PORT, GRPC_PORT, WEBSERVER_PORT, API_PORT, STREAM_PORT)

LONG_RUNNING = (
    "postgres",
    "redis",
    "code-server",
    "dagster-webserver",
    "dagster-daemon",
    "fks-api",
    "fks-stream",
)
ONE_SHOT = ("postgres-init",)
# Label the run launcher puts on every run container (deploy/dagster.yaml); with the test's
# image, this stack's run containers and no other's.
RUN_LABEL = "fks/role=run"
RUN_FILTERS = ("--filter", f"label={RUN_LABEL}", "--filter", f"ancestor={IMAGE}")

LOCATION = "fks_pipelines"
REPOSITORY = "__repository__"

T = TypeVar("T")


def compose_environment() -> dict[str, str]:
    """The environment of docker and docker-compose: this process's, without the variables the
    compose file reads (they would override the settings file) or any of the project's."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "DOCKER_HOST", "DOCKER_CONFIG")
    return {k: v for k, v in os.environ.items() if k in keep} | {"COMPOSE_PROJECT_NAME": PROJECT}


class StackError(Exception):
    """A compose command failed or the stack did not get healthy; the message says why."""


def docker_unavailable() -> str | None:
    """Why this machine cannot run the stack (no docker CLI, compose or daemon), or ``None``."""
    for tool in ("docker", "docker-compose"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH (scripts/e2e.sh starts dockerd and installs both)"
    result = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        return f"no Docker daemon answers: {result.stderr.strip()[:300]}"
    return None


def ports_in_use() -> list[int]:
    """The stack's ports that something on 127.0.0.1 already holds (as its servers bind them,
    with SO_REUSEADDR: connections of an earlier run waiting in TIME_WAIT are no obstacle)."""
    taken = []
    for port in PORTS:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                taken.append(port)
    return taken


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, every_s: float = 1.0) -> T:
    """``check()`` until it returns something other than ``None``; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


@dataclass
class Container:
    service: str
    id: str
    status: str  # running, exited, ...
    health: str  # healthy, starting, unhealthy, or "" without a health check
    exit_code: int


class Stack:
    """The compose project ``fks-e2e`` built from ``docker-compose.yml`` and the override.

    Args:
        workdir: Where the rendered configuration and the settings file go.
        settings: The deployment's .env (POSTGRES_PASSWORD, DOCKER_GID, provider URLs, ...).
    """

    def __init__(self, workdir: Path, settings: Mapping[str, str]) -> None:
        self.workdir = workdir
        self.env_file = workdir / "stack.env"
        self.file = workdir / "stack.yml"
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        self.env_file.chmod(0o600)
        self._render()

    def _render(self) -> None:
        """``docker-compose config`` of the two files, without ``ports``: with host networking
        docker refuses port bindings, and nothing is published anyway."""
        rendered = self._run(
            [
                "docker-compose",
                "--project-directory",
                str(PROJECT_ROOT),
                "--env-file",
                str(self.env_file),
                "-f",
                str(COMPOSE_FILE),
                "-f",
                str(OVERRIDE_FILE),
                "config",
            ],
            timeout_s=60,
        )
        config = yaml.safe_load(rendered)
        for service in config["services"].values():
            service.pop("ports", None)
        self.config = config
        self.file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.file.chmod(0o600)

    # --- commands ---------------------------------------------------------------------------

    def _run(self, command: Sequence[str], timeout_s: float, check: bool = True) -> str:
        try:
            result = subprocess.run(
                list(command),
                cwd=PROJECT_ROOT,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                env=compose_environment(),
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"{' '.join(command[:4])} ... took over {timeout_s:.0f} s") from exc
        if check and result.returncode != 0:
            raise StackError(
                f"`{' '.join(command)}` exited {result.returncode}:\n"
                f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def compose(self, *args: str, timeout_s: float = 300, check: bool = True) -> str:
        return self._run(
            ["docker-compose", "-p", PROJECT, "-f", str(self.file), *args],
            timeout_s=timeout_s,
            check=check,
        )

    def build(self) -> float:
        """``docker-compose build``; seconds it took."""
        started = time.monotonic()
        self.compose("build", "--force-rm", timeout_s=1200)
        return time.monotonic() - started

    def up(self, timeout_s: float = 300) -> float:
        """``docker-compose up -d`` and every health check passing; seconds from the command."""
        started = time.monotonic()
        try:
            self.compose("up", "-d", timeout_s=timeout_s)
        except StackError as exc:
            raise StackError(f"{exc}\nhealth checks: {self.health_logs()}") from exc
        self.wait_healthy(timeout_s=timeout_s - (time.monotonic() - started))
        return time.monotonic() - started

    def down(self, volumes: bool = True) -> None:
        self.compose("down", "--remove-orphans", *(["-v"] if volumes else []), timeout_s=180)

    def stop(self, service: str) -> None:
        self.compose("stop", service, timeout_s=120)

    def start(self, service: str) -> None:
        self.compose("start", service, timeout_s=120)

    def restart(self, service: str) -> None:
        self.compose("restart", service, timeout_s=120)

    # --- state ------------------------------------------------------------------------------

    def containers(self) -> dict[str, Container]:
        """This project's containers by service (the latest one of each)."""
        ids = self._run(
            ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}"],
            timeout_s=30,
        ).split()
        found: dict[str, Container] = {}
        for info in self._inspect(ids):
            state = info["State"]
            service = info["Config"]["Labels"]["com.docker.compose.service"]
            found[service] = Container(
                service=service,
                id=info["Id"],
                status=state["Status"],
                health=(state.get("Health") or {}).get("Status", ""),
                exit_code=int(state.get("ExitCode", 0)),
            )
        return found

    def _inspect(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        return json.loads(self._run(["docker", "inspect", *ids], timeout_s=30))

    def unhealthy(self, services: Iterable[str] = LONG_RUNNING) -> dict[str, str]:
        """Service -> its state, for each of ``services`` not running healthy (and each one-shot
        service not exited 0)."""
        containers = self.containers()
        bad = {}
        for service in services:
            c = containers.get(service)
            if c is None or c.status != "running" or c.health != "healthy":
                bad[service] = "missing" if c is None else f"{c.status}/{c.health or '-'}"
        for service in ONE_SHOT:
            c = containers.get(service)
            if c is None or c.status != "exited" or c.exit_code != 0:
                bad[service] = "missing" if c is None else f"{c.status} ({c.exit_code})"
        return bad

    def wait_healthy(self, services: Iterable[str] = LONG_RUNNING, timeout_s: float = 240) -> None:
        services = tuple(services)
        deadline = time.monotonic() + timeout_s
        while bad := self.unhealthy(services):
            failed = {s: state for s, state in bad.items() if "unhealthy" in state}
            failed |= {s: v for s, v in bad.items() if s in ONE_SHOT and "exited" in v}
            if failed or time.monotonic() > deadline:
                within = "" if failed else f" within {timeout_s:.0f} s"
                raise StackError(
                    f"not healthy{within}: {bad}\nhealth checks: {self.health_logs()}\n"
                    f"{self.logs(list(bad))}"
                )
            time.sleep(0.5)

    def health_logs(self) -> dict[str, Any]:
        """Each container's state and its last health check results (for failure messages)."""
        return {
            c.service: {
                "state": f"{c.status}/{c.health}",
                "checks": [
                    (h["Start"], h["ExitCode"], h["Output"][-300:])
                    for h in (info["State"].get("Health") or {}).get("Log", [])
                ],
            }
            for c in self.containers().values()
            for info in self._inspect([c.id])
        }

    def logs(self, services: Sequence[str] = (), tail: int = 60) -> str:
        return self.compose(
            "logs", "--no-color", "--tail", str(tail), *services, timeout_s=60, check=False
        )

    def run_containers(self) -> list[dict[str, str]]:
        """This stack's run containers that exist now (running or not): id, run id, status."""
        out = self._run(
            [
                "docker",
                "ps",
                "-a",
                *RUN_FILTERS,
                "--format",
                '{{.ID}}\t{{.Label "dagster/run_id"}}\t{{.Status}}',
            ],
            timeout_s=30,
        )
        rows = [line.split("\t") for line in out.splitlines() if line.strip()]
        return [{"id": r[0], "run_id": r[1], "status": r[2]} for r in rows]

    def remove_run_containers(self) -> None:
        """Force-remove run containers still there (a run cut off by a failed test): compose
        does not know them, so `down` leaves them."""
        ids = [row["id"] for row in self.run_containers()]
        if ids:
            self._run(["docker", "rm", "-f", *ids], timeout_s=60, check=False)

    def leftovers(self) -> dict[str, list[str]]:
        """What this project or its runs still hold in Docker: containers, volumes, networks."""

        def names(command: list[str]) -> list[str]:
            return [n for n in self._run(command, timeout_s=30).split() if n]

        label = f"label=com.docker.compose.project={PROJECT}"
        return {
            "containers": names(["docker", "ps", "-aq", "--filter", label]),
            "run_containers": names(["docker", "ps", "-aq", *RUN_FILTERS]),
            "volumes": names(["docker", "volume", "ls", "-q", "--filter", label]),
            "networks": names(["docker", "network", "ls", "-q", "--filter", f"name=^{NETWORK}$"]),
        }


# --- Dagster over GraphQL -------------------------------------------------------------------

READY_QUERY = """
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

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status endTimestamp error { message } }
    ... on Error { message }
  }
}
"""

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs {
      results { runId status creationTime startTime endTime tags { key value } }
    }
    ... on Error { message }
  }
}
"""

LOGS_QUERY = """
query Logs($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events {
        __typename
        ... on MessageEvent { eventType message timestamp level }
        ... on ExecutionStepFailureEvent { error { message cause { message } } }
        ... on ExecutionStepUpForRetryEvent { error { message cause { message } } }
        ... on RunFailureEvent { error { message cause { message } } }
      }
    }
    ... on Error { message }
  }
}
"""

START_SENSOR = """
mutation Start($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { id status } }
    ... on Error { message }
  }
}
"""

STOP_SENSOR = """
mutation Stop($id: String!) {
  stopSensor(id: $id) {
    __typename
    ... on StopSensorMutationResult { instigationState { status } }
    ... on Error { message }
  }
}
"""

FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


@dataclass(frozen=True)
class Event:
    type: str | None
    message: str
    timestamp: float  # seconds
    level: str
    error: str = ""  # a failure's error and its cause


def _error_text(error: dict[str, Any] | None) -> str:
    if not error:
        return ""
    cause = error.get("cause") or {}
    return error["message"].strip() + (f" (cause: {cause['message'].strip()})" if cause else "")


class Dagster:
    """The stack's Dagster, from outside: its webserver's GraphQL API."""

    def __init__(self, port: int = WEBSERVER_PORT) -> None:
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)

    def close(self) -> None:
        self.http.close()

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self.http.post("/graphql", json={"query": query, "variables": variables or {}})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise StackError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until the code location is loaded over gRPC and every required daemon is healthy."""
        state: dict[str, Any] = {}

        def ready() -> bool | None:
            try:
                data = self.query(READY_QUERY)
            except (httpx.HTTPError, StackError) as exc:
                state["last"] = repr(exc)
                return None
            state["last"] = data
            entries = data["workspaceOrError"].get("locationEntries") or []
            loaded = any(
                e["name"] == LOCATION
                and e["locationOrLoadError"]
                and e["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                for e in entries
            )
            daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
            healthy = all(d["healthy"] for d in daemons if d["required"])
            return True if loaded and healthy else None

        try:
            wait_for("the code location and the daemons", ready, timeout_s)
        except StackError as exc:
            raise StackError(f"{exc}; last answer: {state.get('last')}") from exc

    # --- runs -------------------------------------------------------------------------------

    def launch_partition(self, job: str, partition: str, tags: Mapping[str, str] = ()) -> str:
        """A run of ``job`` for one ``date|symbol`` partition (``dagster/partition`` tag)."""
        return self.client.submit_job_execution(
            job,
            repository_location_name=LOCATION,
            repository_name=REPOSITORY,
            run_config={},
            tags={"dagster/partition": partition, **dict(tags)},
        )

    def runs(self, tags: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        variables = {"filter": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
        data = self.query(RUNS_QUERY, variables)["runsOrError"]
        if data["__typename"] != "Runs":
            raise StackError(f"runs: {data}")
        for run in data["results"]:
            run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
        return data["results"]

    def run(self, run_id: str) -> dict[str, Any]:
        [found] = [r for r in self.runs() if r["runId"] == run_id]
        return found

    def wait_finished(self, run_ids: Iterable[str], timeout_s: float = 240) -> dict[str, str]:
        """Run id -> final status, once every run of ``run_ids`` has finished."""
        run_ids = list(run_ids)

        def finished() -> dict[str, str] | None:
            statuses = {r: self.client.get_run_status(r).value for r in run_ids}
            return statuses if all(s in FINISHED for s in statuses.values()) else None

        return wait_for(f"runs {run_ids} to finish", finished, timeout_s)

    def failures(self, run_id: str) -> list[str]:
        """What went wrong in a run: failed steps (retried ones too) and error events."""
        return [
            f"{e.type}: {e.message} {e.error}".strip()
            for e in self.events(run_id)
            if e.error or e.level in ("ERROR", "CRITICAL")
        ]

    def wait_succeeded(self, run_ids: Iterable[str], timeout_s: float = 240) -> None:
        """Until every run of ``run_ids`` has succeeded. Fails at once, with the errors, when
        one fails, or has a step waiting for a retry (the asset's RetryPolicy waits minutes)."""
        run_ids = list(run_ids)

        def succeeded() -> bool | None:
            statuses = {r: self.client.get_run_status(r).value for r in run_ids}
            failed = {r: self.failures(r) for r, status in statuses.items() if status != "SUCCESS"}
            failed = {r: errors for r, errors in failed.items() if errors}
            if failed or any(s in ("FAILURE", "CANCELED") for s in statuses.values()):
                raise StackError(f"runs did not succeed: {statuses}; errors: {failed}")
            return True if all(s == "SUCCESS" for s in statuses.values()) else None

        wait_for(f"runs {run_ids} to succeed", succeeded, timeout_s)

    def events(self, run_id: str) -> list[Event]:
        events: list[Event] = []
        cursor = None
        while True:
            data = self.query(LOGS_QUERY, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if data["__typename"] != "EventConnection":
                raise StackError(f"logs of {run_id}: {data}")
            events += [
                Event(
                    e.get("eventType"),
                    e["message"],
                    int(e["timestamp"]) / 1000,
                    e["level"],
                    _error_text(e.get("error")),
                )
                for e in data["events"]
                if "message" in e
            ]
            cursor = data["cursor"]
            if not data["hasMore"]:
                return events

    # --- backfills --------------------------------------------------------------------------

    def launch_backfill(self, asset_key: Sequence[str], partitions: Sequence[str]) -> str:
        data = self.query(
            LAUNCH_BACKFILL,
            {
                "params": {
                    "assetSelection": [{"path": list(asset_key)}],
                    "partitionNames": list(partitions),
                }
            },
        )["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise StackError(f"backfill not launched: {data}")
        return data["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        data = self.query(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
        if data["__typename"] != "PartitionBackfill":
            raise StackError(f"backfill {backfill_id}: {data}")
        return data

    # --- sensors ----------------------------------------------------------------------------

    def start_sensor(self, name: str) -> str:
        """Turn ``name`` on; its instigator state id (for :meth:`stop_sensor`)."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
        data = self.query(START_SENSOR, {"selector": {**selector, "sensorName": name}})[
            "startSensor"
        ]
        if data["__typename"] != "Sensor" or data["sensorState"]["status"] != "RUNNING":
            raise StackError(f"sensor {name} not started: {data}")
        return data["sensorState"]["id"]

    def stop_sensor(self, state_id: str) -> None:
        data = self.query(STOP_SENSOR, {"id": state_id})["stopSensor"]
        if data["__typename"] != "StopSensorMutationResult":
            raise StackError(f"sensor not stopped: {data}")
