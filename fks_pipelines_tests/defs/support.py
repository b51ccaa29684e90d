"""Helpers shared by the schedule and sensor tests."""

from functools import cache

import dagster as dg

from fks_pipelines.definitions import build_definitions
from fks_pipelines.defs.assets import AssetPolicy, build_ohlcv_asset
from fks_pipelines.defs.io_manager import IO_MANAGER_KEY, WarehouseIOManager
from fks_pipelines.defs.resources import WarehouseResource
from fks_pipelines.defs.schedules import DailyTarget, provider_targets
from fks_pipelines.market.universe import Universe, load_universe
from fks_pipelines.settings import Settings


@cache
def repository() -> dg.RepositoryDefinition:
    """The project's jobs, which run requests name."""
    return build_definitions(Settings()).get_repository_def()


def warehouse_resources(url: str) -> dict[str, dg.ConfigurableResource]:
    """The warehouse and the OHLCV assets' I/O manager over it, as the definitions bind them."""
    warehouse = WarehouseResource(url=url)
    return {"warehouse": warehouse, IO_MANAGER_KEY: WarehouseIOManager(warehouse=warehouse)}


def target(
    provider: str, interval: str, per_run: int = 100, universe: Universe | None = None
) -> DailyTarget:
    """The schedule target of one provider asset (no retry policy)."""
    universe = universe or load_universe()
    asset = build_ohlcv_asset(provider, interval, universe, AssetPolicy(retry=None))
    [made] = provider_targets(universe, [asset], per_run)
    return made


def wide_universe(symbols: int, start: str = "2024-01-01") -> Universe:
    """Binance alone with ``symbols`` crypto symbols (``S000USDT``, ...) at 1h and 1d."""
    tickers = {f"S{i:03}USDT": f"S{i:03}-USD" for i in range(symbols)}
    return Universe.model_validate(
        {
            "instruments": {i: {"asset_class": "crypto"} for i in tickers.values()},
            "priority": ["binance"],
            "providers": {
                "binance": {"start_date": start, "intervals": ["1h", "1d"], "symbols": tickers}
            },
        }
    )
