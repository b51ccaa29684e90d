"""The sensors under the real ``dagster-daemon``, on a default install: keyless providers only.

What ``dagster sensor preview`` cannot show: a run request the daemon fails to create (a job
whose resource lacks its key) fails the whole tick and holds the cursor. This test starts the
real daemon on a temporary instance, with Binance and CoinGecko served by local fakes and no key
for the four other providers, turns on the catch-up, freshness and alert sensors (or the
exports sensor), lets them tick and their runs finish, and reads the outcome from the instance.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.scheduler.instigation import InstigatorState, TickStatus

from fks_pipelines.warehouse.export import month_path
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.binance_stream import FakeBinanceStream, kline
from fks_pipelines_tests.fakes.coingecko import FakeCoinGecko
from fks_pipelines_tests.fakes.receiver import WebhookReceiver
from fks_pipelines_tests.realtime.support import fks_stream

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SENSORS = ("ohlcv_catchup", "ohlcv_freshness", "check_alerts")
KEYLESS_JOBS = {"ohlcv_binance_1h_job", "ohlcv_binance_1d_job", "ohlcv_coingecko_1d_job"}
CATCHUP_INTERVAL_S = 30
RETRY_GRACE_S = 2 * CATCHUP_INTERVAL_S
"""How long freshness leaves a partition whose run failed to the catch-up (definitions.py)."""
DEADLINE_S = 360
# Past the deadline the test fails with the daemon's log; pytest-timeout (300 s per test in
# pyproject.toml) would end it first, with only the test's own stack.
pytestmark = pytest.mark.timeout(DEADLINE_S + 120)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    return home


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def binance() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


@pytest.fixture
def env(
    home: Path, tmp_path: Path, receiver: WebhookReceiver, binance: FakeBinance
) -> Iterator[dict[str, str]]:
    """The daemon's environment: no provider key, local Binance and CoinGecko, short ticks."""
    with FakeCoinGecko() as coingecko:
        yield {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "DAGSTER_HOME": str(home),
            "FKS_DATA_DIR": str(tmp_path / "data"),
            "FKS_BINANCE_BASE_URL": binance.url,
            "FKS_COINGECKO_BASE_URL": f"{coingecko.url}/api/v3",
            "FKS_COINGECKO_RPS": "20",
            "FKS_CATCHUP_LOOKBACK_DAYS": "2",
            "FKS_CATCHUP_INTERVAL_S": str(CATCHUP_INTERVAL_S),
            "FKS_FRESHNESS_INTERVAL_S": "30",
            "FKS_ALERT_INTERVAL_S": "10",
            "FKS_ALERT_WEBHOOK_URL": receiver.hook,
        }


def dagster(args: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(BIN / "dagster"), *args, "-m", "fks_pipelines.definitions"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def states(instance: dg.DagsterInstance) -> dict[str, InstigatorState]:
    return {s.instigator_name: s for s in instance.all_instigator_state()}


def ticks(instance: dg.DagsterInstance, state: InstigatorState) -> list:
    return list(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=100))


def settled(instance: dg.DagsterInstance) -> bool:
    """Two catch-up ticks, a freshness tick, two alert ticks after the runs, no run going."""
    by_name = states(instance)
    if any(name not in by_name for name in SENSORS):
        return False
    counts = {name: len(ticks(instance, by_name[name])) for name in SENSORS}
    runs = instance.get_runs()
    if not runs or any(not run.is_finished for run in runs):
        return False
    last_run_end = max(instance.get_run_record_by_id(run.run_id).end_time or 0.0 for run in runs)
    alert_ticks = ticks(instance, by_name["check_alerts"])
    after_runs = [t for t in alert_ticks if t.timestamp > last_run_end]
    return counts["ohlcv_catchup"] >= 2 and counts["ohlcv_freshness"] >= 1 and len(after_runs) >= 1


