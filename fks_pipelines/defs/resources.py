"""Dagster resources: thin configurable wrappers that hand out the core's clients."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import dagster as dg
from pydantic import Field

from fks_pipelines.providers import alpha_vantage, coingecko, coinmarketcap, eodhd, polygon
from fks_pipelines.providers.alpha_vantage import AlphaVantageClient
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.binance import DEFAULT_BASE_URL, BinanceClient
from fks_pipelines.providers.cache import TtlPolicy
from fks_pipelines.providers.coingecko import CoinGeckoClient
from fks_pipelines.providers.coinmarketcap import CoinMarketCapClient
from fks_pipelines.providers.eodhd import EodhdClient
from fks_pipelines.providers.http import Timeouts
from fks_pipelines.providers.polygon import PolygonClient
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
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

    def runtime(
        self, client_class: type[ProviderClient], limits: ProviderLimits | None = None
    ) -> ProviderRuntime:
        limits = limits or client_class.LIMITS
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


class KeyedProviderResource(ProviderResource):
    """A provider that needs an API key, bound from its environment variable with ``EnvVar``:
    an unset variable fails only the runs that use this provider, naming the variable."""

    client_class: ClassVar[type[ProviderClient]]
    api_key: str = Field(description="API key (bound from the provider's environment variable).")
    base_url: str = Field(description="REST base URL.")

    def get_client(self) -> ProviderClient:
        client_class: Any = self.client_class
        return client_class(self.api_key, self.base_url, runtime=self.runtime(self.client_class))


class PolygonResource(KeyedProviderResource):
    """Polygon.io stocks and crypto aggregates (POLYGON_API_KEY, sent as a header)."""

    client_class = PolygonClient
    base_url: str = Field(default=polygon.DEFAULT_BASE_URL, description="REST base URL.")


class EodhdResource(KeyedProviderResource):
    """EODHD end-of-day and intraday bars (EODHD_API_KEY, sent as the api_token parameter)."""

    client_class = EodhdClient
    base_url: str = Field(default=eodhd.DEFAULT_BASE_URL, description="REST base URL.")


class CoinMarketCapResource(KeyedProviderResource):
    """CoinMarketCap OHLCV and quotes by CMC id (COINMARKETCAP_API_KEY, sent as a header)."""

    client_class = CoinMarketCapClient
    base_url: str = Field(default=coinmarketcap.DEFAULT_BASE_URL, description="REST base URL.")


class AlphaVantageResource(KeyedProviderResource):
    """Alpha Vantage daily and intraday series (ALPHA_VANTAGE_API_KEY, sent as the apikey
    parameter: the provider accepts no header)."""

    client_class = AlphaVantageClient
    base_url: str = Field(default=alpha_vantage.DEFAULT_BASE_URL, description="Base URL.")


class CoinGeckoResource(ProviderResource):
    """CoinGecko daily bars formed from hourly samples; COINGECKO_API_KEY is optional (demo or
    pro plan; without a key the public API and its lower limit)."""

    api_key: str | None = Field(default=None, description="Demo or pro key, if any.")
    plan: Literal["demo", "pro"] = Field(default="demo", description="Which key and host.")
    base_url: str | None = Field(default=None, description="REST base URL; default by plan.")

    def get_client(self) -> CoinGeckoClient:
        base_url = self.base_url or (
            coingecko.PRO_BASE_URL if self.plan == "pro" else coingecko.DEFAULT_BASE_URL
        )
        limits = CoinGeckoClient.LIMITS if self.api_key else CoinGeckoClient.KEYLESS_LIMITS
        return CoinGeckoClient(
            self.api_key,
            base_url,
            plan=self.plan,
            runtime=self.runtime(CoinGeckoClient, limits),
        )


class WarehouseResource(dg.ConfigurableResource):
    """The OHLCV warehouse (PostgreSQL in production, SQLite embedded) via SQLAlchemy."""

    url: str = Field(description="SQLAlchemy URL of the warehouse database.")

    def get_warehouse(self) -> Warehouse:
        return Warehouse.from_url(self.url)
