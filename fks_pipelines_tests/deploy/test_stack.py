"""The production deployment end to end: the image, ``docker-compose.yml`` and
``deploy/dagster.yaml`` on a real Docker daemon, driven from outside as an operator would.

The stack is the project's own compose file under the override kept beside this test (host
networking on ports of its own). Binance and CoinGecko are the project's fake servers, run here on
127.0.0.1; Binance's klines can be held at a gate, so that the test decides when two run
containers are fetching at once. Everything else is real: PostgreSQL (Dagster's storage and the
`market` warehouse), Redis, the gRPC code server, webserver, daemon, fks-api, fks-stream (on a
local Binance stream), and a container per run started by the DockerRunLauncher.

The tests run in order and share the stack (module fixture): build and start it, one partition,
a backfill of 7 days x 2 symbols (the rate limit across containers and a daemon restart on the
way), what the warehouse, Dagster's storage and fks-api then hold, a signed webhook and a kline
closing on the stream each turned into a run by the sensor, a run while Redis is down, and
`down -v`. Figures (image size, start-up times,
run start in a container) go to ``test-artifacts/e2e-figures.json``.

Needs dockerd, docker-compose and the base images (scripts/e2e.sh provides them); deselected
unless ``-m docker`` (see conftest.py).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fks_pipelines.settings import PROJECT_ROOT
from fks_pipelines.webhooks.signing import signed_headers
from fks_pipelines_tests.deploy.stack import (
    API_PORT,
    IMAGE,
    LONG_RUNNING,
    NETWORK,
    POSTGRES_PORT,
    STREAM_PORT,
    Dagster,
    Event,
    Stack,
    docker_unavailable,
    ports_in_use,
    wait_for,
)
from fks_pipelines_tests.fakes.binance import FakeBinance, expected_frame
from fks_pipelines_tests.fakes.binance_stream import FakeBinanceStream, kline
from fks_pipelines_tests.fakes.coingecko import FakeCoinGecko
from fks_pipelines_tests.fakes.server import Request, Response
from fks_pipelines_tests.services import unavailable
from fks_pipelines_tests.webhooks.samples import closed_kline

pytestmark = pytest.mark.docker

log = logging.getLogger(__name__)

JOB = "ohlcv_binance_1h_job"
ASSET = ("ohlcv", "binance", "1h")
KLINES = "/fapi/v1/klines"
FIGURES_FILE = PROJECT_ROOT / "test-artifacts" / "e2e-figures.json"
# Longest a request is held at the gate (the test opens it well before).
GATE_MAX_S = 150.0

# One partition of BTCUSDT, fetched from the first page of its 1h bars (1,500 bars from the
# asset's first partition, 2024-01-01, i.e. up to 2024-03-03 12:00 UTC).
FIRST = "2024-01-05|BTCUSDT"
# The backfill: 7 days x 2 symbols across that page boundary, so that each symbol's run makes two
# requests, the second right after the first answer.
BACKFILL_DAYS = [d.date().isoformat() for d in pd.date_range("2024-02-28", periods=7)]
BACKFILL_SYMBOLS = ("ETHUSDT", "SOLUSDT")
BACKFILL = [f"{day}|{symbol}" for day in BACKFILL_DAYS for symbol in BACKFILL_SYMBOLS]
# A day the first page holds (cached in Redis by then): the webhook's run.
WEBHOOK_PARTITION = "2024-01-06|BTCUSDT"
STREAM_PARTITION = "2024-01-07|BTCUSDT"
# A day of BTCUSDT's second page (not cached): the run during which Redis stops.
REDIS_PARTITION = "2024-03-10|BTCUSDT"

FIGURES: dict[str, Any] = {}

# Run in the image with `uv export` on stdin: the locked packages for its interpreter against the
# installed distributions (the project itself aside).
COMPARE_WITH_LOCK = """
import importlib.metadata, json, re, sys
from packaging.requirements import Requirement
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
locked = {}
for line in sys.stdin:
    line = line.strip()
    if line and not line.startswith("#"):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            locked[norm(req.name)] = str(req.specifier).removeprefix("==")