def run_daemon(
    home: Path,
    env: dict[str, str],
    instance: dg.DagsterInstance,
    done: Callable[[dg.DagsterInstance], bool],
    sensors: Sequence[str] = SENSORS,
) -> None:
    """Turn on ``sensors``, run the real daemon until ``done``, stop it (bounded)."""
    for name in sensors:
        dagster(["sensor", "start", name], env)
    log = (home / "daemon.log").open("w")
    daemon = subprocess.Popen(
        [str(BIN / "dagster-daemon"), "run", "-m", "fks_pipelines.definitions"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not done(instance):
            assert daemon.poll() is None, (home / "daemon.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (home / "daemon.log").read_text()[-3000:]
            time.sleep(2)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(timeout=10)
        log.close()


def failed_ticks(all_ticks: dict[str, list]) -> dict[str, list]:
    return {
        n: [t.error for t in ts if t.status == TickStatus.FAILURE] for n, ts in all_ticks.items()
    }


def test_keyless_providers_run_and_the_others_are_skipped_by_name(
    home: Path, env: dict[str, str], receiver: WebhookReceiver
) -> None:
    instance = dg.DagsterInstance.from_config(str(home))
    # An old failure of an asset whose provider has no key now: it must not alert.
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(["ohlcv", "polygon", "1d"]),
            check_name="outliers",
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description="high-severity outliers",
            partition="2024-01-05|AAPL",
        )
    )
    run_daemon(home, env, instance, settled)

    by_name = states(instance)
    all_ticks = {name: ticks(instance, by_name[name]) for name in SENSORS}
    assert failed_ticks(all_ticks) == {name: [] for name in SENSORS}
    # Runs for the keyless providers only, and they all went through.
    runs = instance.get_runs()
    assert {run.job_name for run in runs} <= KEYLESS_JOBS
    assert {run.job_name for run in runs} >= {"ohlcv_binance_1h_job", "ohlcv_coingecko_1d_job"}
    failures = {
        run.job_name: [
            str(e.dagster_event.event_specific_data.error)
            for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        ]
        for run in runs
        if run.status != dg.DagsterRunStatus.SUCCESS
    }
    assert failures == {}
    # The catch-up's cursor moved on, and once its runs were in, it skipped naming the keys.
    catchup = sorted(all_ticks["ohlcv_catchup"], key=lambda t: t.timestamp)
    assert catchup[0].status == TickStatus.SUCCESS and catchup[0].run_ids
    assert catchup[0].cursor and catchup[-1].cursor
    skipped = [t for t in catchup if t.status == TickStatus.SKIPPED]
    assert skipped, [t.status for t in catchup]
    reason = skipped[-1].skip_reason or ""
    for variable in (
        "POLYGON_API_KEY",
        "COINMARKETCAP_API_KEY",
        "ALPHA_VANTAGE_API_KEY",
        "EODHD_API_KEY",
    ):
        assert variable in reason, reason
    assert "binance" not in reason and "coingecko" not in reason
    alerts_state = by_name["check_alerts"].instigator_data
    assert alerts_state is not None and json.loads(alerts_state.cursor)["seen"]
    # No alert names an asset of a provider without its key.
    assert not [a for a in receiver.messages() if "polygon" in a["asset"]]


def behind_and_alerted(instance: dg.DagsterInstance) -> bool:
    """Catch-up has given up on the failing symbol, every run is over, freshness has ticked
    twice since its retry grace (two catch-up intervals) ran out, and check_alerts once after."""
    by_name = states(instance)
    if any(name not in by_name for name in SENSORS):
        return False
    runs = instance.get_runs()
    if not runs or any(not run.is_finished for run in runs):
        return False
    if len(ticks(instance, by_name["ohlcv_catchup"])) < 3:
        return False
    last_run_end = max(instance.get_run_record_by_id(run.run_id).end_time or 0.0 for run in runs)
    fresh = sorted(
        t.timestamp
        for t in ticks(instance, by_name["ohlcv_freshness"])
        if t.timestamp > last_run_end + RETRY_GRACE_S
    )
    if len(fresh) < 2:
        return False
    return any(t.timestamp > fresh[-1] for t in ticks(instance, by_name["check_alerts"]))


def test_a_symbol_that_keeps_failing_is_behind_and_alerts_once_while_the_others_get_in(
    home: Path, env: dict[str, str], receiver: WebhookReceiver, binance: FakeBinance
) -> None:
    """Binance stops knowing SOLUSDT: the catch-up's first runs (one per day, all symbols) fail,
    its next runs hold one symbol each, so BTCUSDT and ETHUSDT get in; after its last attempt
    the freshness sensor records SOLUSDT's missing days (ERROR: the day before is missing too),
    once, and check_alerts sends one freshness alert per asset, naming only SOLUSDT."""
    binance.symbols.discard("SOLUSDT")
    env = {**env, "FKS_CATCHUP_MAX_ATTEMPTS": "2", "FKS_CATCHUP_LOOKBACK_DAYS": "3"}
    instance = dg.DagsterInstance.from_config(str(home))

    run_daemon(home, env, instance, behind_and_alerted)

    by_name = states(instance)
    all_ticks = {name: ticks(instance, by_name[name]) for name in SENSORS}
    assert failed_ticks(all_ticks) == {name: [] for name in SENSORS}
    # Only runs that held SOLUSDT failed, each naming the unknown symbol.
    for run in instance.get_runs():
        if run.status == dg.DagsterRunStatus.SUCCESS:
            continue
        held = run.tags.get("dagster/partition", "") + run.tags.get(
            "dagster/asset_partition_range_end", ""
        )
        assert "SOLUSDT" in held or run.tags.get("fks/date"), run.tags
        [failure] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        assert "unknown symbol" in str(failure.dagster_event.event_specific_data.error)
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    for interval in ("1h", "1d"):
        key = dg.AssetKey(["ohlcv", "binance", interval])
        for symbol in ("BTCUSDT", "ETHUSDT"):
            stored = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[f"{yesterday}|{symbol}"]),
                limit=1,
            ).records
            assert stored, f"{interval} {yesterday}|{symbol} was held back by SOLUSDT"
    freshness = [m for m in receiver.messages() if m["check"] == "freshness"]
    assert sorted(m["asset"] for m in freshness) == ["ohlcv/binance/1d", "ohlcv/binance/1h"]
    for message in freshness:
        assert message["severity"] == "ERROR"
        assert message["partitions"] and all(p.endswith("|SOLUSDT") for p in message["partitions"])
        assert "more than a day behind" in message["reason"]


