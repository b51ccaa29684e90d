"""The code location: assembles the assets and binds resources for this environment."""

from __future__ import annotations

import dagster as dg

from fks_pipelines.defs.assets import build_ohlcv_assets
from fks_pipelines.defs.resources import BinanceResource, WarehouseResource
from fks_pipelines.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """Definitions for ``settings``; tests call this with their own settings."""
    # A warehouse URL may carry a password: bind it through EnvVar so that Dagster resolves it at
    # run time and never shows it in the UI or run config. The default SQLite path holds none.
    warehouse_url: str | dg.EnvVar = settings.resolved_warehouse_url
    if settings.warehouse_url:
        warehouse_url = dg.EnvVar("FKS_WAREHOUSE_URL")
    runtime = {
        # A Redis URL may carry a password too: EnvVar, as above.
        "redis_url": dg.EnvVar("REDIS_URL") if settings.redis_url else None,
        "cache_dir": str(settings.resolved_cache_dir),
        "connect_timeout_s": settings.http_connect_timeout_s,
        "read_timeout_s": settings.http_read_timeout_s,
        "max_attempts": settings.http_max_attempts,
        "cache_ttl_closed_s": settings.cache_ttl_closed_s,
        "cache_ttl_open_s": settings.cache_ttl_open_s,
        "cache_ttl_price_s": settings.cache_ttl_price_s,
        "breaker_failures": settings.breaker_failures,
        "breaker_reset_s": settings.breaker_reset_s,
    }
    return dg.Definitions(
        assets=build_ohlcv_assets(settings.universe),
        resources={
            "binance": BinanceResource(
                base_url=settings.binance_base_url,
                requests_per_s=settings.binance_rps,
                **runtime,
            ),
            "warehouse": WarehouseResource(url=warehouse_url),
        },
    )


defs = build_definitions(Settings())