installed = {norm(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}
installed.pop("fks-pipelines")
print(json.dumps({
    "missing": {n: v for n, v in locked.items() if n not in installed},
    "extra": {n: v for n, v in installed.items() if n not in locked},
    "other_version": {n: [v, installed[n]] for n, v in locked.items()
                      if n in installed and installed[n] != v},
}))
"""


class GatedBinance(FakeBinance):
    """FakeBinance whose klines answers wait while :attr:`gate` is closed (cleared)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def _handle(self, request: Request) -> Response:
        if request.path == KLINES:
            self.gate.wait(GATE_MAX_S)
        return super()._handle(request)

    def klines(self) -> list[Request]:
        return self.requests_to(KLINES)


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binance() -> Iterator[GatedBinance]:
    with GatedBinance() as fake:
        yield fake


@pytest.fixture(scope="module")
def binance_stream() -> Iterator[FakeBinanceStream]:
    with FakeBinanceStream() as fake:
        yield fake


@pytest.fixture(scope="module")
def coingecko() -> Iterator[FakeCoinGecko]:
    with FakeCoinGecko() as fake:
        yield fake


@pytest.fixture(scope="module")
def secret() -> str:
    return secrets.token_hex(16)


@pytest.fixture(scope="module")
def password() -> str:
    return "e2e-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    binance: GatedBinance,
    binance_stream: FakeBinanceStream,
    coingecko: FakeCoinGecko,
    secret: str,
    password: str,
) -> Iterator[Stack]:
    """The stack built and started cold (fresh volumes); taken down with its volumes at the end."""
    reason = docker_unavailable()
    if reason is not None:
        unavailable(reason)
    settings = {
        "POSTGRES_PASSWORD": password,
        "DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
        "FKS_IMAGE": IMAGE,
        "FKS_NETWORK": NETWORK,
        "FKS_BINANCE_BASE_URL": binance.url,
        "FKS_BINANCE_WS_URL": binance_stream.url,
        "FKS_COINGECKO_BASE_URL": f"{coingecko.url}/api/v3",
        "FKS_BINANCE_RPS": "1",
        "FKS_COINGECKO_RPS": "5",
        # Requests held at the gate for the length of a daemon restart must not time out.
        "FKS_HTTP_READ_TIMEOUT_S": "180",
        "FKS_WEBHOOK_SECRET": secret,
        "FKS_WEBHOOK_SENSOR_INTERVAL_S": "5",
        "FKS_DAGSTER_UI_URL": "http://127.0.0.1:13000",
    }
    stack = Stack(tmp_path_factory.mktemp("stack"), settings)
    stack.down()  # whatever a killed earlier run left
    stack.remove_run_containers()
    assert not ports_in_use(), f"ports of the stack already in use: {ports_in_use()}"
    try:
        FIGURES["build_s"] = round(stack.build(), 1)
        FIGURES["up_cold_s"] = round(stack.up(), 1)
        yield stack
    except BaseException:
        log.error("stack logs:\n%s", stack.logs())
        raise
    finally:
        try:
            stack.down()
            stack.remove_run_containers()
        finally:
            FIGURES_FILE.parent.mkdir(exist_ok=True)
            FIGURES_FILE.write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture(scope="module")
def dagster(stack: Stack) -> Iterator[Dagster]:
    client = Dagster()
    client.wait_ready()
    yield client
    client.close()


@pytest.fixture(scope="module")
def engines(stack: Stack, password: str) -> Iterator[dict[str, sa.Engine]]:
    """The stack's two databases, from outside."""
    url = sa.URL.create(
        "postgresql+psycopg",
        username="fks",
        password=password,
        host="127.0.0.1",
        port=POSTGRES_PORT,
    )
    found = {
        name: sa.create_engine(url.set(database=name), poolclass=sa.NullPool)
        for name in ("dagster", "market")
    }
    yield found
    for engine in found.values():
        engine.dispose()