def test_the_exports_sensor_rewrites_a_month_once_a_day_of_it_is_consolidated(
    home: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """``ohlcv_exports`` turned on, then a day stored and consolidated with the README's
    ``dagster asset materialize``: the daemon launches that month's export, which writes its file.
    """
    instance = dg.DagsterInstance.from_config(str(home))
    exports = "ohlcv_exports"
    materialized = False

    def exported(instance: dg.DagsterInstance) -> bool:
        nonlocal materialized
        state = states(instance).get(exports)
        if state is None or not ticks(instance, state):
            return False  # a first tick before the day is stored: nothing to export yet
        if not materialized:
            for asset, partition in (
                ("ohlcv/binance/1h", "2024-01-05|BTCUSDT"),
                ("ohlcv/consolidated/1h", "2024-01-05|BTC-USD"),
            ):
                dagster(["asset", "materialize", "--select", asset, "--partition", partition], env)
            materialized = True
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "2024-01|BTC-USD"}))
        return bool(runs) and all(run.is_finished for run in runs)

    run_daemon(home, env, instance, exported, sensors=(exports,))

    [run] = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": "2024-01|BTC-USD"}))
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags.get("dagster/from_automation_condition") == "true"
    state = states(instance)[exports]
    assert failed_ticks({exports: ticks(instance, state)}) == {exports: []}
    path = month_path(tmp_path / "data" / "exports", "1h", "BTC-USD", "2024-01")
    assert path.exists()
    # The daemon launched that export and nothing else.
    assert sorted(r.tags["dagster/partition"] for r in instance.get_runs()) == [
        "2024-01-05|BTC-USD",
        "2024-01-05|BTCUSDT",
        "2024-01|BTC-USD",
    ]


def test_a_kline_closing_on_the_stream_runs_its_partition_through_fks_stream_and_the_sensor(
    home: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """The real-time path end to end: a local Binance stream, ``fks-stream`` as compose runs
    it, the intake's row, the ``webhook_events`` sensor under the daemon, the run."""
    instance = dg.DagsterInstance.from_config(str(home))
    partition = "2024-01-05|BTCUSDT"
    opened = int(datetime(2024, 1, 5, 10, tzinfo=UTC).timestamp() * 1000)
    with FakeBinanceStream() as stream:
        stream_env = {
            **env,
            "FKS_BINANCE_WS_URL": stream.url,
            "FKS_WEBHOOK_SENSOR_INTERVAL_S": "5",
        }
        with fks_stream(stream_env, tmp_path / "stream.log") as service:
            stream.send(
                [
                    kline("BTCUSDT", "1h", opened, closed=False),
                    kline("BTCUSDT", "1h", opened, closed=True),
                ]
            )

            def ran(instance: dg.DagsterInstance) -> bool:
                runs = instance.get_runs(dg.RunsFilter(tags={"dagster/partition": partition}))
                return bool(runs) and all(run.is_finished for run in runs)

            run_daemon(home, stream_env, instance, ran, sensors=("webhook_events",))
            assert service.stop() == 0

    # One run, of exactly that partition, launched by the sensor; no failed tick.
    [run] = instance.get_runs()
    assert run.status == dg.DagsterRunStatus.SUCCESS
    assert run.tags["dagster/partition"] == partition
    assert run.tags["dagster/sensor_name"] == "webhook_events"
    state = states(instance)["webhook_events"]
    assert failed_ticks({"webhook_events": ticks(instance, state)}) == {"webhook_events": []}
