"""The environment contract, read in one place.

Every variable the project reads is declared here with its default; the README's configuration
table lists the same names. Secrets (API keys) are not read here: Dagster binds them to resources
with ``EnvVar`` so that they never appear in run config.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fks_pipelines.market.universe import DEFAULT_UNIVERSE_FILE, Universe, load_universe

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Runtime settings from environment variables (see the README's configuration table)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        validation_alias="FKS_DATA_DIR",
        description="Directory for local state: the SQLite warehouse and the local cache.",
    )
    warehouse_url: str | None = Field(
        default=None,
        validation_alias="FKS_WAREHOUSE_URL",
        description="SQLAlchemy URL of the warehouse; default: SQLite file in the data dir.",
    )
    universe_file: Path = Field(
        default=DEFAULT_UNIVERSE_FILE,
        validation_alias="FKS_UNIVERSE_FILE",
        description="YAML file listing providers, symbols, intervals and start dates.",
    )
    binance_base_url: str = Field(
        default="https://fapi.binance.com",
        validation_alias="FKS_BINANCE_BASE_URL",
        description="Binance USD-M futures REST base URL.",
    )
    http_connect_timeout_s: float = Field(
        default=5.0, gt=0, validation_alias="FKS_HTTP_CONNECT_TIMEOUT_S"
    )
    http_read_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="FKS_HTTP_READ_TIMEOUT_S"
    )

    @property
    def resolved_warehouse_url(self) -> str:
        """The warehouse URL, defaulting to ``sqlite:///<data_dir>/warehouse.sqlite``."""
        if self.warehouse_url:
            return self.warehouse_url
        return f"sqlite:///{self.data_dir / 'warehouse.sqlite'}"

    @cached_property
    def universe(self) -> Universe:
        return load_universe(self.universe_file)
