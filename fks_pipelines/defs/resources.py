"""Dagster resources: thin configurable wrappers that hand out the core's clients."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dagster as dg
from pydantic import Field

from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.binance import DEFAULT_BASE_URL, BinanceClient
from fks_pipelines.providers.cache import TtlPolicy
from fks_pipelines.providers.http import Timeouts
from fks_pipelines.providers.ratelimit import Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, get_runtime
from fks_pipelines.warehouse.store import Warehouse


class ProviderResource(dg.ConfigurableResource):
    """A market-data provider with built-in caching, rate limiting, retries and a circuit
    breaker. ``get_client()`` returns a client to use in a ``with`` block; clients of one
    provider in a process share one runtime (and, with Redis, share it across processes)."""

    redis_url: str | None = Field(
        default=None, description="Redis for cache and shared limits; none: embedded mode."
    )
    cache_dir: str | None = Field(
        default=None, description="Embedded disk cache directory (used without Redis)."
    )
    requests_per_s: float | None = Field(
        default=None, gt=0, description="Request rate limit; default: the provider's tier."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect timeout.")
    read_timeout_s: float = Field(default=30.0, gt=0, description="Read timeout per request.")
    max_attempts: int = Field(default=4, ge=1, description="Attempts per request (retries+1).")
    cache_ttl_closed_s: float = Field(default=7 * 86400.0, gt=0)
    cache_ttl_open_s: float = Field(default=60.0, gt=0)
    cache_ttl_price_s: float = Field(default=2.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)

    def runtime_config(self) -> RuntimeConfig:
        return RuntimeConfig(
            redis_url=self.redis_url,
            cache_dir=Path(self.cache_dir) if self.cache_dir else None,
            ttl=TtlPolicy(
                closed_s=self.cache_ttl_closed_s,
                open_s=self.cache_ttl_open_s,
                price_s=self.cache_ttl_price_s,
            ),
            timeouts=Timeouts(connect=self.connect_timeout_s, read=self.read_timeout_s),
            max_attempts=self.max_attempts,
            breaker_failures=self.breaker_failures,
            breaker_reset_s=self.breaker_reset_s,
        )

    def runtime(self, client_class: type[ProviderClient]) -> ProviderRuntime:
        limits = client_class.LIMITS
        if self.requests_per_s is not None:
            limits = replace(limits, requests=(Window.per_second(self.requests_per_s),))
        return get_runtime(client_class.name, limits, self.runtime_config())

    def get_client(self) -> ProviderClient:
        raise NotImplementedError


class BinanceResource(ProviderResource):
    """Binance USD-M futures market data (klines and latest price); no API key needed."""

    base_url: str = Field(default=DEFAULT_BASE_URL, description="REST base URL.")

    def get_client(self) -> BinanceClient:
        return BinanceClient(self.base_url, runtime=self.runtime(BinanceClient))


class WarehouseResource(dg.ConfigurableResource):
    """The OHLCV warehouse (PostgreSQL in production, SQLite embedded) via SQLAlchemy."""

    url: str = Field(description="SQLAlchemy URL of the warehouse database.")

    def get_warehouse(self) -> Warehouse:
        return Warehouse.from_url(self.url)
