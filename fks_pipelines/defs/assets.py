"""OHLCV assets: one per provider and interval, partitioned by UTC date x symbol."""

import dagster as dg
import pandas as pd

from fks_pipelines.defs.partitions import DaySymbol, ohlcv_partitions
from fks_pipelines.defs.resources import ProviderResource, WarehouseResource
from fks_pipelines.market.frame import validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Universe
from fks_pipelines.warehouse.store import Scope

GROUP = "market_data"

# Providers whose resources are wired so far; the universe may list more for later.
WIRED_PROVIDERS = ("binance", "polygon", "coingecko", "coinmarketcap", "alpha_vantage", "eodhd")


def ohlcv_asset_key(provider: str, interval: str) -> dg.AssetKey:
    return dg.AssetKey(["ohlcv", provider, interval])


def build_ohlcv_asset(provider: str, interval: str, universe: Universe) -> dg.AssetsDefinition:
    """The ``ohlcv/<provider>/<interval>`` asset: fetch one UTC day of one symbol, store it."""
    spec = universe.provider(provider)
    bar = Interval.parse(interval)
    # Pages of a provider are counted from the first partition, so that a backfill from there
    # needs the fewest requests its paging allows.
    anchor = pd.Timestamp(spec.start_date, tz="UTC")

    @dg.asset(
        key=ohlcv_asset_key(provider, interval),
        partitions_def=ohlcv_partitions(spec),
        group_name=GROUP,
        kinds={"python", "pandas"},
        tags={"provider": provider, "interval": interval},
        required_resource_keys={provider, "warehouse"},
        description=(
            f"Closed {interval} OHLCV bars from {provider}, one partition per UTC day and "
            "symbol, stored in the warehouse table `ohlcv`. Re-materialising a partition "
            "replaces exactly its rows."
        ),
    )
    def _ohlcv(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        part = DaySymbol.from_key(context.partition_key)
        source: ProviderResource = getattr(context.resources, provider)
        warehouse: WarehouseResource = context.resources.warehouse
        with source.get_client() as client:
            window = client.fetch_ohlcv(part.symbol, bar, part.start, part.end, anchor=anchor)
            frame = validate(window)
            work = client.metadata()
        scope = Scope(provider, interval, (part.symbol,), part.start, part.end)
        written = warehouse.get_warehouse().write_ohlcv(frame, scope)
        expected = bar.bars_between(part.start, part.end)
        context.log.info(
            "%s %s %s: stored %d of %d bars (%d upstream requests, %d cache hits)",
            provider,
            part.symbol,
            interval,
            written,
            expected,
            work["requests"],
            work["cache_hits"],
        )
        metadata: dict[str, object] = {
            "rows": written,
            "expected_bars": expected,
            "missing_bars": expected - written,
            **work,
        }
        if written:
            metadata["first_bar"] = dg.MetadataValue.timestamp(frame["ts"].iloc[0])
            metadata["last_bar"] = dg.MetadataValue.timestamp(frame["ts"].iloc[-1])
        return dg.MaterializeResult(metadata=metadata)

    return _ohlcv


def build_ohlcv_assets(universe: Universe) -> list[dg.AssetsDefinition]:
    """Every wired provider's OHLCV assets, one per interval in the universe."""
    return [
        build_ohlcv_asset(provider, interval, universe)
        for provider in WIRED_PROVIDERS
        if provider in universe.providers
        for interval in universe.providers[provider].intervals
    ]
