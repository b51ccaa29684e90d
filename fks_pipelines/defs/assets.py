"""OHLCV assets: one per provider and interval, partitioned by UTC date x symbol.

A run covers one partition or a range of them (``BackfillPolicy``): the body cuts its
partitions into blocks (see :func:`~fks_pipelines.defs.partitions.blocks`), fetches each symbol's
days of a block as one window and writes each block once, then records figures per partition.
"""

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import numpy as np
import pandas as pd

from fks_pipelines.defs.checks import (
    completeness_result,
    outliers_result,
    provider_check_specs,
    schema_failure,
    schema_result,
)
from fks_pipelines.defs.partitions import Block, blocks, day_symbol_partitions, partition_key
from fks_pipelines.defs.resources import ProviderResource
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Universe
from fks_pipelines.providers.errors import QuotaExhausted, RequestRejected
from fks_pipelines.quality.assess import detect_outliers, history_start, window_score
from fks_pipelines.quality.completeness import CompletenessReport, check_completeness
from fks_pipelines.quality.outliers import OutlierResult
from fks_pipelines.quality.schema import SchemaReport, check_schema
from fks_pipelines.warehouse.store import Scope, Warehouse

GROUP = "market_data"
DAY = pd.Timedelta(days=1)

# A run that still fails after the provider runtime's own retries (a provider down for minutes,
# a rate limit that outlasted the limiter's longest wait) is tried again later, not by hand.
TRANSIENT_RETRY = dg.RetryPolicy(
    max_retries=3, delay=60, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)

# What a later attempt cannot mend. A malformed answer is not among them: a provider's
# maintenance page arrives as one, and a retry after the policy's delay may well succeed.
PERMANENT_FAILURES = (RequestRejected, QuotaExhausted)


@dataclass(frozen=True)
class AssetPolicy:
    """What every OHLCV asset declares beyond its data: retries, backfill runs, owners."""

    retry: dg.RetryPolicy | None = TRANSIENT_RETRY
    # A run launched by the daemon costs ~7-11 s of process starts here before its first
    # request, against ~33 ms per partition inside a range run (bench/backfill_dagster.py). A
    # range run fetches each symbol's days as one window and writes them once.
    partitions_per_run: int = 100
    owners: tuple[str, ...] = ()

    @property
    def backfill(self) -> dg.BackfillPolicy:
        return dg.BackfillPolicy.multi_run(max_partitions_per_run=self.partitions_per_run)


DEFAULT_POLICY = AssetPolicy()


