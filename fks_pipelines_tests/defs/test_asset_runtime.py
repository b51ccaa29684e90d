"""What the provider runtime reports to Dagster: work counts on each materialisation, no keys."""

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import dagster as dg
import pytest
import redis
from pydantic import Field

from fks_pipelines.defs.assets import build_ohlcv_asset
from fks_pipelines.defs.resources import BinanceResource, ProviderResource
from fks_pipelines.market.universe import Instrument, ProviderUniverse, Universe, load_universe
from fks_pipelines.providers.clients import provider_runtime
from fks_pipelines_tests.defs.support import warehouse_resources
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import KLINES, PRETEND, PretendKeyedClient

PARTITION = "2024-01-05|BTCUSDT"
SECRET = "sk-live-Dg4sT3r5ecr3t"
SECRET_ENV = "FKS_TEST_PRETEND_API_KEY"


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


def materialize(
    asset: dg.AssetsDefinition,
    provider: str,
    resource: ProviderResource,
    tmp_path: Path,
    instance: dg.DagsterInstance | None = None,
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [asset],
        partition_key=PARTITION,
        resources={
            provider: resource,
            **warehouse_resources(f"sqlite:///{tmp_path / 'warehouse.sqlite'}"),
        },
        instance=instance,
        raise_on_error=False,
    )


def metadata(result: dg.ExecuteInProcessResult, asset: dg.AssetsDefinition) -> dict[str, object]:
    [materialization] = result.asset_materializations_for_node(asset.node_def.name)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_a_rematerialisation_is_served_from_the_shared_cache(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    asset = build_ohlcv_asset("binance", "1h", load_universe())
    resource = BinanceResource(base_url=server.url, redis_url=redis_url)

    first = materialize(asset, "binance", resource, tmp_path)
    second = materialize(asset, "binance", resource, tmp_path)

    assert first.success and second.success
    meta = metadata(first, asset)
    assert (meta["requests"], meta["cache_misses"], meta["cache_hits"]) == (1, 1, 0)
    assert (meta["circuit"], meta["retries"]) == ("closed", 0)
    assert isinstance(meta["limiter_wait_s"], float)
    meta = metadata(second, asset)
    assert (meta["requests"], meta["cache_misses"], meta["cache_hits"]) == (0, 0, 1)
    assert (meta["circuit"], meta["retries"], meta["rows"]) == ("closed", 0, 24)
    assert meta["limiter_wait_s"] == 0.0
    assert len(server.requests_to(KLINES)) == 1


class PretendKeyedResource(ProviderResource):
    """A keyed provider's resource, its key bound from the environment."""

    base_url: str
    api_key: str = Field(description="API key (bind with dg.EnvVar).")

    def get_client(self) -> PretendKeyedClient:
        return PretendKeyedClient(
            self.base_url,
            self.api_key,
            runtime=provider_runtime(
                PretendKeyedClient, self.runtime_config(), self.requests_per_s
            ),
            key_in="query",
        )


def pretend_asset() -> dg.AssetsDefinition:
    universe = Universe(
        instruments={"BTC-USD": Instrument(asset_class="crypto")},
        providers={
            PRETEND: ProviderUniverse(
                start_date=date(2024, 1, 1), intervals=("1h",), symbols={"BTCUSDT": "BTC-USD"}
            )
        },
    )
    return build_ohlcv_asset(PRETEND, "1h", universe)


def all_text(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> str:
    """Everything the run left in the instance: its event log (user and system messages,
    materialisation metadata, errors) and its run config."""
    return repr(instance.all_logs(result.run_id)) + repr(result.dagster_run.run_config)


def test_an_api_key_never_reaches_dagster(
    server: FakeBinance,
    redis_url: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    asset = pretend_asset()
    resource = PretendKeyedResource(
        base_url=server.url, api_key=dg.EnvVar(SECRET_ENV), redis_url=redis_url, max_attempts=1
    )

    instance = dg.DagsterInstance.ephemeral()
    ok = materialize(asset, PRETEND, resource, tmp_path, instance)
    server.scripted.append(Response.json({"message": "Invalid API key."}, status=401))
    redis_client.flushdb()
    failed = materialize(asset, PRETEND, resource, tmp_path, instance)

    assert ok.success
    assert metadata(ok, asset)["rows"] == 24
    assert not failed.success
    assert "API key missing or invalid" in str(failed.failure_data_for_node(asset.node_def.name))
    [first, second] = server.requests_to(KLINES)
    assert first.query["apikey"] == second.query["apikey"] == SECRET
    recorded = all_text(instance, ok), all_text(instance, failed)
    assert "quota_day_calls_used" in recorded[0]  # the metadata is in what is searched
    assert "upstream requests" in recorded[0]  # and the asset's own log lines
    assert "API key missing or invalid" in recorded[1]  # and so is the error
    assert SECRET not in recorded[0]
    assert SECRET not in recorded[1]
