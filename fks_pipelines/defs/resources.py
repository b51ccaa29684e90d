"""Dagster resources: thin configurable wrappers that hand out the core's clients."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import ClassVar, Literal

import dagster as dg
from pydantic import Field

from fks_pipelines.providers import alpha_vantage, coinmarketcap, eodhd, polygon
from fks_pipelines.providers.alpha_vantage import AlphaVantageClient
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.binance import DEFAULT_BASE_URL, BinanceClient
from fks_pipelines.providers.cache import TtlPolicy
from fks_pipelines.providers.clients import ProviderOptions, build_client
from fks_pipelines.providers.coingecko import CoinGeckoClient
from fks_pipelines.providers.coinmarketcap import CoinMarketCapClient
from fks_pipelines.providers.eodhd import EodhdClient
from fks_pipelines.providers.http import Timeouts
from fks_pipelines.providers.polygon import PolygonClient
from fks_pipelines.providers.runtime import RuntimeConfig
from fks_pipelines.warehouse.store import Warehouse


class ProviderResource(dg.ConfigurableResource):
    """A market-data provider with built-in caching, rate limiting, retries and a circuit
    breaker. ``get_client()`` returns a client to use in a ``with`` block; clients of one
    provider in a process share one runtime, whose limits and breaker are shared across
    processes through Redis or, without it, through files under ``cache_dir``."""

    redis_url: str | None = Field(
        default=None, description="Redis for cache and shared limits; none: embedded mode."
    )
    cache_dir: str | None = Field(
        default=None,
        description="Embedded disk cache, and shared limits and breaker state (without Redis).",
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

    provider: ClassVar[str]
    base_url: str | None = Field(default=None, description="REST base URL.")

    def options(self) -> ProviderOptions:
        """How to reach the provider (its key, for a keyed one)."""
        return ProviderOptions(base_url=self.base_url, requests_per_s=self.requests_per_s)

    def get_client(self) -> ProviderClient:
        return build_client(self.provider, self.options(), self.runtime_config())


class BinanceResource(ProviderResource):
    """Binance USD-M futures market data (klines and latest price); no API key needed."""

    provider = BinanceClient.name
    base_url: str = Field(default=DEFAULT_BASE_URL, description="REST base URL.")


class KeyedProviderResource(ProviderResource):
    """A provider that needs an API key, bound from its environment variable with ``EnvVar``:
    an unset variable fails only the runs that use this provider, naming the variable."""

    api_key: str = Field(description="API key (bound from the provider's environment variable).")

    def options(self) -> ProviderOptions:
        return replace(super().options(), api_key=self.api_key)


class PolygonResource(KeyedProviderResource):
    """Polygon.io stocks and crypto aggregates (POLYGON_API_KEY, sent as a header)."""

    provider = PolygonClient.name
    base_url: str = Field(default=polygon.DEFAULT_BASE_URL, description="REST base URL.")


class EodhdResource(KeyedProviderResource):
    """EODHD end-of-day and intraday bars (EODHD_API_KEY, sent as the api_token parameter)."""

    provider = EodhdClient.name
    base_url: str = Field(default=eodhd.DEFAULT_BASE_URL, description="REST base URL.")


class CoinMarketCapResource(KeyedProviderResource):
    """CoinMarketCap OHLCV and quotes by CMC id (COINMARKETCAP_API_KEY, sent as a header)."""

    provider = CoinMarketCapClient.name
    base_url: str = Field(default=coinmarketcap.DEFAULT_BASE_URL, description="REST base URL.")


class AlphaVantageResource(KeyedProviderResource):
    """Alpha Vantage daily and intraday series (ALPHA_VANTAGE_API_KEY, sent as the apikey
    parameter: the provider accepts no header)."""

    provider = AlphaVantageClient.name
    base_url: str = Field(default=alpha_vantage.DEFAULT_BASE_URL, description="Base URL.")


class CoinGeckoResource(ProviderResource):
    """CoinGecko daily bars formed from hourly samples; COINGECKO_API_KEY is optional (demo or
    pro plan; without a key the public API and its lower limit)."""

    provider = CoinGeckoClient.name
    api_key: str | None = Field(default=None, description="Demo or pro key, if any.")
    plan: Literal["demo", "pro"] = Field(default="demo", description="Which key and host.")
    base_url: str | None = Field(default=None, description="REST base URL; default by plan.")

    def options(self) -> ProviderOptions:
        return replace(super().options(), api_key=self.api_key, plan=self.plan)


class WarehouseResource(dg.ConfigurableResource):
    """The OHLCV warehouse (PostgreSQL in production, SQLite embedded) via SQLAlchemy."""

    url: str = Field(description="SQLAlchemy URL of the warehouse database.")

    def get_warehouse(self) -> Warehouse:
        return Warehouse.from_url(self.url)