@pytest.fixture
def api() -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{API_PORT}", timeout=30) as client:
        yield client


# --- helpers ------------------------------------------------------------------------------


def first(events: list[Event], event_type: str) -> float:
    [stamp, *_] = [e.timestamp for e in events if e.type == event_type] or [None]
    assert stamp is not None, (event_type, [e.type for e in events])
    return stamp


def start_figures(events: list[Event]) -> dict[str, float]:
    """Seconds from a run's launch (RUN_STARTING: the daemon hands it to the run launcher) to
    its worker's RUN_START in the new container, and to its first step."""
    starting = first(events, "RUN_STARTING")
    return {
        "launch_to_run_start_s": round(first(events, "RUN_START") - starting, 2),
        "launch_to_step_start_s": round(first(events, "STEP_START") - starting, 2),
    }


def container_events(events: list[Event]) -> list[str]:
    """The run launcher's "Launching run in a new container <id> with image <image>" events."""
    return [e.message for e in events if "Launching run in a new container" in e.message]


def watch_run_containers(stack: Stack, stop: threading.Event, seen: dict[str, set[str]]) -> None:
    """Record run id -> container ids of every run container `docker ps` shows until ``stop``."""
    while not stop.is_set():
        for row in stack.run_containers():
            seen.setdefault(row["run_id"], set()).add(row["id"])
        stop.wait(0.25)


def warehouse_frame(engine: sa.Engine, symbol: str, start: str, end: str) -> pd.DataFrame:
    query = sa.text(
        "SELECT symbol, ts, open, high, low, close, volume, quote_volume, trades FROM ohlcv "
        "WHERE provider = 'binance' AND interval = '1h' AND symbol = :symbol "
        "AND ts >= :start AND ts < :end ORDER BY ts"
    )
    with engine.connect() as conn:
        frame = pd.read_sql(
            query,
            conn,
            params={
                "symbol": symbol,
                "start": pd.Timestamp(start, tz="UTC"),
                "end": pd.Timestamp(end, tz="UTC"),
            },
        )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).dt.as_unit("ns")
    return frame


def assert_same_bars(found: pd.DataFrame, expected: pd.DataFrame) -> None:
    """The bars of ``expected`` exactly (to the decimals the fake sends: 2, 3 or 5 places, as
    Binance does), and their trade counts where ``found`` has them."""
    assert list(found["ts"]) == list(expected["ts"])
    for column in ("open", "high", "low", "close", "volume", "quote_volume"):
        np.testing.assert_allclose(
            found[column].astype(float), expected[column], rtol=0, atol=1e-5, err_msg=column
        )
    if "trades" in found:
        assert list(found["trades"]) == list(expected["trades"])


def materializations(engine: sa.Engine, partitions: list[str]) -> dict[str, int]:
    """Materialisations of ``ohlcv/binance/1h`` per partition in Dagster's event log."""
    query = sa.text(
        "SELECT partition, count(*) FROM event_logs "
        "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = :key "
        "AND partition = ANY(:partitions) GROUP BY partition"
    )
    with engine.connect() as conn:
        rows = conn.execute(query, {"key": json.dumps(list(ASSET)), "partitions": partitions})
        return {partition: count for partition, count in rows}


# --- the tests, in order --------------------------------------------------------------------


@pytest.mark.timeout(1500)
def test_the_image_is_small_runs_as_non_root_and_holds_exactly_the_lock(stack: Stack) -> None:
    [info] = json.loads(
        subprocess.run(
            ["docker", "image", "inspect", IMAGE], capture_output=True, check=True, text=True
        ).stdout
    )
    FIGURES["image_size_mb"] = round(info["Size"] / 1e6)
    assert info["Config"]["User"] == "fks"
    # No secret baked in: the image's environment names no key, password or secret.
    baked = {e.split("=", 1)[0] for e in info["Config"]["Env"]}
    assert not {n for n in baked if any(w in n for w in ("KEY", "PASSWORD", "SECRET", "URL"))}

    # What uv.lock gives the image's interpreter (markers evaluated inside the image, whose
    # Python may differ from this one) against what is installed there.
    exported = subprocess.run(
        [
            str(PROJECT_ROOT / ".tools" / "bin" / "uv"),
            "export",
            "--frozen",
            "--no-dev",
            "--no-hashes",
            "--no-emit-project",
            "--project",
            str(PROJECT_ROOT),
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    compared = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--entrypoint",
            "python",
            IMAGE,
            "-c",
            COMPARE_WITH_LOCK,
        ],
        input=exported,
        capture_output=True,
        check=True,
        text=True,
        timeout=120,
    ).stdout
    assert json.loads(compared) == {"missing": {}, "extra": {}, "other_version": {}}


