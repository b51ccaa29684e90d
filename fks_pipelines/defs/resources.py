"""Dagster resources: thin configurable wrappers that hand out the core's clients."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.binance import DEFAULT_BASE_URL, BinanceClient
from fks_pipelines.providers.http import Timeouts
from fks_pipelines.warehouse.store import Warehouse


class ProviderResource(dg.ConfigurableResource):
    """A market-data provider. ``get_client()`` returns a client to use in a ``with`` block."""

    connect_timeout_s: float = Field(default=5.0, gt=0, description="TCP connect timeout.")
    read_timeout_s: float = Field(default=30.0, gt=0, description="Read timeout per request.")

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(connect=self.connect_timeout_s, read=self.read_timeout_s)

    def get_client(self) -> ProviderClient:
        raise NotImplementedError


class BinanceResource(ProviderResource):
    """Binance USD-M futures market data (klines and latest price); no API key needed."""

    base_url: str = Field(default=DEFAULT_BASE_URL, description="REST base URL.")

    def get_client(self) -> BinanceClient:
        return BinanceClient(self.base_url, timeouts=self.timeouts)


class WarehouseResource(dg.ConfigurableResource):
    """The OHLCV warehouse (PostgreSQL in production, SQLite embedded) via SQLAlchemy."""

    url: str = Field(description="SQLAlchemy URL of the warehouse database.")

    def get_warehouse(self) -> Warehouse:
        return Warehouse.from_url(self.url)
