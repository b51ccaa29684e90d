"""OHLCV assets: one per provider and interval, partitioned by UTC date x symbol.

A run covers one partition or a range of them (``BackfillPolicy``): the body cuts its
partitions into blocks (see :func:`~fks_pipelines.defs.partitions.blocks`), fetches each symbol's
days of a block as one window and writes each block once, then records figures per partition.
"""

import dataclasses
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import numpy as np
import pandas as pd

from fks_pipelines.defs.checks import (
    check_outputs,
    completeness_evaluation,
    failed_checks,
    failed_summary,
    outliers_evaluation,
    provider_check_specs,
    schema_gate,
    selected,
)
from fks_pipelines.defs.freshness import freshness_rule, stored_evaluation
from fks_pipelines.defs.io_manager import IO_MANAGER_KEY
from fks_pipelines.defs.partitions import (
    Block,
    DaySymbol,
    blocks,
    day_symbol_partitions,
    partition_key,
)
from fks_pipelines.defs.resources import ProviderResource
from fks_pipelines.market.calendars import CalendarRangeError, require_range
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Universe
from fks_pipelines.providers.errors import QuotaExhausted, RequestRejected
from fks_pipelines.quality.assess import DayJudgement, history_start, judge_days, window_score
from fks_pipelines.quality.bar_errors import AFTER
from fks_pipelines.quality.completeness import CompletenessReport, check_completeness
from fks_pipelines.quality.outliers import OutlierResult
from fks_pipelines.quality.report import quality_row, revised_row
from fks_pipelines.quality.schema import SchemaReport
from fks_pipelines.quality.score import QualityScore
from fks_pipelines.warehouse.store import Scope, Warehouse

DAY = pd.Timedelta(days=1)

# A run that still fails after the provider runtime's own retries (a provider down for minutes,
# a rate limit that outlasted the limiter's longest wait) is tried again later, not by hand.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# What a later attempt cannot mend. A malformed answer is not among them: a provider's
# maintenance page arrives as one, and a retry after the policy's delay may well succeed.
PERMANENT_FAILURES = (RequestRejected, QuotaExhausted, CalendarRangeError)
FOLLOWING = pd.Timedelta(days=10)
"""How far after a window its next stored bars are looked for (a long weekend and holidays)."""


@dataclass(frozen=True)
class AssetPolicy:
    """What every OHLCV asset declares beyond its data: retries, backfill runs, owners."""

    retry: dg.RetryPolicy | None = TRANSIENT_RETRY
    # A run launched by the daemon costs 2.5-3 s of process start here before its first request
    # (one run alone; more when several start at once on 2 cores: bench/run_startup.py), against
    # ~33 ms per partition inside a range run (bench/backfill_dagster.py). A range run fetches
    # each symbol's days as one window and writes them once.
    partitions_per_run: int = 100
    owners: tuple[str, ...] = ()

    @property
    def backfill(self) -> dg.BackfillPolicy:
        return dg.BackfillPolicy.multi_run(max_partitions_per_run=self.partitions_per_run)


DEFAULT_POLICY = AssetPolicy()


