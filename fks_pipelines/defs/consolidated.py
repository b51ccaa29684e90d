"""The consolidated OHLCV asset: one golden series per canonical instrument and interval.

Built from the provider assets already in the warehouse: each bar comes from the first provider
in the universe's ``priority`` that stored it, so a missing or failed provider window is filled
from the next provider. Where several providers stored a bar, their closes are compared and the
agreement is stored with the bar and shown as metadata per partition. Each partition is checked
like a provider's: schema (blocking), completeness against the instrument's calendar, a quality
score, and the agreement check.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import numpy as np
import pandas as pd

from fks_pipelines.defs.assets import (
    DAY,
    DEFAULT_POLICY,
    FOLLOWING,
    AssetPolicy,
    asset_class_tag,
    beta_apis,
    earlier_verdicts,
    ohlcv_asset_key,
    revised_rows,
    with_code_references,
)
from fks_pipelines.defs.checks import (
    agreement_evaluation,
    check_outputs,
    completeness_evaluation,
    consolidated_check_specs,
    failed_checks,
    failed_summary,
    outliers_evaluation,
    schema_gate,
    selected,
)
from fks_pipelines.defs.io_manager import IO_MANAGER_KEY
from fks_pipelines.defs.partitions import (
    DATE,
    SYMBOL,
    Block,
    DaySymbol,
    blocks,
    day_symbol_partitions,
    partition_key,
)
from fks_pipelines.market.consolidate import CONSOLIDATED, as_canonical, consolidate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Tolerance, Universe
from fks_pipelines.quality.agreement import Agreement, measure_agreement
from fks_pipelines.quality.assess import DayJudgement, history_start, judge_days
from fks_pipelines.quality.bar_errors import AFTER
from fks_pipelines.quality.completeness import CompletenessReport, check_completeness
from fks_pipelines.quality.report import quality_row
from fks_pipelines.quality.schema import SchemaReport
from fks_pipelines.quality.score import QualityScore, quality_score
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
    key = consolidated_asset_key(interval)
    bar = Interval.parse(interval)
    partitions = day_symbol_partitions(start, instruments)
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
            key=key,
            deps=deps,
            partitions_def=partitions,
            group_name=CONSOLIDATED,
            kinds={"python", "pandas"},
            tags={
                "provider": CONSOLIDATED,
                "interval": interval,
                "asset_class": asset_class_tag(universe, instruments),
            },
            owners=list(policy.owners),
            required_resource_keys={"warehouse"},
            # Downstream assets receive the stored bars of their partitions through it.
            io_manager_key=IO_MANAGER_KEY,
            check_specs=consolidated_check_specs(key, partitions),
            retry_policy=policy.retry,
            backfill_policy=policy.backfill,
            automation_condition=after_provider_updates(lookback_days),
            description=(
                f"One golden {interval} OHLCV series per canonical instrument, stored in the "
                "warehouse table `ohlcv_consolidated`. Each bar comes from the first provider in "
                f"priority order ({', '.join(p for p in universe.priority if p in sources)}) that "
                "stored it, named in its `source` column; where several providers stored a bar, "
                "`agreement_bps` is the largest deviation of their closes from the chosen one. "
                "Checked like the provider series (schema, completeness against the calendar, "
                "quality score per partition) plus cross-provider agreement."
            ),
        )
        def _consolidated(context: dg.AssetExecutionContext) -> Iterator[object]:
            warehouse: Warehouse = context.resources.warehouse.get_warehouse()
            now = pd.Timestamp.now(tz="UTC")
            written = 0
            evaluations: list[dg.AssetCheckEvaluation] = []
            rows: dict[tuple[str, date], dict[str, object]] = {}  # (instrument, day) -> row
            run_id = context.run.run_id
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
                bars = as_canonical(frame)
                schema, passed = yield from schema_gate(
                    context, f"consolidated {interval}", bars, bar, block
                )
                scope = ConsolidatedScope(interval, block.symbols, block.start, block.end)
                written += warehouse.write_consolidated(frame, scope)
                evaluations += passed
                judgements = _judgements(universe, bar, block, frame, warehouse)
                # The first bars of the block completed earlier partitions' verdicts: their
                # checks and their quality rows.
                earlier = {
                    key_before: _outliers(key, key_before, judged)
                    for key_before, judged in earlier_verdicts(judgements, block)
                }
                evaluations += earlier.values()
                rows.update(
                    revised_rows(
                        warehouse, CONSOLIDATED, interval, earlier, judgements, rows, run_id
                    )
                )
                for part in _partitions(universe, bar, block, frame, bars, schema, judgements, now):
                    found = [
                        completeness_evaluation(key, part.key, part.completeness),
                        _outliers(key, part.key, part.judged),
                        agreement_evaluation(key, part.key, part.agreement, part.tolerance),
                    ]
                    evaluations += found
                    context.add_asset_metadata(part.metadata(found), partition_key=part.key)
                    row = part.quality_row(interval, found, run_id)
                    rows[(str(row["symbol"]), row["day"])] = row  # type: ignore[index]
            # The daily quality report reads these; one upsert for the run.
            warehouse.write_quality(pd.DataFrame(list(rows.values())))
            context.log.info(
                "consolidated %s: stored %d bars for %d partitions",
                interval,
                written,
                len(context.partition_keys),
            )
            yield dg.MaterializeResult(metadata={"run_partitions": len(context.partition_keys)})
            yield from selected(context, evaluations)
            yield from check_outputs(context)

    return _consolidated


def _outliers(key: dg.AssetKey, partition: str, judged: DayJudgement) -> dg.AssetCheckEvaluation:
    return outliers_evaluation(
        key, partition, judged.outliers, final=judged.final, confirmed=judged.confirmed
    )


def _judgements(
    universe: Universe, bar: Interval, block: Block, frame: pd.DataFrame, warehouse: Warehouse
) -> dict[str, dict[pd.Timestamp, DayJudgement]]:
    """Each instrument's day verdicts on its golden series, as the provider assets judge theirs
    (N stored bars before, the two stored bars after), a close confirmed by a second provider
    cleared. Volumes are not judged: a bar filled from another provider has that provider's."""
    instruments = {name: universe.instruments[name] for name in block.symbols}
    since = min(history_start(block.start, bar, i) for i in instruments.values())
    history = warehouse.read_consolidated(bar.name, list(block.symbols), since, block.start)
    following = warehouse.read_consolidated(
        bar.name, list(block.symbols), block.end, block.end + FOLLOWING
    )
    no_volume = {"volume": np.nan, "quote_volume": np.nan}
    out = {}
    for name, instrument in instruments.items():
        out[name] = judge_days(
            history.loc[history["instrument"] == name].assign(**no_volume),
            frame.loc[frame["instrument"] == name].assign(**no_volume),
            instrument,
            bar,
            following.loc[following["instrument"] == name].head(AFTER).assign(**no_volume),
            confirm_bps=universe.tolerance(name).warn_bps,
        )
    return out


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


