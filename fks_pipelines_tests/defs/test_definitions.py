"""The whole code location: a snapshot of what it defines, and the dagster CLI on it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from fks_pipelines.definitions import build_definitions
from fks_pipelines.settings import Settings
from fks_pipelines_tests.fakes.binance import FakeBinance, expected_frame

SNAPSHOT = Path(__file__).parent.parent / "snapshots" / "definitions.json"
ROOT = Path(__file__).resolve().parents[2]
DAGSTER = str(Path(sys.executable).parent / "dagster")


def describe(defs: dg.Definitions) -> dict[str, object]:
    """Everything a refactor must not silently drop, in a stable JSON-able form."""
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assets = {}
    for spec in defs.resolve_all_asset_specs():
        assets[spec.key.to_user_string()] = {
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "tags": {k: v for k, v in sorted(spec.tags.items()) if not k.startswith("dagster/")},
            "partitions": str(spec.partitions_def),
            "pool": repo.assets_defs_by_key[spec.key].op.pool,
            "retry": repr(repo.assets_defs_by_key[spec.key].op.retry_policy),
            "backfill": repr(repo.assets_defs_by_key[spec.key].backfill_policy),
            "deps": sorted(dep.asset_key.to_user_string() for dep in spec.deps),
            "automation": spec.automation_condition.get_label()
            if spec.automation_condition
            else None,
            "owners": list(spec.owners),
            "has_description": bool(spec.description),
        }
    return {
        "assets": dict(sorted(assets.items())),
        "asset_checks": sorted(key.to_user_string() for key in graph.asset_check_keys),
        "schedules": {
            s.name: {"cron": s.cron_schedule, "job": s.job_name}
            for s in sorted(repo.schedule_defs, key=lambda s: s.name)
        },
        "sensors": sorted(s.name for s in repo.sensor_defs),
        "jobs": sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__")),
        "resources": sorted(repo.get_top_level_resources()),
    }


def test_definitions_match_the_snapshot() -> None:
    """Regenerate with FKS_UPDATE_SNAPSHOTS=1 after a deliberate change, and review the diff."""
    current = describe(build_definitions(Settings()))
    if os.environ.get("FKS_UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert current == json.loads(SNAPSHOT.read_text())


def test_the_module_loads_without_any_environment(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    result = subprocess.run(
        [DAGSTER, "definitions", "validate", "-m", "fks_pipelines.definitions"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_cli_materialises_one_partition_into_the_warehouse(tmp_path: Path) -> None:
    """The README's `dagster asset materialize ... --partition` command, end to end."""
    warehouse = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    home = tmp_path / "dagster_home"
    home.mkdir()
    with FakeBinance() as server:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "DAGSTER_HOME": str(home),
            "FKS_DATA_DIR": str(tmp_path / "data"),
            "FKS_WAREHOUSE_URL": warehouse,
            "FKS_BINANCE_BASE_URL": server.url,
        }
        result = subprocess.run(
            [
                DAGSTER,
                "asset",
                "materialize",
                "-m",
                "fks_pipelines.definitions",
                "--select",
                "ohlcv/binance/1h",
                "--partition",
                "2024-01-05|BTCUSDT",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    engine = sa.create_engine(warehouse)
    with engine.connect() as conn:
        closes = (
            conn.execute(sa.text("SELECT close FROM ohlcv WHERE symbol = 'BTCUSDT' ORDER BY ts"))
            .scalars()
            .all()
        )
    engine.dispose()
    expected = expected_frame("BTCUSDT", "1h", "2024-01-05", "2024-01-06")["close"]
    assert closes == pytest.approx(expected.round(2).tolist())
    assert len(server.requests_to("/fapi/v1/klines")) == 1


def test_the_instance_config_limits_runs_and_provider_pools(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config.max_concurrent_runs == 4
        assert concurrency.pool_config.default_pool_limit == 4
        assert instance.run_coordinator.dequeue_interval_seconds == 1
    finally:
        instance.dispose()


def test_every_ohlcv_asset_declares_its_retry_and_backfill_policies() -> None:
    repo = build_definitions(Settings()).get_repository_def()
    for key, asset in repo.assets_defs_by_key.items():
        if key.path[0] != "ohlcv":
            continue
        provider = key.path[1]
        # The consolidated series reads the warehouse only: no provider pool to queue for.
        assert asset.op.pool == (None if provider == "consolidated" else provider)
        assert asset.op.retry_policy is not None and asset.op.retry_policy.max_retries == 3
        assert asset.backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=100)