@contextmanager
def beta_apis() -> Iterator[None]:
    """Silence Dagster's warnings for the beta and preview APIs these definitions use on purpose.

    ``backfill_policy``, ``MultiPartitionMapping``, ``TimeWindowPartitionMapping``'s
    ``allow_nonexistent_upstream_partitions`` and code references are beta in Dagster 1.13, and
    partitioned asset checks (``AssetCheckSpec(partitions_def=...)``) a preview; their warnings
    would print for every asset on every load of the code location.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield


def ohlcv_asset_key(provider: str, interval: str) -> dg.AssetKey:
    return dg.AssetKey(["ohlcv", provider, interval])


def asset_class_tag(universe: Universe, instruments: Sequence[str]) -> str:
    classes = {universe.instruments[i].asset_class for i in instruments}
    return classes.pop() if len(classes) == 1 else "mixed"


def build_ohlcv_asset(
    provider: str,
    interval: str,
    universe: Universe,
    policy: AssetPolicy = DEFAULT_POLICY,
) -> dg.AssetsDefinition:
    """The ``ohlcv/<provider>/<interval>`` asset: fetch UTC days of symbols, store them.

    Failures that a retry cannot mend (a rejected request or key, an exhausted quota, bars that
    break the schema) fail the run without using the retry policy; transient ones use it.
    """
    spec = universe.provider(provider)
    bar = Interval.parse(interval)
    key = ohlcv_asset_key(provider, interval)
    partitions = day_symbol_partitions(spec.start_date, list(spec.symbols))
    lag = timedelta(minutes=spec.freshness_lag_minutes)
    # Pages of a provider are counted from the first partition, so that a backfill from there
    # needs the fewest requests its paging allows.
    anchor = pd.Timestamp(spec.start_date, tz="UTC")

    with beta_apis():

        @dg.asset(
            key=key,
            partitions_def=partitions,
            # One group per provider: the lineage and the catalog name the provider around
            # nodes whose own label is the interval.
            group_name=provider,
            kinds={"python", "pandas"},
            tags={
                "provider": provider,
                "interval": interval,
                "asset_class": asset_class_tag(universe, list(spec.symbols.values())),
            },
            owners=list(policy.owners),
            required_resource_keys={provider, "warehouse"},
            # One pool per provider (limit in dagster.yaml): concurrent runs and backfills queue for
            # it instead of piling onto the provider; the shared rate limiter stays the hard limit.
            pool=provider,
            # Downstream assets receive the stored bars of their partitions through it.
            io_manager_key=IO_MANAGER_KEY,
            retry_policy=policy.retry,
            backfill_policy=policy.backfill,
            check_specs=provider_check_specs(key, partitions, freshness_rule(lag)),
            description=(
                f"Closed {interval} OHLCV bars from {provider}, one partition per UTC day and "
                "symbol, stored in the warehouse table `ohlcv`. Re-materialising a partition "
                "replaces exactly its rows; a backfill runs ranges of partitions, one fetch per "
                "symbol and one write per run. Every partition records its own check results "
                "and quality score."
            ),
        )
        def _ohlcv(context: dg.AssetExecutionContext) -> Iterator[object]:
            source: ProviderResource = getattr(context.resources, provider)
            warehouse: Warehouse = context.resources.warehouse.get_warehouse()
            now = pd.Timestamp.now(tz="UTC")
            written = 0
            evaluations: list[dg.AssetCheckEvaluation] = []
            rows: dict[tuple[str, date], dict[str, object]] = {}  # (symbol, day) -> quality row
            run_id = context.run.run_id
            try:
                with source.get_client() as client:
                    for block in blocks(context.partition_keys):
                        # Before any fetch: a window the calendar cannot judge stores nothing.
                        _require_calendar(universe, provider, block)
                        windows = [
                            client.fetch_ohlcv(symbol, bar, block.start, block.end, anchor=anchor)
                            for symbol in block.symbols
                        ]
                        frame = pd.concat(windows, ignore_index=True)
                        schema, passed = yield from schema_gate(
                            context, f"{provider} {interval}", frame, bar, block
                        )
                        scope = Scope(provider, interval, block.symbols, block.start, block.end)
                        written += warehouse.write_ohlcv(frame, scope)
                        evaluations += passed
                        judgements = _judgements(universe, provider, bar, block, frame, warehouse)
                        # A later bar revealed an earlier partition's fault (or cleared it): the
                        # verdict lands on that partition (its check and its quality row).
                        earlier = {
                            key_before: outliers_evaluation(
                                key, key_before, judged.outliers, final=judged.final
                            )
                            for key_before, judged in earlier_verdicts(judgements, block)
                        }
                        evaluations += earlier.values()
                        rows.update(
                            revised_rows(
                                warehouse, provider, interval, earlier, judgements, rows, run_id
                            )
                        )
                        for part in _assess(
                            universe, provider, bar, block, frame, schema, judgements, now
                        ):
                            found = [
                                part.outliers_evaluation(key),
                                part.completeness_evaluation(key),
                                stored_evaluation(key, part.key, lag, now),
                            ]
                            evaluations += found
                            context.add_asset_metadata(part.metadata(found), partition_key=part.key)
                            row = part.quality_row(provider, interval, found, run_id)
                            rows[(str(row["symbol"]), row["day"])] = row  # type: ignore[index]
                    work = client.metadata()
                # The daily quality report reads these; one upsert for the run.
                warehouse.write_quality(pd.DataFrame(list(rows.values())))
            except PERMANENT_FAILURES as exc:
                raise dg.Failure(description=str(exc), allow_retries=False) from exc
            context.log.info(
                "%s %s: stored %d bars for %d partitions (%d upstream requests, %d cache hits)",
                provider,
                interval,
                written,
                len(context.partition_keys),
                work["requests"],
                work["cache_hits"],
            )
            # Figures of the whole run (requests, cache, limiter); the per-partition ones (rows,
            # missing bars, failed checks, quality score) were added to each partition's
            # materialisation, and each partition gets its own check evaluations.
            yield dg.MaterializeResult(
                metadata={**work, "run_partitions": len(context.partition_keys)}
            )
            yield from selected(context, evaluations)
            yield from check_outputs(context)

    return _ohlcv


@dataclass(frozen=True)
class PartitionQuality:
    """What the run measured of one partition it stored."""

    key: str
    rows: pd.DataFrame
    outliers: list[OutlierResult]
    completeness: CompletenessReport
    score: QualityScore
    final: bool = True

    def outliers_evaluation(self, asset: dg.AssetKey) -> dg.AssetCheckEvaluation:
        return outliers_evaluation(asset, self.key, self.outliers, final=self.final)

    def completeness_evaluation(self, asset: dg.AssetKey) -> dg.AssetCheckEvaluation:
        return completeness_evaluation(asset, self.key, self.completeness)

    def quality_row(
        self,
        provider: str,
        interval: str,
        evaluations: Sequence[dg.AssetCheckEvaluation],
        run_id: str,
    ) -> dict[str, object]:
        """The partition's row of the quality table (see the daily quality report)."""
        part = DaySymbol.from_key(self.key)
        return quality_row(
            provider,
            interval,
            part.symbol,
            part.day,
            self.score,
            self.completeness,
            outliers=self.outliers,
            failed=failed_checks(evaluations),
            run_id=run_id,
        )

    def metadata(self, evaluations: Sequence[dg.AssetCheckEvaluation]) -> dict[str, object]:
        """The partition's materialisation metadata, naming the checks it failed."""
        metadata: dict[str, object] = {
            "rows": len(self.rows),
            "expected_bars": self.completeness.expected,
            "missing_bars": self.completeness.missing,
            "failed_checks": failed_summary(evaluations),
            **self.score.as_metadata(),
        }
        if len(self.rows):
            metadata["first_bar"] = dg.MetadataValue.timestamp(self.rows["ts"].iloc[0])
            metadata["last_bar"] = dg.MetadataValue.timestamp(self.rows["ts"].iloc[-1])
        return metadata