@pytest.mark.timeout(400)
def test_the_stack_comes_back_healthy_on_its_volume_and_migrates(
    stack: Stack, dagster: Dagster
) -> None:
    stack.down(volumes=False)
    FIGURES["up_warm_s"] = round(stack.up(), 1)
    assert "database market exists" in stack.compose("logs", "--no-color", "postgres-init")
    # The upgrade step of README "Production": the instance's schema, migrated in place (the
    # command fails the test if it fails). README's `run --rm` is refused under host networking
    # by docker-compose v1 (it links the dependencies), so here it runs in the daemon's container.
    stack.compose("exec", "-T", "dagster-daemon", "dagster", "instance", "migrate")
    dagster.wait_ready()


@pytest.mark.timeout(300)
def test_a_partition_runs_in_a_container_of_its_own(
    stack: Stack, dagster: Dagster, binance: GatedBinance
) -> None:
    stop, seen = threading.Event(), {}
    watcher = threading.Thread(target=watch_run_containers, args=(stack, stop, seen))
    watcher.start()
    try:
        run_id = dagster.launch_partition(JOB, FIRST)
        dagster.wait_succeeded([run_id])
    finally:
        stop.set()
        watcher.join()

    run = dagster.run(run_id)
    container = run["tags"]["docker/container_id"]
    assert run["tags"]["dagster/image"] == IMAGE
    assert seen.get(run_id) and container.startswith(next(iter(seen[run_id])))
    events = dagster.events(run_id)
    assert container_events(events) == [
        f"[DockerRunLauncher] Launching run in a new container {container} with image {IMAGE}"
    ]
    FIGURES["single_run"] = start_figures(events)
    assert [r.query["symbol"] for r in binance.klines()] == ["BTCUSDT"]
    # The finished run's container is gone (auto_remove).
    wait_for("the run container to go", lambda: True if not stack.run_containers() else None, 30)


