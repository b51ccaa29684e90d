"""The environment contract, read in one place.

Every variable the project reads is declared here with its default; the README's configuration
table lists the same names. Secrets (API keys, URLs with passwords) are ``SecretStr`` here, for
the HTTP service; Dagster does not take them from here but binds them to resources with
``EnvVar``, so that they never appear in run config.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from fks_pipelines.market.universe import DEFAULT_UNIVERSE_FILE, Universe, load_universe
from fks_pipelines.providers.cache import TtlPolicy
from fks_pipelines.providers.clients import REQUIRED_KEY_VARIABLES, ProviderOptions
from fks_pipelines.providers.http import Timeouts
from fks_pipelines.providers.runtime import RuntimeConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Runtime settings from environment variables (see the README's configuration table)."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=PROJECT_ROOT / "data",
        validation_alias="FKS_DATA_DIR",
        description=(
            "Directory for local state: the SQLite warehouse, the local cache and (without"
            " Redis) the limits and breaker state shared by processes."
        ),
    )
    warehouse_url: str | None = Field(
        default=None,
        validation_alias="FKS_WAREHOUSE_URL",
        description="SQLAlchemy URL of the warehouse; default: SQLite file in the data dir.",
    )
    export_dir: Path | None = Field(
        default=None,
        validation_alias="FKS_EXPORT_DIR",
        description="Parquet exports of the consolidated series; default: <data dir>/exports.",
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
        description="Optional; Dagster's resource binds it by EnvVar when it is set.",
    )
    polygon_api_key: SecretStr | None = Field(default=None, validation_alias="POLYGON_API_KEY")
    coinmarketcap_api_key: SecretStr | None = Field(
        default=None, validation_alias="COINMARKETCAP_API_KEY"
    )
    alpha_vantage_api_key: SecretStr | None = Field(
        default=None, validation_alias="ALPHA_VANTAGE_API_KEY"
    )
    eodhd_api_key: SecretStr | None = Field(default=None, validation_alias="EODHD_API_KEY")
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
    freshness_interval_s: int = Field(
        default=300,
        ge=30,
        validation_alias="FKS_FRESHNESS_INTERVAL_S",
        description="Seconds between evaluations of the ohlcv_freshness sensor.",
    )
    alert_interval_s: int = Field(
        default=60,
        ge=10,
        validation_alias="FKS_ALERT_INTERVAL_S",
        description="Seconds between evaluations of the check_alerts sensor.",
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
    webhook_secret: SecretStr | None = Field(
        default=None,
        validation_alias="FKS_WEBHOOK_SECRET",
        description="Shared secret of the webhook HMAC signatures; unset: every webhook refused.",
    )
    webhook_sensor_interval_s: int = Field(
        default=30,
        ge=5,
        validation_alias="FKS_WEBHOOK_SENSOR_INTERVAL_S",
        description="Seconds between evaluations of the webhook_events sensor.",
    )
    webhook_stream_maxlen: int = Field(
        default=100_000,
        ge=1,
        validation_alias="FKS_WEBHOOK_STREAM_MAXLEN",
        description="Approximate length the Redis stream of webhook events is capped at.",
    )
    webhook_retention_days: int = Field(
        default=30,
        ge=0,
        validation_alias="FKS_WEBHOOK_RETENTION_DAYS",
        description="Days a handled webhook event is kept before the sensor deletes it; 0 keeps "
        "every event.",
    )
    webhook_store_timeout_s: float = Field(
        default=4.0,
        gt=0,
        validation_alias="FKS_WEBHOOK_STORE_TIMEOUT_S",
        description="Longest a lock or statement of the webhook intake's transactions may take "
        "(PostgreSQL); a request is answered within about twice that plus a second.",
    )

    api_host: str = Field(
        default="127.0.0.1",
        validation_alias="FKS_API_HOST",
        description="Interface the HTTP service listens on (fks-api).",
    )
    api_port: int = Field(
        default=8003, ge=1, le=65535, validation_alias="FKS_API_PORT", description="Its port."
    )
    api_limiter_wait_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="FKS_API_LIMITER_WAIT_S",
        description="Longest an HTTP service request waits for a provider's rate limiter.",
    )
    api_max_bars: int = Field(
        default=10_000,
        ge=1,
        validation_alias="FKS_API_MAX_BARS",
        description="Most bars one /api/v1/data/ohlcv request may ask for.",
    )
    api_data_threads: int = Field(
        default=24,
        ge=1,
        validation_alias="FKS_API_DATA_THREADS",
        description="Worker threads of the data routes (their own: the webhook intake and "
        "/health have theirs).",
    )
    api_intake_threads: int = Field(
        default=8,
        ge=1,
        validation_alias="FKS_API_INTAKE_THREADS",
        description="Worker threads verifying and parsing webhooks.",
    )
    api_thread_wait_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="FKS_API_THREAD_WAIT_S",
        description="Longest a request waits for a worker thread before a 503 with Retry-After.",
    )
    api_warehouse_timeout_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="FKS_API_WAREHOUSE_TIMEOUT_S",
        description="Longest one warehouse read of the data routes may take (PostgreSQL); "
        "beyond it the bars come from the providers.",
    )
    api_max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        validation_alias="FKS_API_MAX_HEADER_BYTES",
        description="Most bytes of a request's line and headers (fks-api); beyond: 431, or 414 "
        "for a request line over 8 KiB.",
    )
    api_max_headers: int = Field(
        default=100,
        ge=1,
        validation_alias="FKS_API_MAX_HEADERS",
        description="Most header fields of a request (fks-api); beyond: 431.",
    )

    binance_ws_url: str = Field(
        default="wss://fstream.binance.com",
        validation_alias="FKS_BINANCE_WS_URL",
        description="Base URL of Binance USD-M's market streams (fks-stream).",
    )
    stream_host: str = Field(
        default="127.0.0.1",
        validation_alias="FKS_STREAM_HOST",
        description="Interface fks-stream's /health and /metrics listen on.",
    )
    stream_port: int = Field(
        default=8004, ge=1, le=65535, validation_alias="FKS_STREAM_PORT", description="Its port."
    )
    stream_gap_lookback_h: float = Field(
        default=24.0,
        gt=0,
        validation_alias="FKS_STREAM_GAP_LOOKBACK_H",
        description="How far back fks-stream fetches the klines that closed while it was not "
        "listening (from the last one it stored); older gaps are the catch-up sensor's.",
    )
    stream_price_max_age_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias="FKS_STREAM_PRICE_MAX_AGE_S",
        description="Oldest streamed price /api/v1/data/price answers with; older, it asks "
        "the provider's REST API.",
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
    def resolved_export_dir(self) -> Path:
        """Where the Parquet exports go, defaulting to ``<data_dir>/exports``."""
        return self.export_dir or self.data_dir / "exports"

    def runtime_config(self) -> RuntimeConfig:
        """The provider runtime these settings describe (cache, TTLs, timeouts, breaker)."""
        return RuntimeConfig(
            redis_url=self.redis_url,
            cache_dir=self.resolved_cache_dir,
            ttl=TtlPolicy(
                closed_s=self.cache_ttl_closed_s,
                open_s=self.cache_ttl_open_s,
                price_s=self.cache_ttl_price_s,
            ),
            timeouts=Timeouts(connect=self.http_connect_timeout_s, read=self.http_read_timeout_s),
            max_attempts=self.http_max_attempts,
            breaker_failures=self.breaker_failures,
            breaker_reset_s=self.breaker_reset_s,
        )

    def provider_options(self, provider: str) -> ProviderOptions:
        """Base URL, key and rate override of ``provider`` (fields ``<provider>_base_url``,
        ``<provider>_api_key`` and ``<provider>_rps``)."""
        key: SecretStr | None = getattr(self, f"{provider}_api_key", None)
        return ProviderOptions(
            base_url=getattr(self, f"{provider}_base_url"),
            api_key=key.get_secret_value() if key is not None else None,
            requests_per_s=getattr(self, f"{provider}_rps"),
            plan=self.coingecko_plan,
        )

    def missing_keys(self) -> dict[str, str]:
        """Provider id -> the variable it needs and lacks, for each provider that cannot run.

        Such a provider is *not configured*: schedules and sensors skip its assets with a reason
        naming the variable, instead of launching runs that would fail on the missing key.
        """
        missing = {}
        for provider, variable in REQUIRED_KEY_VARIABLES.items():
            key: SecretStr | None = getattr(self, f"{provider}_api_key")
            if key is None or not key.get_secret_value().strip():
                missing[provider] = variable
        return missing

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(o.strip() for o in self.asset_owners.split(",") if o.strip())

    @cached_property
    def universe(self) -> Universe:
        return load_universe(self.universe_file)