def _require_calendar(universe: Universe, provider: str, block: Block) -> None:
    """Fail (permanently) before fetching when a block's days lie outside a calendar's range."""
    last = (block.end - DAY).date()
    for symbol in block.symbols:
        require_range(
            universe.instruments[universe.canonical(provider, symbol)], block.start.date(), last
        )


def _judgements(
    universe: Universe,
    provider: str,
    bar: Interval,
    block: Block,
    frame: pd.DataFrame,
    warehouse: Warehouse,
) -> dict[str, dict[pd.Timestamp, DayJudgement]]:
    """Each symbol's day verdicts: its bars against the N bars stored before the block (read as
    bars) and the two stored bars after it, if any, so that the verdict does not depend on the
    cut."""
    since = min(
        history_start(block.start, bar, universe.instruments[universe.canonical(provider, s)])
        for s in block.symbols
    )
    history = warehouse.read_ohlcv(provider, bar.name, list(block.symbols), since, block.start)
    following = warehouse.read_ohlcv(
        provider, bar.name, list(block.symbols), block.end, block.end + FOLLOWING
    )
    histories = dict(list(history.groupby("symbol", sort=False, observed=True)))
    nexts = dict(list(following.groupby("symbol", sort=False, observed=True)))
    out = {}
    for symbol in block.symbols:
        instrument = universe.instruments[universe.canonical(provider, symbol)]
        out[symbol] = judge_days(
            histories.get(symbol, history.iloc[:0]),
            frame.loc[frame["symbol"] == symbol],
            instrument,
            bar,
            nexts.get(symbol, following.iloc[:0]).head(AFTER),
        )
    return out


