"""The consolidated OHLCV asset: one golden series per canonical instrument and interval.

Built from the provider assets already in the warehouse: each bar comes from the first provider
in the universe's ``priority`` that stored it, so a missing or failed provider window is filled
from the next provider. Where several providers stored a bar, their closes are compared and the
agreement is stored with the bar and shown as metadata per partition.
"""

from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pandas as pd

from fks_pipelines.defs.assets import (
    DEFAULT_POLICY,
    GROUP,
    AssetPolicy,
    asset_class_tag,
    beta_apis,
    ohlcv_asset_key,
    with_code_references,
)
from fks_pipelines.defs.checks import agreement_result, consolidated_check_specs
from fks_pipelines.defs.partitions import (
    DATE,
    SYMBOL,
    Block,
    blocks,
    day_symbol_partitions,
    partition_key,
)
from fks_pipelines.market.consolidate import consolidate
from fks_pipelines.market.universe import Universe
from fks_pipelines.quality.agreement import Agreement, measure_agreement
from fks_pipelines.quality.score import quality_score
from fks_pipelines.warehouse.store import ConsolidatedScope, Warehouse


def consolidated_asset_key(interval: str) -> dg.AssetKey:
    return dg.AssetKey(["ohlcv", "consolidated", interval])


def consolidated_sources(universe: Universe, interval: str) -> dict[str, dict[str, str]]:
    """Provider -> {provider ticker: instrument} of the providers that keep ``interval``."""
    return {
        provider: dict(spec.symbols)
        for provider, spec in universe.providers.items()
        if interval in spec.intervals and provider in universe.priority
    }


def consolidated_instruments(universe: Universe, interval: str) -> list[str]:
    """Instruments at least one provider keeps at ``interval``, in the universe's order."""
    kept = {
        i for symbols in consolidated_sources(universe, interval).values() for i in symbols.values()
    }
    return [i for i in universe.instruments if i in kept]


def after_provider_updates(lookback_days: int) -> dg.AutomationCondition:
    """Re-consolidate a partition once a provider stored new bars for it and none is running.

    Unlike ``eager()``, a provider that never stored the partition (no key, a failed run) does
    not hold the others back: filling in for it is what the consolidated series is for. Only the
    last ``lookback_days`` days are watched, as with the catch-up sensor.
    """
    return (
        dg.AutomationCondition.in_latest_time_window(timedelta(days=lookback_days))
        & dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after provider updates")


def build_consolidated_asset(
    interval: str,
    universe: Universe,
    policy: AssetPolicy = DEFAULT_POLICY,
    lookback_days: int = 7,
) -> dg.AssetsDefinition:
    """The ``ohlcv/consolidated/<interval>`` asset, partitioned by UTC date x instrument."""
    sources = consolidated_sources(universe, interval)
    instruments = consolidated_instruments(universe, interval)
    start = min(universe.providers[p].start_date for p in sources)
    with beta_apis():
        deps = [
            dg.AssetDep(
                ohlcv_asset_key(provider, interval),
                partition_mapping=dg.MultiPartitionMapping(
                    {
                        # Providers may start later than the consolidated series.
                        DATE: dg.DimensionPartitionMapping(
                            DATE,
                            dg.TimeWindowPartitionMapping(
                                allow_nonexistent_upstream_partitions=True
                            ),
                        ),
                        SYMBOL: dg.DimensionPartitionMapping(
                            SYMBOL, dg.StaticPartitionMapping(tickers)
                        ),
                    }
                ),
            )
            for provider, tickers in sources.items()
        ]

        @dg.asset(
            key=consolidated_asset_key(interval),
            deps=deps,
            partitions_def=day_symbol_partitions(start, instruments),
            group_name=GROUP,
            kinds={"python", "pandas"},
            tags={
                "provider": "consolidated",
                "interval": interval,
                "asset_class": asset_class_tag(universe, instruments),
            },
            owners=list(policy.owners),
            required_resource_keys={"warehouse"},
            check_specs=consolidated_check_specs(consolidated_asset_key(interval)),
            retry_policy=policy.retry,
            backfill_policy=policy.backfill,
            automation_condition=after_provider_updates(lookback_days),
            description=(
                f"One golden {interval} OHLCV series per canonical instrument, stored in the "
                "warehouse table `ohlcv_consolidated`. Each bar comes from the first provider in "
                f"priority order ({', '.join(p for p in universe.priority if p in sources)}) that "
                "stored it, named in its `source` column; where several providers stored a bar, "
                "`agreement_bps` is the largest deviation of their closes from the chosen one."
            ),
        )
        def _consolidated(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            warehouse: Warehouse = context.resources.warehouse.get_warehouse()
            written = 0
            agreements: dict[str, tuple[Agreement, float]] = {}
            for block in blocks(context.partition_keys):
                frames = [
                    consolidate(
                        instrument,
                        interval,
                        _windows(warehouse, universe, sources, instrument, interval, block),
                    )
                    for instrument in block.symbols
                ]
                frame = pd.concat(frames, ignore_index=True)
                scope = ConsolidatedScope(interval, block.symbols, block.start, block.end)
                written += warehouse.write_consolidated(frame, scope)
                for key, agreement, error_bps in _record_partitions(
                    context, universe, block, frame
                ):
                    agreements[key] = (agreement, error_bps)
            context.log.info(
                "consolidated %s: stored %d bars for %d partitions",
                interval,
                written,
                len(context.partition_keys),
            )
            return dg.MaterializeResult(
                metadata={"run_partitions": len(context.partition_keys)},
                check_results=[agreement_result(agreements)],
            )

    return _consolidated


def _windows(
    warehouse: Warehouse,
    universe: Universe,
    sources: dict[str, dict[str, str]],
    instrument: str,
    interval: str,
    block: Block,
) -> list[pd.DataFrame]:
    """The instrument's stored bars of ``block`` at each provider, in priority order."""
    return [
        warehouse.read_ohlcv(provider, interval, [ticker], block.start, block.end)
        for provider, ticker in universe.routes(instrument)
        if provider in sources
    ]


def _record_partitions(
    context: dg.AssetExecutionContext, universe: Universe, block: Block, frame: pd.DataFrame
) -> Iterator[tuple[str, Agreement, float]]:
    """Rows, source mix, agreement and quality score of each partition of ``block``.

    Yields each partition's key, agreement and hard limit (``error_bps``) for the check.
    """
    days = frame["ts"].dt.floor("D")
    for instrument in block.symbols:
        tolerance = universe.tolerance(instrument)
        of_instrument = frame["instrument"] == instrument
        for day in block.days:
            part = frame.loc[of_instrument & (days == pd.Timestamp(day, tz="UTC"))]
            agreement = measure_agreement(part, tolerance.warn_bps)
            score = quality_score(None, None, [], None, None, agreement, tolerance)
            key = partition_key(day, instrument)
            context.add_asset_metadata(
                {**agreement.as_metadata(), **score.as_metadata()}, partition_key=key
            )
            yield str(key), agreement, tolerance.error_bps


def build_consolidated_assets(
    universe: Universe, policy: AssetPolicy = DEFAULT_POLICY, lookback_days: int = 7
) -> list[dg.AssetsDefinition]:
    """One consolidated asset per interval that any provider keeps."""
    intervals = dict.fromkeys(i for spec in universe.providers.values() for i in spec.intervals)
    return with_code_references(
        [
            build_consolidated_asset(interval, universe, policy, lookback_days)
            for interval in intervals
        ]
    )
