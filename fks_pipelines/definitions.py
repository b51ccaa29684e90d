"""The code location: assembles the assets and binds resources for this environment."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from fks_pipelines.defs.alerts import AlertResource, build_alert_sensor
from fks_pipelines.defs.analytics import build_daily_returns_asset
from fks_pipelines.defs.assets import AssetPolicy, build_ohlcv_assets
from fks_pipelines.defs.consolidated import build_consolidated_assets
from fks_pipelines.defs.exports import build_export_assets
from fks_pipelines.defs.freshness import build_freshness_sensor
from fks_pipelines.defs.io_manager import IO_MANAGER_KEY, WarehouseIOManager
from fks_pipelines.defs.report import build_quality_report_asset, build_report_schedule
from fks_pipelines.defs.resources import (
    AlphaVantageResource,
    BinanceResource,
    CoinGeckoResource,
    CoinMarketCapResource,
    EodhdResource,
    PolygonResource,
    WarehouseResource,
)
from fks_pipelines.defs.schedules import (
    build_catchup_sensor,
    build_daily_schedule,
    provider_targets,
)
from fks_pipelines.defs.webhooks import WebhookStreamResource, build_webhook_sensor
from fks_pipelines.providers import alpha_vantage, coingecko, coinmarketcap, eodhd, polygon
from fks_pipelines.settings import Settings


def build_definitions(settings: Settings) -> dg.Definitions:
    """Definitions for ``settings``; tests call this with their own settings."""
    # A warehouse URL may carry a password: bind it through EnvVar so that Dagster resolves it at
    # run time and never shows it in the UI or run config. The default SQLite path holds none.
    warehouse_url: str | dg.EnvVar = settings.resolved_warehouse_url
    if settings.warehouse_url:
        warehouse_url = dg.EnvVar("FKS_WAREHOUSE_URL")
    # A Redis URL may carry a password too: EnvVar, as above.
    redis_url = dg.EnvVar("REDIS_URL") if settings.redis_url else None
    warehouse = WarehouseResource(url=warehouse_url)
    runtime = {
        "redis_url": redis_url,
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
    resources: dict[str, object] = {
        "binance": BinanceResource(
            base_url=settings.binance_base_url, requests_per_s=settings.binance_rps, **runtime
        ),
        "polygon": PolygonResource(
            api_key=dg.EnvVar(polygon.KEY_VARIABLE),
            base_url=settings.polygon_base_url,
            requests_per_s=settings.polygon_rps,
            **runtime,
        ),
        "coingecko": CoinGeckoResource(
            api_key=dg.EnvVar(coingecko.KEY_VARIABLE) if settings.coingecko_api_key else None,
            plan=settings.coingecko_plan,
            base_url=settings.coingecko_base_url,
            requests_per_s=settings.coingecko_rps,
            **runtime,
        ),
        "coinmarketcap": CoinMarketCapResource(
            api_key=dg.EnvVar(coinmarketcap.KEY_VARIABLE),
            base_url=settings.coinmarketcap_base_url,
            requests_per_s=settings.coinmarketcap_rps,
            **runtime,
        ),
        "alpha_vantage": AlphaVantageResource(
            api_key=dg.EnvVar(alpha_vantage.KEY_VARIABLE),
            base_url=settings.alpha_vantage_base_url,
            requests_per_s=settings.alpha_vantage_rps,
            **runtime,
        ),
        "eodhd": EodhdResource(
            api_key=dg.EnvVar(eodhd.KEY_VARIABLE),
            base_url=settings.eodhd_base_url,
            requests_per_s=settings.eodhd_rps,
            **runtime,
        ),
        "warehouse": warehouse,
        # Downstream assets receive the OHLCV assets' stored bars through it.
        IO_MANAGER_KEY: WarehouseIOManager(warehouse=warehouse),
        "alerts": AlertResource(
            webhook_url=dg.EnvVar("FKS_ALERT_WEBHOOK_URL") if settings.alert_webhook_url else None,
            dagster_ui_url=settings.dagster_ui_url,
            alert_on_warn=settings.alert_on_warn,
            dedupe_s=settings.alert_dedupe_s,
        ),
        "webhook_stream": WebhookStreamResource(
            redis_url=redis_url, maxlen=settings.webhook_stream_maxlen
        ),
    }
    universe = settings.universe
    policy = AssetPolicy(
        partitions_per_run=settings.backfill_partitions_per_run, owners=settings.owners
    )
    # Providers whose key is unset: their assets stay visible and can be launched by hand (the
    # run fails naming the variable), but no schedule or sensor launches them or alerts on them.
    missing_keys = settings.missing_keys()
    provider_assets = build_ohlcv_assets(universe, policy)
    consolidated = build_consolidated_assets(universe, policy, settings.catchup_lookback_days)
    targets = provider_targets(universe, provider_assets, settings.backfill_partitions_per_run)
    catchup = build_catchup_sensor(
        targets,
        lookback_days=settings.catchup_lookback_days,
        max_attempts=settings.catchup_max_attempts,
        interval_s=settings.catchup_interval_s,
        missing_keys=missing_keys,
    )
    consolidation = dg.AutomationConditionSensorDefinition(
        "ohlcv_consolidation",
        target=dg.AssetSelection.assets(*consolidated),
        description=(
            "Re-consolidates a day of an instrument once a provider stored new bars for it."
        ),
    )
    ohlcv = [*provider_assets, *consolidated]
    exports = build_export_assets(universe, settings.resolved_export_dir, policy)
    exporting = dg.AutomationConditionSensorDefinition(
        "ohlcv_exports",
        target=dg.AssetSelection.assets(*exports),
        description=(
            "Rewrites a month's Parquet export once days of it were consolidated again; "
            "paused on its own (a full disk, say) without stopping consolidation."
        ),
    )
    returns = build_daily_returns_asset(
        universe, min(spec.start_date for spec in universe.providers.values()), policy
    )
    report = build_quality_report_asset(
        universe,
        [asset.key for asset in ohlcv],
        # A report day maps to that date of every OHLCV asset, so it starts with the latest.
        max(spec.start_date for spec in universe.providers.values()),
        partitions_per_run=settings.backfill_partitions_per_run,
    )
    configured = [
        asset for asset in ohlcv if asset.tags_by_key[asset.key]["provider"] not in missing_keys
    ]
    return dg.Definitions(
        assets=[*ohlcv, report, *exports, returns],
        jobs=[t.job for t in targets],
        schedules=[
            *(build_daily_schedule(t, missing_keys.get(t.provider)) for t in targets),
            build_report_schedule(report),
        ],
        sensors=[
            catchup,
            consolidation,
            exporting,
            build_freshness_sensor(
                targets,
                missing_keys,
                settings.freshness_interval_s,
                # Two catch-up ticks: time for it to relaunch a partition whose run failed.
                retry_grace=timedelta(seconds=2 * settings.catchup_interval_s),
            ),
            build_alert_sensor(
                [key for asset in configured for key in asset.check_keys],
                settings.alert_interval_s,
            ),
            build_webhook_sensor(
                targets,
                missing_keys,
                interval_s=settings.webhook_sensor_interval_s,
                retention_days=settings.webhook_retention_days,
            ),
        ],
        resources=resources,
        # A run has one step per asset, which waits on the provider anyway; the multiprocess
        # executor's extra process per step cost 4-7 s of a run's start on 2 cores
        # (bench/backfill_dagster.py). Pools and retries still apply.
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings())
