"""Helpers shared by the schedule and sensor tests."""

from functools import cache

import dagster as dg

from fks_pipelines.definitions import build_definitions
from fks_pipelines.defs.assets import AssetPolicy, build_ohlcv_asset
from fks_pipelines.defs.schedules import DailyTarget, provider_targets
from fks_pipelines.market.universe import load_universe
from fks_pipelines.settings import Settings


@cache
def repository() -> dg.RepositoryDefinition:
    """The project's jobs, which run requests name."""
    return build_definitions(Settings()).get_repository_def()


def target(provider: str, interval: str, per_run: int = 100) -> DailyTarget:
    """The schedule target of one provider asset (no retry policy)."""
    universe = load_universe()
    asset = build_ohlcv_asset(provider, interval, universe, AssetPolicy(retry=None))
    [made] = provider_targets(universe, [asset], per_run)
    return made
