"""The deployment's files, read without Docker (part of the normal suite).

What the end-to-end test (test_stack.py, ``-m docker``) cannot see in one run, or cannot run at
all: that every setting of the project reaches the services and the runs that read it, that the
production instance has the embedded one's limits, that the image's entrypoint treats an empty
variable as unset, and that the Helm values use keys Dagster's chart knows.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.config import pg_config
from dagster_docker import DockerRunLauncher

from fks_pipelines.settings import PROJECT_ROOT, Settings

DEPLOY = PROJECT_ROOT / "deploy"
COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
INSTANCE = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
DEV_INSTANCE = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text())
HELM = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"

IMAGE_SERVICES = ("code-server", "dagster-webserver", "dagster-daemon", "fks-api", "fks-stream")
# Settings the stack sets itself rather than .env: the image (FKS_DATA_DIR), the cache under it,
# the listening addresses of fks-api and fks-stream.
SET_BY_THE_STACK = {
    "FKS_DATA_DIR",
    "FKS_CACHE_DIR",
    "FKS_API_HOST",
    "FKS_API_PORT",
    "FKS_STREAM_HOST",
    "FKS_STREAM_PORT",
}
# What only the daemon's sensors, fks-api, fks-stream or the alerts read: never forwarded to a run.
NOT_FOR_RUNS = re.compile(
    r"^FKS_(ALERT|API|WEBHOOK|STREAM|BINANCE_WS|DAGSTER_UI|FRESHNESS|CATCHUP_(INTERVAL|MAX))"
)


def settings_variables() -> set[str]:
    return {str(field.validation_alias) for field in Settings.model_fields.values()}


def env_example() -> dict[str, str]:
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


# --- docker-compose.yml and .env.example -------------------------------------------------------


def test_every_setting_reaches_every_service_built_from_the_image() -> None:
    for name in IMAGE_SERVICES:
        environment = COMPOSE["services"][name]["environment"]
        missing = settings_variables() - SET_BY_THE_STACK - set(environment)
        assert not missing, (name, missing)
    assert COMPOSE["services"]["fks-api"]["environment"]["FKS_API_HOST"] == "0.0.0.0"
    assert COMPOSE["services"]["fks-stream"]["environment"]["FKS_STREAM_HOST"] == "0.0.0.0"


def test_env_example_lists_every_variable_the_compose_file_reads_and_no_key() -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    # ${VAR} is compose's (from .env); $${VAR} a shell variable inside the container.
    read = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))
    example = env_example()
    assert read == set(example)
    keys = {name for name in example if name.endswith(("_API_KEY", "_SECRET", "_PASSWORD"))}
    assert keys and all(example[name] == "" for name in keys)
    # Every setting of the project a deployment may set is there (the addresses inside the
    # stack are set by the compose file).
    internal = SET_BY_THE_STACK | {"FKS_WAREHOUSE_URL", "REDIS_URL"}
    assert settings_variables() - internal <= set(example)


def test_every_service_is_health_checked_restarted_and_started_after_its_dependencies() -> None:
    services = COMPOSE["services"]
    for name, service in services.items():
        if name == "postgres-init":
            assert service["restart"] == "no"
            continue
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
        for dependency, condition in service.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully"
                if dependency == "postgres-init"
                else "service_healthy"
            )
            assert condition == {"condition": expected}, (name, dependency)
    image = {services[name]["image"] for name in IMAGE_SERVICES}
    assert image == {"${FKS_IMAGE:-fks-pipelines:latest}"}
    assert services["code-server"]["environment"]["DAGSTER_CURRENT_IMAGE"] in image
    for name in ("dagster-daemon", "dagster-webserver"):
        assert "/var/run/docker.sock:/var/run/docker.sock" in services[name]["volumes"]


# --- deploy/dagster.yaml -------------------------------------------------------------------


def test_the_production_instance_has_the_embedded_one_s_queue_and_pools() -> None:
    assert INSTANCE["concurrency"] == DEV_INSTANCE["concurrency"]
    assert INSTANCE["run_coordinator"] == DEV_INSTANCE["run_coordinator"]
    assert INSTANCE["telemetry"] == {"enabled": False}
    assert set(INSTANCE["retention"]) == {"schedule", "sensor", "auto_materialize"}


def test_the_production_instance_is_valid_dagster_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dagster.yaml").write_text((DEPLOY / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    for name, value in {
        "DAGSTER_POSTGRES_USER": "fks",
        "DAGSTER_POSTGRES_PASSWORD": "p@ss:word/?",
        "DAGSTER_POSTGRES_HOST": "postgres",
        "DAGSTER_POSTGRES_PORT": "5432",
        "DAGSTER_POSTGRES_DB": "dagster",
        "FKS_RUN_NETWORK": "fks",
    }.items():
        monkeypatch.setenv(name, value)
    storage = process_config(pg_config(), config["storage"]["postgres"])
    assert storage.success, storage.errors
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    checked = process_config(DockerRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors


def test_runs_get_exactly_the_variables_they_read() -> None:
    forwarded = INSTANCE["run_launcher"]["config"]["env_vars"]
    assert len(forwarded) == len(set(forwarded))
    storage = {f"DAGSTER_POSTGRES_{part}" for part in ("USER", "PASSWORD", "HOST", "PORT", "DB")}
    for_runs = {
        name for name in settings_variables() - SET_BY_THE_STACK if not NOT_FOR_RUNS.match(name)
    }
    assert set(forwarded) == storage | for_runs
    # The daemon has every one of them, or it refuses to launch the run.
    assert set(forwarded) <= set(COMPOSE["services"]["dagster-daemon"]["environment"])


def test_the_workspace_loads_the_code_server_over_grpc() -> None:
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    [location] = workspace["load_from"]
    assert location["grpc_server"]["location_name"] == "fks_pipelines"
    assert location["grpc_server"]["host"] == {"env": "FKS_CODE_SERVER_HOST"}
    assert location["grpc_server"]["port"] == {"env": "FKS_CODE_SERVER_PORT"}


# --- the image's entrypoint ----------------------------------------------------------------


def run_entrypoint(tmp_path: Path, command: str, env: dict[str, str]) -> dict[str, str]:
    """The environment ``command`` sees when started through the entrypoint."""
    (tmp_path / command).write_text("#!/bin/sh\nenv\n")
    (tmp_path / command).chmod(0o755)
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), command],
        env={"PATH": f"{tmp_path}:{os.environ['PATH']}", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_the_entrypoint_unsets_empty_project_variables(tmp_path: Path) -> None:
    env = {"FKS_BINANCE_RPS": "", "POLYGON_API_KEY": "", "FKS_API_PORT": "8003", "OTHER": ""}
    seen = run_entrypoint(tmp_path, "fks-api", env)
    assert "FKS_BINANCE_RPS" not in seen and "POLYGON_API_KEY" not in seen
    assert seen["FKS_API_PORT"] == "8003" and seen["OTHER"] == ""
    # The daemon forwards them to runs, and must have every one.
    assert run_entrypoint(tmp_path, "dagster-daemon", env)["FKS_BINANCE_RPS"] == ""


# --- deploy/helm/values.yaml -----------------------------------------------------------------

# Keys of Dagster's chart where these values set them, from the chart's values schema
# (helm/dagster/values.schema.json and charts/dagster-user-deployments/values.yaml, Dagster
# 1.13). Free-form parts (env lists, resources, security contexts, labels, runMonitoring,
# additionalInstanceConfig, postgresqlParams) are not descended into.
IMAGE_KEYS = {"repository", "tag", "pullPolicy"}
TICK_RETENTION = {"purgeAfterDays"}
CHART_KEYS: dict[str, set[str]] = {
    "": {
        "dagsterWebserver", "dagster-user-deployments", "postgresql",
        "generatePostgresqlPasswordSecret", "generateCeleryConfigSecret", "rabbitmq", "redis",
        "flower", "ingress", "imagePullSecrets", "computeLogManager", "scheduler", "runLauncher",
        "pythonLogs", "dagsterDaemon", "busybox", "migrate", "telemetry", "serviceAccount",
        "global", "retention", "additionalInstanceConfig",
    },
    "global": {"postgresqlSecretName", "dagsterHome", "serviceAccountName",
               "celeryConfigSecretName"},
    "postgresql": {"image", "enabled", "postgresqlHost", "postgresqlUsername",
                   "postgresqlPassword", "postgresqlDatabase", "postgresqlParams",
                   "postgresqlScheme", "service"},
    "postgresql.service": {"port"},
    "dagster-user-deployments": {"enabled", "enableSubchart", "imagePullSecrets", "deployments"},
    "dagster-user-deployments.deployments[]": {
        "name", "image", "dagsterApiGrpcArgs", "codeServerArgs", "includeConfigInLaunchedRuns",
        "deploymentNamespace", "port", "env", "envConfigMaps", "envSecrets", "annotations",
        "nodeSelector", "affinity", "tolerations", "podSecurityContext", "securityContext",
        "resources", "livenessProbe", "readinessProbe", "startupProbe", "labels", "volumeMounts",
        "volumes", "schedulerName", "initContainers", "sidecarContainers",
    },
    "dagster-user-deployments.deployments[].image": IMAGE_KEYS,
    "dagster-user-deployments.deployments[].includeConfigInLaunchedRuns": {"enabled"},
    "dagsterWebserver": {
        "replicaCount", "image", "nameOverride", "pathPrefix", "service", "workspace", "env",
        "envConfigMaps", "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity",
        "tolerations", "podSecurityContext", "securityContext", "resources", "readinessProbe",
        "livenessProbe", "startupProbe", "annotations", "enableReadOnly", "dbStatementTimeout",
        "dbPoolRecycle", "logLevel", "schedulerName", "volumeMounts", "volumes",
        "initContainerResources",
    },
    "dagsterWebserver.service": {"type", "port", "annotations"},
    "dagsterDaemon": {
        "enabled", "image", "runCoordinator", "heartbeatTolerance", "env", "envConfigMaps",
        "envSecrets", "deploymentLabels", "labels", "nodeSelector", "affinity", "tolerations",
        "podSecurityContext", "securityContext", "resources", "livenessProbe", "readinessProbe",
        "startupProbe", "annotations", "runMonitoring", "runRetries", "sensors", "schedules",
        "schedulerName", "volumeMounts", "volumes", "initContainerResources",
    },
    "dagsterDaemon.runCoordinator": {"enabled", "type", "config"},
    "dagsterDaemon.runCoordinator.config": {"queuedRunCoordinator", "customRunCoordinator"},
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator": {
        "maxConcurrentRuns", "tagConcurrencyLimits", "dequeueIntervalSeconds",
        "dequeueNumWorkers", "dequeueUseThreads", "blockOpConcurrencyLimitedRuns",
    },
    "runLauncher": {"type", "config"},
    "runLauncher.config": {"celeryK8sRunLauncher", "k8sRunLauncher", "customRunLauncher"},
    "runLauncher.config.k8sRunLauncher": {
        "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
        "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
        "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
    },
    "redis": {"enabled", "internal", "usePassword", "password", "host", "port",
              "brokerDbNumber", "backendDbNumber", "brokerUrl", "backendUrl"},
    "rabbitmq": {"enabled", "image", "rabbitmq", "service", "volumePermissions"},
    "pythonLogs": {"pythonLogLevel", "managedPythonLoggers", "dagsterHandlerConfig"},
    "computeLogManager": {"type", "config"},
    "telemetry": {"enabled"},
    "retention": {"enabled", "sensor", "schedule", "autoMaterialize"},
    "retention.sensor": TICK_RETENTION,
    "retention.schedule": TICK_RETENTION,
    "retention.autoMaterialize": TICK_RETENTION,
}  # fmt: skip
# Enumerations and keys the chart requires where a value replaces its default wholesale.
CHART_ENUMS = {
    "runLauncher.type": {"CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"},
    "dagsterDaemon.runCoordinator.type": {"QueuedRunCoordinator", "CustomRunCoordinator"},
    "computeLogManager.type": {
        "NoOpComputeLogManager", "AzureBlobComputeLogManager", "GCSComputeLogManager",
        "S3ComputeLogManager", "CustomComputeLogManager",
    },
    "pythonLogs.pythonLogLevel": {"CRITICAL", "FATAL", "ERROR", "WARN", "WARNING", "INFO",
                                  "DEBUG", "NOTSET"},
    "dagster-user-deployments.deployments[].image.pullPolicy": {"Always", "IfNotPresent", "Never"},
    "runLauncher.config.k8sRunLauncher.imagePullPolicy": {"Always", "IfNotPresent", "Never"},
}  # fmt: skip
CHART_REQUIRED = {
    "dagster-user-deployments.deployments[]": {"name", "image", "port"},
    "dagster-user-deployments.deployments[].image": {"repository", "pullPolicy"},
    "runLauncher.config.k8sRunLauncher": {
        "imagePullPolicy", "loadInclusterConfig", "envConfigMaps", "envSecrets", "envVars",
        "volumeMounts", "volumes",
    },
    "retention": {"enabled", "sensor", "schedule"},
}  # fmt: skip
TICK_STATUSES = {"skipped", "success", "failure", "started"}


def unknown_keys(value: Any, path: str = "") -> list[str]:
    """Key paths of ``value`` the chart does not have, descending where CHART_KEYS knows."""
    found: list[str] = []
    if isinstance(value, list):
        for item in value:
            found += unknown_keys(item, f"{path}[]")
        return found
    if not isinstance(value, dict) or path not in CHART_KEYS:
        return found
    for key, item in value.items():
        child = f"{path}.{key}" if path else key
        if key not in CHART_KEYS[path]:
            found.append(child)
        else:
            found += unknown_keys(item, child)
    return found


def values_at(value: Any, path: str) -> list[Any]:
    """Every value at ``path`` (``a.b[].c``: ``[]`` for each item of a list) in ``value``."""
    values = [value]
    for part in path.split("."):
        key = part.removesuffix("[]")
        values = [v[key] for v in values if isinstance(v, dict) and key in v]
        if part.endswith("[]"):
            values = [item for v in values for item in v]
    return values


def test_the_helm_values_use_only_keys_the_chart_knows() -> None:
    assert unknown_keys(HELM) == []
    for path, allowed in CHART_ENUMS.items():
        for value in values_at(HELM, path):
            assert value in allowed, (path, value)
    for path, required in CHART_REQUIRED.items():
        for value in values_at(HELM, path):
            assert required <= set(value), (path, required - set(value))
    for kind in ("sensor", "autoMaterialize"):
        assert set(HELM["retention"][kind]["purgeAfterDays"]) == TICK_STATUSES


def test_the_helm_values_deploy_what_the_compose_stack_does() -> None:
    [deployment] = HELM["dagster-user-deployments"]["deployments"]
    assert deployment["codeServerArgs"][:2] == ["-m", "fks_pipelines.definitions"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert deployment["podSecurityContext"]["runAsUser"] == 10001  # the image's user
    assert HELM["runLauncher"]["type"] == "K8sRunLauncher"
    assert HELM["postgresql"]["enabled"] is False
    assert (
        HELM["postgresql"]["postgresqlScheme"]
        == INSTANCE["storage"]["postgres"]["postgres_db"]["scheme"]
    )
    queue = HELM["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queue["maxConcurrentRuns"] == DEV_INSTANCE["concurrency"]["runs"]["max_concurrent_runs"]
    assert (
        queue["dequeueIntervalSeconds"]
        == DEV_INSTANCE["run_coordinator"]["config"]["dequeue_interval_seconds"]
    )
    assert (
        HELM["additionalInstanceConfig"]["concurrency"]["pools"]
        == DEV_INSTANCE["concurrency"]["pools"]
    )
    assert HELM["pythonLogs"] == {
        "managedPythonLoggers": INSTANCE["python_logs"]["managed_python_loggers"],
        "pythonLogLevel": INSTANCE["python_logs"]["python_log_level"],
    }
    assert HELM["telemetry"] == {"enabled": False}