@dataclass(frozen=True)
class ConsolidatedPartition:
    """What the run measured of one consolidated partition it stored."""

    key: str
    rows: pd.DataFrame
    completeness: CompletenessReport
    agreement: Agreement
    tolerance: Tolerance
    judged: DayJudgement
    score: QualityScore

    def quality_row(
        self, interval: str, evaluations: Sequence[dg.AssetCheckEvaluation], run_id: str
    ) -> dict[str, object]:
        """The partition's row of the quality table (see the daily quality report)."""
        part = DaySymbol.from_key(self.key)
        return quality_row(
            CONSOLIDATED,
            interval,
            part.symbol,
            part.day,
            self.score,
            self.completeness,
            agreement=self.agreement,
            failed=failed_checks(evaluations),
            run_id=run_id,
        )

    def metadata(self, evaluations: Sequence[dg.AssetCheckEvaluation]) -> dict[str, object]:
        return {
            **self.agreement.as_metadata(),
            "expected_bars": self.completeness.expected,
            "missing_bars": self.completeness.missing,
            "failed_checks": failed_summary(evaluations),
            **self.score.as_metadata(),
        }


def _partitions(
    universe: Universe,
    bar: Interval,
    block: Block,
    frame: pd.DataFrame,
    bars: pd.DataFrame,
    schema: SchemaReport,
    judgements: dict[str, dict[pd.Timestamp, DayJudgement]],
    now: pd.Timestamp,
) -> Iterator[ConsolidatedPartition]:
    """Completeness, data errors, agreement and quality score of each partition of ``block``.

    ``frame`` is the block's consolidated series and ``bars`` the same rows as a canonical
    frame (for the completeness check).
    """
    # Each (instrument, day)'s rows located once, not a mask of the block per partition.
    rows = frame.groupby(
        [frame["instrument"], frame["ts"].dt.floor("D")], sort=False, observed=True
    ).indices
    no_rows = np.array([], dtype=np.intp)
    for instrument in block.symbols:
        tolerance = universe.tolerance(instrument)
        calendar = universe.instruments[instrument]
        for day in block.days:
            start = pd.Timestamp(day, tz="UTC")
            inside = rows.get((instrument, start), no_rows)
            part = frame.iloc[inside]
            completeness = check_completeness(
                bars.iloc[inside], calendar, bar, start, start + DAY, now
            )
            agreement = measure_agreement(part, tolerance.warn_bps)
            judged = judgements[instrument].get(start, DayJudgement(start, [], final=True))
            score = quality_score(
                completeness, schema, judged.outliers, None, None, agreement, tolerance
            )
            yield ConsolidatedPartition(
                str(partition_key(day, instrument)),
                part,
                completeness,
                agreement,
                tolerance,
                judged,
                score,
            )


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
