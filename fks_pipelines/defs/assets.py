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
import pandas as pd
from pandera.errors import SchemaErrors

from fks_pipelines.defs.partitions import Block, blocks, day_symbol_partitions, partition_key
from fks_pipelines.defs.resources import ProviderResource
from fks_pipelines.market.calendars import expected_bar_opens
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

# What a later attempt cannot mend. A malformed answer is not among them: a provider's
# maintenance page arrives as one, and a retry after the policy's delay may well succeed.
PERMANENT_FAILURES = (RequestRejected, QuotaExhausted, SchemaErrors)


@dataclass(frozen=True)
class AssetPolicy:
    """What every OHLCV asset declares beyond its data: retries, backfill runs, owners."""

    retry: dg.RetryPolicy | None = TRANSIENT_RETRY
    # Measured here: ~234 ms of Dagster overhead per run against ~33 ms per partition inside a
    # range run. A range run fetches each symbol's days as one window and writes them once.
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
            description=(
                f"Closed {interval} OHLCV bars from {provider}, one partition per UTC day and "
                "symbol, stored in the warehouse table `ohlcv`. Re-materialising a partition "
                "replaces exactly its rows; a backfill runs ranges of partitions, one fetch per "
                "symbol and one write per run."
            ),
        )
        def _ohlcv(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            source: ProviderResource = getattr(context.resources, provider)
            warehouse = context.resources.warehouse.get_warehouse()
            written = 0
            try:
                with source.get_client() as client:
                    for block in blocks(context.partition_keys):
                        windows = [
                            client.fetch_ohlcv(symbol, bar, block.start, block.end, anchor=anchor)
                            for symbol in block.symbols
                        ]
                        frame = validate(pd.concat(windows, ignore_index=True))
                        scope = Scope(provider, interval, block.symbols, block.start, block.end)
                        written += warehouse.write_ohlcv(frame, scope)
                        _record_partitions(context, universe, provider, bar, block, frame)
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
            # Figures of the whole run (requests, cache, limiter); the per-partition ones (rows,
            # missing bars) were added to each partition's materialisation above.
            return dg.MaterializeResult(
                metadata={**work, "run_partitions": len(context.partition_keys)}
            )

    return _ohlcv


def _record_partitions(
    context: dg.AssetExecutionContext,
    universe: Universe,
    provider: str,
    bar: Interval,
    block: Block,
    frame: pd.DataFrame,
) -> None:
    """Rows, expected and missing bars, first and last bar of each partition of ``block``."""
    for symbol in block.symbols:
        bars = frame.loc[frame["symbol"] == symbol, "ts"]
        instrument = universe.instruments[universe.canonical(provider, symbol)]
        expected = expected_bar_opens(instrument, bar, block.start, block.end)
        missing = expected[~expected.isin(bars)]
        rows_by_day = bars.dt.floor("D").value_counts()
        expected_by_day = expected.floor("D").value_counts()
        missing_by_day = missing.floor("D").value_counts()
        first_by_day = bars.groupby(bars.dt.floor("D")).min()
        last_by_day = bars.groupby(bars.dt.floor("D")).max()
        for day in block.days:
            stamp = pd.Timestamp(day, tz="UTC")
            metadata: dict[str, object] = {
                "rows": int(rows_by_day.get(stamp, 0)),
                "expected_bars": int(expected_by_day.get(stamp, 0)),
                "missing_bars": int(missing_by_day.get(stamp, 0)),
            }
            if stamp in first_by_day.index:
                metadata["first_bar"] = dg.MetadataValue.timestamp(first_by_day[stamp])
                metadata["last_bar"] = dg.MetadataValue.timestamp(last_by_day[stamp])
            context.add_asset_metadata(metadata, partition_key=partition_key(day, symbol))


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
