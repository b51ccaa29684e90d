"""Every provider's OHLCV asset materialised in process against its local wire-format server."""

from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandas as pd
import pytest

from fks_pipelines.defs.assets import build_ohlcv_asset
from fks_pipelines.defs.resources import (
    AlphaVantageResource,
    CoinGeckoResource,
    CoinMarketCapResource,
    EodhdResource,
    PolygonResource,
    ProviderResource,
)
from fks_pipelines.market.universe import load_universe
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines_tests.defs.support import warehouse_resources
from fks_pipelines_tests.fakes.alpha_vantage import FakeAlphaVantage
from fks_pipelines_tests.fakes.coingecko import FakeCoinGecko
from fks_pipelines_tests.fakes.coinmarketcap import FakeCoinMarketCap
from fks_pipelines_tests.fakes.eodhd import FakeEodhd
from fks_pipelines_tests.fakes.polygon import FakePolygon
from fks_pipelines_tests.fakes.server import LocalHttpServer

DAY = pd.Timestamp("2024-01-05", tz="UTC")  # a Friday: an equity session and a crypto day


@dataclass(frozen=True)
class Case:
    provider: str
    symbol: str
    fake: Callable[[], LocalHttpServer]
    resource: Callable[[LocalHttpServer], ProviderResource]


CASES = [
    Case(
        "polygon",
        "AAPL",
        FakePolygon,
        lambda s: PolygonResource(api_key=s.api_key, base_url=s.url),
    ),
    Case(
        "coingecko",
        "bitcoin",
        FakeCoinGecko,
        lambda s: CoinGeckoResource(base_url=f"{s.url}/api/v3"),
    ),
    Case(
        "coinmarketcap",
        "1",
        FakeCoinMarketCap,
        lambda s: CoinMarketCapResource(api_key=s.api_key, base_url=s.url),
    ),
    Case(
        "alpha_vantage",
        "AAPL",
        FakeAlphaVantage,
        lambda s: AlphaVantageResource(api_key="test-av-key", base_url=s.url),
    ),
    Case(
        "eodhd",
        "AAPL.US",
        FakeEodhd,
        lambda s: EodhdResource(api_key=s.api_key, base_url=s.base_url),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.provider for c in CASES])
def test_a_daily_partition_is_fetched_and_stored(case: Case, warehouse_url: str) -> None:
    asset = build_ohlcv_asset(case.provider, "1d", load_universe())
    with case.fake() as server:
        result = dg.materialize(
            [asset],
            partition_key=f"{DAY.date()}|{case.symbol}",
            resources={
                case.provider: case.resource(server),
                **warehouse_resources(warehouse_url),
            },
            raise_on_error=False,
        )
        requests = len(server.requests)

    assert result.success, result.get_step_failure_events()
    stored = Warehouse.from_url(warehouse_url).read_ohlcv(
        case.provider, "1d", [case.symbol], DAY, DAY + pd.Timedelta(days=1)
    )
    assert stored["ts"].tolist() == [DAY]
    [materialization] = result.asset_materializations_for_node(asset.node_def.name)
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["rows"] == 1
    assert meta["requests"] == requests == 1
    assert meta["circuit"] == "closed"
    # The asset wrote its rows itself: its I/O manager was not asked to store anything.
    assert not [e for e in result.all_events if e.event_type_value == "HANDLED_OUTPUT"]


def test_a_keyed_provider_without_its_key_fails_naming_the_variable(warehouse_url: str) -> None:
    asset = build_ohlcv_asset("polygon", "1d", load_universe())
    with FakePolygon() as server:
        result = dg.materialize(
            [asset],
            partition_key=f"{DAY.date()}|AAPL",
            resources={
                "polygon": PolygonResource(api_key="", base_url=server.url),
                **warehouse_resources(warehouse_url),
            },
            raise_on_error=False,
        )
        assert server.requests == []
    assert not result.success
    assert "POLYGON_API_KEY" in str(result.failure_data_for_node(asset.node_def.name).error)