@contextmanager
def beta_apis() -> Iterator[None]:
    """Silence Dagster's warnings for the beta APIs these definitions use on purpose.

    ``backfill_policy``, ``MultiPartitionMapping``, ``TimeWindowPartitionMapping``'s
    ``allow_nonexistent_upstream_partitions`` and code references are beta in Dagster 1.13;
    their warnings would print for every asset on every load of the code location.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
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
    # Pages of a provider are counted from the first partition, so that a backfill from there
    # needs the fewest requests its paging allows.
    anchor = pd.Timestamp(spec.start_date, tz="UTC")

    with beta_apis():

        @dg.asset(
            key=ohlcv_asset_key(provider, interval),
            partitions_def=day_symbol_partitions(spec.start_date, list(spec.symbols)),
            group_name=GROUP,
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
            retry_policy=policy.retry,
            backfill_policy=policy.backfill,
            check_specs=provider_check_specs(ohlcv_asset_key(provider, interval)),
            description=(
                f"Closed {interval} OHLCV bars from {provider}, one partition per UTC day and "
                "symbol, stored in the warehouse table `ohlcv`. Re-materialising a partition "
                "replaces exactly its rows; a backfill runs ranges of partitions, one fetch per "
                "symbol and one write per run."
            ),
        )
        def _ohlcv(
            context: dg.AssetExecutionContext,
        ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
            source: ProviderResource = getattr(context.resources, provider)
            warehouse: Warehouse = context.resources.warehouse.get_warehouse()
            now = pd.Timestamp.now(tz="UTC")
            written = rows_checked = 0
            outliers: list[OutlierResult] = []
            completeness: dict[str, CompletenessReport] = {}
            try:
                with source.get_client() as client:
                    for block in blocks(context.partition_keys):
                        windows = [
                            client.fetch_ohlcv(symbol, bar, block.start, block.end, anchor=anchor)
                            for symbol in block.symbols
                        ]
                        frame = pd.concat(windows, ignore_index=True)
                        schema = check_schema(frame, bar)
                        if not schema.passed:
                            yield schema_result(schema, context.partition_keys)
                            raise dg.Failure(
                                description=f"{provider} {interval}: {schema_failure(schema)}",
                                allow_retries=False,
                            )
                        scope = Scope(provider, interval, block.symbols, block.start, block.end)
                        written += warehouse.write_ohlcv(frame, scope)
                        rows_checked += schema.rows
                        found, reports = _assess(
                            context, universe, provider, bar, block, frame, schema, warehouse, now
                        )
                        outliers += found
                        completeness.update(reports)
                    work = client.metadata()
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
            passed = SchemaReport(
                rows=rows_checked, passed=True, failures=0, failing_rows=0, checks={}
            )
            # Figures of the whole run (requests, cache, limiter); the per-partition ones (rows,
            # missing bars, quality score) were added to each partition's materialisation.
            yield dg.MaterializeResult(
                metadata={**work, "run_partitions": len(context.partition_keys)},
                check_results=[
                    schema_result(passed, context.partition_keys),
                    outliers_result(outliers),
                    completeness_result(completeness),
                ],
            )

    return _ohlcv


def _assess(
    context: dg.AssetExecutionContext,
    universe: Universe,
    provider: str,
    bar: Interval,
    block: Block,
    frame: pd.DataFrame,
    schema: SchemaReport,
    warehouse: Warehouse,
    now: pd.Timestamp,
) -> tuple[list[OutlierResult], dict[str, CompletenessReport]]:
    """Outliers and completeness of ``block``'s stored bars; per-partition figures and score.

    Outliers are scored against the bars stored before the block too, so that a daily
    partition's single bar has a baseline.
    """
    outliers: list[OutlierResult] = []
    reports: dict[str, CompletenessReport] = {}
    spec = universe.provider(provider)
    # One history query for the block, and each (symbol, day)'s rows located once.
    history = warehouse.read_ohlcv(
        provider, bar.name, list(block.symbols), history_start(block.start, bar), block.start
    )
    histories = dict(list(history.groupby("symbol", sort=False, observed=True)))
    rows = frame.groupby(
        [frame["symbol"], frame["ts"].dt.floor("D")], sort=False, observed=True
    ).indices
    no_rows = np.array([], dtype=np.intp)
    for symbol in block.symbols:
        instrument = universe.instruments[universe.canonical(provider, symbol)]
        own = frame.loc[frame["symbol"] == symbol]
        found = detect_outliers(histories.get(symbol, history.iloc[:0]), own, block.start)
        outliers += found
        for day in block.days:
            start = pd.Timestamp(day, tz="UTC")
            part = frame.iloc[rows.get((symbol, start), no_rows)]
            report = check_completeness(part, instrument, bar, start, start + DAY, now)
            key = partition_key(day, symbol)
            reports[str(key)] = report
            score = window_score(
                report, schema, found, start + DAY, now, spec.freshness_lag_minutes * 60.0
            )
            metadata: dict[str, object] = {
                "rows": len(part),
                "expected_bars": report.expected,
                "missing_bars": report.missing,
                **score.as_metadata(),
            }
            if len(part):
                metadata["first_bar"] = dg.MetadataValue.timestamp(part["ts"].iloc[0])
                metadata["last_bar"] = dg.MetadataValue.timestamp(part["ts"].iloc[-1])
            context.add_asset_metadata(metadata, partition_key=key)
    return outliers, reports


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
