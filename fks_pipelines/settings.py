"""The environment contract, read in one place.

Every variable the project reads is declared here with its default; the README's configuration
table lists the same names. Secrets (API keys) are not read here: Dagster binds them to resources
with ``EnvVar`` so that they never appear in run config.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    polygon_base_url: str = Field(
        default="https://api.polygon.io", validation_alias="FKS_POLYGON_BASE_URL"
    )
    coingecko_base_url: str | None = Field(
        default=None,
        validation_alias="FKS_COINGECKO_BASE_URL",
        description="Default: the demo/public host, or the pro host with FKS_COINGECKO_PLAN=pro.",
    )
    coingecko_plan: Literal["demo", "pro"] = Field(
        default="demo", validation_alias="FKS_COINGECKO_PLAN"
    )
    coingecko_api_key: SecretStr | None = Field(
        default=None,
        validation_alias="COINGECKO_API_KEY",
        description="Optional; only whether it is set is used here (resources bind it by EnvVar).",
    )
    coinmarketcap_base_url: str = Field(
        default="https://pro-api.coinmarketcap.com", validation_alias="FKS_COINMARKETCAP_BASE_URL"
    )
    alpha_vantage_base_url: str = Field(
        default="https://www.alphavantage.co", validation_alias="FKS_ALPHA_VANTAGE_BASE_URL"
    )
    eodhd_base_url: str = Field(
        default="https://eodhd.com/api", validation_alias="FKS_EODHD_BASE_URL"
    )
    http_connect_timeout_s: float = Field(
        default=5.0, gt=0, validation_alias="FKS_HTTP_CONNECT_TIMEOUT_S"
    )
    http_read_timeout_s: float = Field(
        default=30.0, gt=0, validation_alias="FKS_HTTP_READ_TIMEOUT_S"
    )
    http_max_attempts: int = Field(default=4, ge=1, validation_alias="FKS_HTTP_MAX_ATTEMPTS")
    redis_url: str | None = Field(
        default=None,
        validation_alias="REDIS_URL",
        description="Redis for the cache and shared limits; unset: embedded disk cache.",
    )
    cache_dir: Path | None = Field(default=None, validation_alias="FKS_CACHE_DIR")
    cache_ttl_closed_s: float = Field(
        default=7 * 86400.0, gt=0, validation_alias="FKS_CACHE_TTL_CLOSED_S"
    )
    cache_ttl_open_s: float = Field(default=60.0, gt=0, validation_alias="FKS_CACHE_TTL_OPEN_S")
    cache_ttl_price_s: float = Field(default=2.0, gt=0, validation_alias="FKS_CACHE_TTL_PRICE_S")
    breaker_failures: int = Field(default=5, ge=1, validation_alias="FKS_BREAKER_FAILURES")
    breaker_reset_s: float = Field(default=30.0, gt=0, validation_alias="FKS_BREAKER_RESET_S")
    # Requests per second per provider. Unset: the provider's own documented or free-tier
    # windows (its client's LIMITS): Binance 10/s and 2400 weight/min, Polygon 5/min, CoinGecko
    # 30/min (5/min keyless), CoinMarketCap 30/min, Alpha Vantage 5/min, EODHD 1000/min.
    binance_rps: float | None = Field(default=None, gt=0, validation_alias="FKS_BINANCE_RPS")
    polygon_rps: float | None = Field(default=None, gt=0, validation_alias="FKS_POLYGON_RPS")
    coingecko_rps: float | None = Field(default=None, gt=0, validation_alias="FKS_COINGECKO_RPS")
    coinmarketcap_rps: float | None = Field(
        default=None, gt=0, validation_alias="FKS_COINMARKETCAP_RPS"
    )
    alpha_vantage_rps: float | None = Field(
        default=None, gt=0, validation_alias="FKS_ALPHA_VANTAGE_RPS"
    )
    eodhd_rps: float | None = Field(default=None, gt=0, validation_alias="FKS_EODHD_RPS")
    backfill_partitions_per_run: int = Field(
        default=100,
        ge=1,
        validation_alias="FKS_BACKFILL_PARTITIONS_PER_RUN",
        description="Most partitions (days of one symbol) one backfill run covers.",
    )
    catchup_lookback_days: int = Field(
        default=7,
        ge=1,
        validation_alias="FKS_CATCHUP_LOOKBACK_DAYS",
        description="Finished UTC days the catch-up sensor inspects for missing or failed runs.",
    )
    catchup_max_attempts: int = Field(
        default=3,
        ge=1,
        validation_alias="FKS_CATCHUP_MAX_ATTEMPTS",
        description="Launches per partition before the catch-up sensor leaves it to a person.",
    )
    catchup_interval_s: int = Field(
        default=900,
        ge=30,
        validation_alias="FKS_CATCHUP_INTERVAL_S",
        description="Seconds between evaluations of the catch-up sensor.",
    )
    alert_webhook_url: SecretStr | None = Field(
        default=None,
        validation_alias="FKS_ALERT_WEBHOOK_URL",
        description="Slack-compatible webhook for check alerts; bound to the sensor with EnvVar.",
    )
    dagster_ui_url: str | None = Field(
        default=None,
        validation_alias="FKS_DAGSTER_UI_URL",
        description="Base URL of the Dagster UI, for links in alerts.",
    )
    alert_on_warn: bool = Field(default=False, validation_alias="FKS_ALERT_ON_WARN")
    alert_dedupe_s: float = Field(default=6 * 3600, gt=0, validation_alias="FKS_ALERT_DEDUPE_S")
    asset_owners: str = Field(
        default="",
        validation_alias="FKS_ASSET_OWNERS",
        description="Comma-separated owners shown on every asset (emails or team:<name>).",
    )

    @property
    def resolved_warehouse_url(self) -> str:
        """The warehouse URL, defaulting to ``sqlite:///<data_dir>/warehouse.sqlite``."""
        if self.warehouse_url:
            return self.warehouse_url
        return f"sqlite:///{self.data_dir / 'warehouse.sqlite'}"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.data_dir / "cache"

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.asset_owners.split(",") if o.strip())

    @cached_property
    def universe(self) -> Universe:
        return load_universe(self.universe_file)