def earlier_verdicts(
    judgements: dict[str, dict[pd.Timestamp, DayJudgement]], block: Block
) -> Iterator[tuple[str, DayJudgement]]:
    """Verdicts of partitions before the block that its first bars completed."""
    for symbol, days in judgements.items():
        for day, judged in days.items():
            if day < block.start:
                yield str(partition_key(day.date(), symbol)), judged


def revised_rows(
    warehouse: Warehouse,
    provider: str,
    interval: str,
    earlier: dict[str, dg.AssetCheckEvaluation],
    judgements: dict[str, dict[pd.Timestamp, DayJudgement]],
    pending: dict[tuple[str, date], dict[str, object]],
    run_id: str,
) -> dict[tuple[str, date], dict[str, object]]:
    """The quality rows of the ``earlier`` partitions with their final outliers verdict: this
    run's own row of an earlier block (``pending``) or the stored one (a partition never stored
    has no row to revise)."""
    if not earlier:
        return {}
    parts = [DaySymbol.from_key(k) for k in earlier]
    days = [p.day for p in parts]
    stored = warehouse.read_quality(min(days), max(days) + timedelta(days=1), [provider])
    found = {
        (str(r["symbol"]), pd.Timestamp(r["day"]).date()): r
        for r in stored.to_dict("records")
        if r["interval"] == interval
    }
    revised = {}
    for part, evaluation in zip(parts, earlier.values(), strict=True):
        at = (part.symbol, part.day)
        row = pending.get(at) or found.get(at)
        if row is None:
            continue
        judged = judgements[part.symbol][pd.Timestamp(part.day, tz="UTC")]
        failed = failed_checks([evaluation])
        revised[at] = revised_row(row, judged.outliers, failed[0] if failed else None, run_id)
    return revised


def _assess(
    universe: Universe,
    provider: str,
    bar: Interval,
    block: Block,
    frame: pd.DataFrame,
    schema: SchemaReport,
    judgements: dict[str, dict[pd.Timestamp, DayJudgement]],
    now: pd.Timestamp,
) -> Iterator[PartitionQuality]:
    """Data errors, completeness and quality score of each partition of ``block``'s bars.

    Each bar is judged against the N bars before it (stored history included, read as bars) and
    the two bars after it: the verdict of a partition is the same whether it ran alone, in a
    range or in a backfill. Stale runs of daily closes are counted across partitions and reported
    on the partition where the run becomes visible.
    """
    spec = universe.provider(provider)
    rows = frame.groupby(
        [frame["symbol"], frame["ts"].dt.floor("D")], sort=False, observed=True
    ).indices
    no_rows = np.array([], dtype=np.intp)
    daily = bar.seconds >= 86400
    for symbol in block.symbols:
        instrument = universe.instruments[universe.canonical(provider, symbol)]
        by_day = judgements[symbol]
        for day in block.days:
            start = pd.Timestamp(day, tz="UTC")
            part = frame.iloc[rows.get((symbol, start), no_rows)]
            report = check_completeness(part, instrument, bar, start, start + DAY, now)
            judged = by_day.get(start)
            if judged is not None and daily and judged.stale_runs:
                report = dataclasses.replace(
                    report,
                    stale_runs=judged.stale_runs,
                    stale_bars=max(report.stale_bars, judged.stale_runs),
                    stale_examples=judged.stale_examples,
                )
            outliers = judged.outliers if judged is not None else []
            score = window_score(
                report, schema, outliers, start + DAY, now, spec.freshness_lag_minutes * 60.0
            )
            yield PartitionQuality(
                str(partition_key(day, symbol)),
                part,
                outliers,
                report,
                score,
                final=judged.final if judged is not None else True,
            )


def build_ohlcv_assets(
    universe: Universe, policy: AssetPolicy = DEFAULT_POLICY
) -> list[dg.AssetsDefinition]:
    """Every provider's OHLCV assets, one per interval the universe lists for it."""
    assets = [
        build_ohlcv_asset(provider, interval, universe, policy)
        for provider, spec in universe.providers.items()
        for interval in spec.intervals
    ]
    return with_code_references(assets)


def with_code_references(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """``assets`` with a link to their source in the UI."""
    with beta_apis():
        return list(dg.with_source_code_references(assets))
