"""OHLCV assets: one per provider and interval, partitioned by UTC date x symbol."""

import warnings

import dagster as dg
import pandas as pd
from pandera.errors import SchemaErrors

from fks_pipelines.defs.partitions import DaySymbol, ohlcv_partitions
from fks_pipelines.defs.resources import ProviderResource, WarehouseResource
from fks_pipelines.market.frame import validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Universe
from fks_pipelines.providers.errors import QuotaExhausted, RequestRejected
from fks_pipelines.warehouse.store import Scope

GROUP = "market_data"

# A run that still fails after the provider runtime's own retries (a provider down for minutes,
# a rate limit that outlasted the limiter's longest wait) is tried again later, not by hand.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def ohlcv_asset_key(provider: str, interval: str) -> dg.AssetKey:
    return dg.AssetKey(["ohlcv", provider, interval])


# What a later attempt cannot mend. A malformed answer is not among them: a provider's
# maintenance page arrives as one, and a retry after the policy's delay may well succeed.
PERMANENT_FAILURES = (RequestRejected, QuotaExhausted, SchemaErrors)


def build_ohlcv_asset(
    provider: str,
    interval: str,
    universe: Universe,
    retry_policy: dg.RetryPolicy | None = TRANSIENT_RETRY,
) -> dg.AssetsDefinition:
    """The ``ohlcv/<provider>/<interval>`` asset: fetch one UTC day of one symbol, store it.

    Failures that a retry cannot mend (a rejected request or key, an exhausted quota, bars that
    break the schema) fail the run without using ``retry_policy``; transient ones use it.
    """
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
        # One pool per provider (limit in dagster.yaml): concurrent runs and backfills queue for
        # it instead of piling onto the provider; the shared rate limiter stays the hard limit.
        pool=provider,
        retry_policy=retry_policy,
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
        try:
            with source.get_client() as client:
                window = client.fetch_ohlcv(part.symbol, bar, part.start, part.end, anchor=anchor)
                frame = validate(window)
                work = client.metadata()
        except PERMANENT_FAILURES as exc:
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
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
    """Every provider's OHLCV assets, one per interval the universe lists for it."""
    assets = [
        build_ohlcv_asset(provider, interval, universe)
        for provider, spec in universe.providers.items()
        for interval in spec.intervals
    ]
    # Code references (a link from each asset to its source in the UI) are a beta API; its
    # warnings would print on every load of the code location.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return list(dg.with_source_code_references(assets))