@pytest.mark.timeout(420)
def test_a_backfill_shares_the_rate_limit_across_containers_and_survives_a_daemon_restart(
    stack: Stack, dagster: Dagster, binance: GatedBinance, engines: dict[str, sa.Engine]
) -> None:
    before = len(binance.klines())
    stop, seen = threading.Event(), {}
    watcher = threading.Thread(target=watch_run_containers, args=(stack, stop, seen))
    watcher.start()
    binance.gate.clear()
    try:
        backfill_id = dagster.launch_backfill(ASSET, BACKFILL)
        # Each symbol's run sends its first request and waits for the answer: two run
        # containers are fetching at once.
        wait_for(
            "a first request of each backfill symbol",
            lambda: (
                True
                if {r.query["symbol"] for r in binance.klines()[before:]} >= set(BACKFILL_SYMBOLS)
                else None
            ),
            timeout_s=120,
            every_s=0.2,
        )
        held = {row["run_id"] for row in stack.run_containers() if "Up" in row["status"]}
        # The daemon goes away and comes back while the backfill's runs are in flight.
        restart_started = time.monotonic()
        stack.restart("dagster-daemon")
        stack.wait_healthy(["dagster-daemon"], timeout_s=120)
        FIGURES["daemon_restart_to_healthy_s"] = round(time.monotonic() - restart_started, 1)
    finally:
        # Both runs get their first answer at once and want their second page at once: only a
        # limiter shared by the containers (Redis) keeps those requests 1 s apart.
        binance.gate.set()

    def finished() -> dict[str, Any] | None:
        for run in dagster.runs({"dagster/backfill": backfill_id}):
            if errors := dagster.failures(run["runId"]):
                raise AssertionError(f"backfill run {run['runId']} failed: {errors}")
        state = dagster.backfill(backfill_id)
        return state if state["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None

    try:
        state = wait_for("the backfill to complete", finished, timeout_s=240, every_s=2)
    finally:
        stop.set()
        watcher.join()
    runs = dagster.runs({"dagster/backfill": backfill_id})
    assert state["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), state
    assert {r["status"] for r in runs} == {"SUCCESS"}
    # One run per symbol over its 7 days (BackfillPolicy.multi_run), each in its own container.
    assert len(runs) == len(BACKFILL_SYMBOLS)
    assert held == {r["runId"] for r in runs}
    containers = {r["tags"]["docker/container_id"] for r in runs}
    assert len(containers) == len(runs)
    for run in runs:
        events = dagster.events(run["runId"])
        assert len(container_events(events)) == 1
        assert seen.get(run["runId"])
    FIGURES["backfill_runs"] = [start_figures(dagster.events(r["runId"])) for r in runs]

    # Two requests per symbol (its window spans two pages), never two within a second.
    requests = binance.klines()[before:]
    assert sorted(r.query["symbol"] for r in requests) == sorted(BACKFILL_SYMBOLS * 2)
    arrivals = sorted(r.received_at for r in requests)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(arrivals)]
    FIGURES["backfill_request_gaps_s"] = gaps
    assert min(gaps) >= 1.0, gaps

    # No partition lost, none written twice across the restart.
    assert materializations(engines["dagster"], BACKFILL) == dict.fromkeys(BACKFILL, 1)


@pytest.mark.timeout(120)
def test_the_warehouse_dagster_storage_and_the_api_hold_what_the_runs_wrote(
    engines: dict[str, sa.Engine], api: httpx.Client
) -> None:
    assert_same_bars(
        warehouse_frame(engines["market"], "BTCUSDT", "2024-01-05", "2024-01-06"),
        expected_frame("BTCUSDT", "1h", "2024-01-05", "2024-01-06"),
    )
    for symbol in BACKFILL_SYMBOLS:
        assert_same_bars(
            warehouse_frame(engines["market"], symbol, "2024-02-28", "2024-03-06"),
            expected_frame(symbol, "1h", "2024-02-28", "2024-03-06"),
        )
    with engines["market"].connect() as conn:
        total = conn.execute(sa.text("SELECT count(*) FROM ohlcv")).scalar_one()
    assert total == 24 * (1 + len(BACKFILL))

    # Every check evaluated for every partition, in Dagster's PostgreSQL.
    with engines["dagster"].connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT check_name, partition, execution_status FROM asset_check_executions "
                "WHERE asset_key = :key"
            ),
            {"key": json.dumps(list(ASSET))},
        ).all()
    checks = {name for name, _, _ in rows}
    assert {"schema", "outliers", "completeness", "freshness"} <= checks
    for partition in [FIRST, *BACKFILL]:
        assert {name for name, p, _ in rows if p == partition} == checks, partition
    assert {status for name, _, status in rows if name == "schema"} == {"SUCCEEDED"}

    # fks-api serves the window from the warehouse.
    response = api.get(
        "/api/v1/data/ohlcv",
        params={
            "symbol": "ETHUSDT",
            "provider": "binance",
            "interval": "1h",
            "start": "2024-02-28T00:00:00Z",
            "end": "2024-03-06T00:00:00Z",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["source"] == "warehouse"
    served = pd.DataFrame(body["candles"])
    served["ts"] = pd.to_datetime(served["ts"], utc=True).dt.as_unit("ns")
    assert_same_bars(served, expected_frame("ETHUSDT", "1h", "2024-02-28", "2024-03-06"))
    # ... and a price from the second fake provider, through the same runtime.
    price = api.get("/api/v1/data/price", params={"symbol": "bitcoin", "provider": "coingecko"})
    assert price.status_code == 200, price.text
    health = api.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text


def backfill_finished(dagster: Dagster, backfill_id: str) -> dict[str, Any] | None:
    """The backfill's state once it has finished; None before. A failed run fails the test."""
    for run in dagster.runs({"dagster/backfill": backfill_id}):
        if errors := dagster.failures(run["runId"]):
            raise AssertionError(f"backfill run {run['runId']} failed: {errors}")
    state = dagster.backfill(backfill_id)
    return state if state["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None


# Run in the code-server container, which mounts the fks-data volume as the run containers do.
READ_EXPORT = """
import json, pyarrow.dataset as ds
table = ds.dataset("/var/lib/fks/exports/ohlcv_consolidated", partitioning="hive").to_table()
frame = table.to_pandas()
print(json.dumps({
    "rows": len(frame),
    "instruments": sorted(map(str, frame["instrument"].unique())),
    "months": sorted(map(str, frame["month"].unique())),
    "first": frame["ts"].min().isoformat(),
    "sources": sorted(frame["source"].unique()),
}))
"""


@pytest.mark.timeout(300)
def test_downstream_assets_read_the_stored_bars_and_the_export_lands_on_the_volume(
    stack: Stack, dagster: Dagster
) -> None:
    """Consolidation, analytics/daily_returns (the warehouse I/O manager, ADBC in the image) and
    the Parquet export, each in a run container of its own; the file outlives its container."""
    for asset, partition in (
        (("ohlcv", "consolidated", "1h"), "2024-01-05|BTC-USD"),
        (("analytics", "daily_returns"), "2024-01-05"),
        (("exports", "consolidated", "1h"), "2024-01|BTC-USD"),
    ):
        backfill_id = dagster.launch_backfill(asset, [partition])
        state = wait_for(
            f"{'/'.join(asset)} {partition}",
            lambda backfill_id=backfill_id: backfill_finished(dagster, backfill_id),
            timeout_s=180,
            every_s=2,
        )
        assert state["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), state
        runs = dagster.runs({"dagster/backfill": backfill_id})
        assert {r["status"] for r in runs} == {"SUCCESS"}, runs

    exported = json.loads(stack.compose("exec", "-T", "code-server", "python", "-c", READ_EXPORT))
    assert exported == {
        "rows": 24,
        "instruments": ["BTC-USD"],
        "months": ["2024-01"],
        "first": "2024-01-05T00:00:00+00:00",
        "sources": ["binance"],
    }


@pytest.mark.timeout(120)
def test_both_databases_can_be_backed_up(stack: Stack, tmp_path: Path) -> None:
    """README "Production": a pg_dump of each database from the postgres container."""
    for database in ("dagster", "market"):
        dump = tmp_path / f"{database}.dump"
        with dump.open("wb") as out:
            subprocess.run(
                [
                    "docker",
                    "exec",
                    stack.containers()["postgres"].id,
                    "sh",
                    "-c",
                    f'pg_dump -U "$POSTGRES_USER" -Fc {database}',
                ],
                stdout=out,
                check=True,
                timeout=60,
            )
        listed = subprocess.run(
            ["docker", "exec", "-i", stack.containers()["postgres"].id, "pg_restore", "--list"],
            input=dump.read_bytes(),
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout.decode()
        table = "ohlcv" if database == "market" else "event_logs"
        assert f"TABLE public {table} " in listed, listed[-2000:]


@pytest.mark.timeout(300)
def test_a_signed_webhook_becomes_a_run_in_a_container_through_the_sensor(
    stack: Stack, dagster: Dagster, api: httpx.Client, secret: str
) -> None:
    open_ms = int(pd.Timestamp("2024-01-06T10:00:00Z").value // 1_000_000)
    body = json.dumps(closed_kline("BTCUSDT", "1h", open_ms)).encode()
    response = api.post(
        "/webhooks/binance",
        content=body,
        headers={
            "Content-Type": "application/json",
            **signed_headers(secret, body, int(time.time())),
        },
    )
    assert response.status_code == 202, response.text
    assert response.json()["published"] is True

    sensor = dagster.start_sensor("webhook_events")
    try:
        [run] = wait_for(
            "the webhook sensor's run",
            lambda: dagster.runs({"fks/trigger": "webhook"}) or None,
            timeout_s=120,
            every_s=1,
        )
    finally:
        dagster.stop_sensor(sensor)
    dagster.wait_succeeded([run["runId"]])
    run = dagster.run(run["runId"])
    assert run["tags"].get("dagster/partition") == WEBHOOK_PARTITION or (
        run["tags"].get("dagster/asset_partition_range_start") == WEBHOOK_PARTITION
        and run["tags"].get("dagster/asset_partition_range_end") == WEBHOOK_PARTITION
    ), run["tags"]
    assert len(container_events(dagster.events(run["runId"]))) == 1
    assert "docker/container_id" in run["tags"]


def test_a_kline_closing_on_the_stream_becomes_a_run_in_a_container_through_the_sensor(
    stack: Stack, dagster: Dagster, engines: dict[str, sa.Engine], binance_stream: FakeBinanceStream
) -> None:
    health = httpx.get(f"http://127.0.0.1:{STREAM_PORT}/health", timeout=10).json()
    assert health["status"] == "ok", health
    opened = int(pd.Timestamp(STREAM_PARTITION.split("|")[0] + "T10:00Z").value // 1_000_000)
    binance_stream.send([kline("BTCUSDT", "1h", opened, closed=True)])
    event_id = f"binance:BTCUSDT:1h:{opened}:closed"
    query = sa.text("SELECT source FROM webhook_events WHERE id = :id")
    with engines["market"].connect() as conn:
        stored = wait_for(
            "the streamed kline's event row",
            lambda: conn.execute(query, {"id": event_id}).scalar_one_or_none(),
            timeout_s=60,
            every_s=0.5,
        )
    assert stored == "binance"

    sensor = dagster.start_sensor("webhook_events")
    try:
        [run] = wait_for(
            "the stream's run",
            lambda: (
                dagster.runs({"dagster/partition": STREAM_PARTITION})
                or dagster.runs({"dagster/asset_partition_range_start": STREAM_PARTITION})
                or None
            ),
            timeout_s=120,
            every_s=1,
        )
    finally:
        dagster.stop_sensor(sensor)
    dagster.wait_succeeded([run["runId"]])
    assert "docker/container_id" in dagster.run(run["runId"])["tags"]


@pytest.mark.timeout(300)
def test_a_run_completes_while_redis_is_down(
    stack: Stack, dagster: Dagster, binance: GatedBinance, api: httpx.Client
) -> None:
    before = len(binance.klines())
    binance.gate.clear()
    try:
        run_id = dagster.launch_partition(JOB, REDIS_PARTITION)
        wait_for(
            "the run's request",
            lambda: True if len(binance.klines()) > before else None,
            timeout_s=120,
            every_s=0.2,
        )
        stack.stop("redis")
    finally:
        binance.gate.set()
    try:
        dagster.wait_succeeded([run_id])
        messages = [e.message for e in dagster.events(run_id) if e.level == "WARNING"]
        assert any("cache unavailable" in m for m in messages), messages
        health = api.get("/health").json()
        assert health["status"] == "degraded" and "redis" in health["degraded"], health
    finally:
        stack.start("redis")
        stack.wait_healthy(["redis"], timeout_s=60)
    wait_for(
        "fks-api to see Redis again",
        lambda: True if api.get("/health").json()["status"] == "ok" else None,
        timeout_s=60,
    )


@pytest.mark.timeout(300)
def test_down_with_volumes_leaves_nothing(stack: Stack) -> None:
    assert not stack.unhealthy(LONG_RUNNING)
    stack.down()
    assert stack.leftovers() == {
        "containers": [],
        "run_containers": [],
        "volumes": [],
        "networks": [],
    }
    # Nothing of the stack answers any more.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{API_PORT}/health", timeout=5)
