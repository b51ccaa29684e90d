"""Parquet exports of the consolidated series: one asset per interval, one file per partition.

``exports/consolidated/<interval>`` is partitioned by UTC month x instrument; each partition is
the file :func:`~fks_pipelines.warehouse.export.month_path` names, rewritten whole by
:func:`~fks_pipelines.warehouse.export.export_month`. It depends on the days of that month of
``ohlcv/consolidated/<interval>`` and is rewritten once any of them was consolidated again.
"""

from collections.abc import Sequence
from datetime import date
from pathlib import Path

import dagster as dg

from fks_pipelines.defs.assets import DEFAULT_POLICY, AssetPolicy, beta_apis, with_code_references
from fks_pipelines.defs.consolidated import (
    consolidated_asset_key,
    consolidated_instruments,
    consolidated_sources,
)
from fks_pipelines.defs.partitions import DATE, SYMBOL
from fks_pipelines.market.universe import Universe
from fks_pipelines.warehouse.export import DATASET, export_month
from fks_pipelines.warehouse.store import Warehouse

MONTH = "month"
MONTH_FORMAT = "%Y-%m"  # partition keys read like the folders: 2024-01


def export_asset_key(interval: str) -> dg.AssetKey:
    return dg.AssetKey(["exports", "consolidated", interval])


def after_consolidation() -> dg.AutomationCondition:
    """Rewrite a month's file once any of its days was consolidated and none is in progress.

    ``eager()`` without three of its parts: ``in_latest_time_window`` (only the current month:
    the last day of a month is consolidated after the month ended, and a backfill or catch-up
    re-consolidates older days), ``~any_deps_missing`` (a month with a day never consolidated,
    an equity's weekends, would never be exported) and ``newly_missing`` (a new month would be
    exported on its first minute, before it has any bar). Waiting while days of the month are
    in progress writes a month once per backfill, not once per range run.
    """
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after consolidation")


def month_symbol_partitions(
    first_day: date, symbols: Sequence[str]
) -> dg.MultiPartitionsDefinition:
    """``month`` (UTC, up to the current month) x ``symbol``; keys read ``2024-01|BTC-USD``."""
    return dg.MultiPartitionsDefinition(
        {
            MONTH: dg.MonthlyPartitionsDefinition(
                start_date=first_day.strftime(MONTH_FORMAT), fmt=MONTH_FORMAT, end_offset=1
            ),
            SYMBOL: dg.StaticPartitionsDefinition(list(symbols)),
        }
    )


def build_export_asset(
    interval: str, universe: Universe, export_dir: Path, policy: AssetPolicy = DEFAULT_POLICY
) -> dg.AssetsDefinition:
    """The ``exports/consolidated/<interval>`` asset: one Parquet file per month x instrument."""
    sources = consolidated_sources(universe, interval)
    first_day = min(universe.providers[p].start_date for p in sources)
    partitions = month_symbol_partitions(first_day, consolidated_instruments(universe, interval))
    with beta_apis():
        upstream = dg.AssetDep(
            consolidated_asset_key(interval),
            partition_mapping=dg.MultiPartitionMapping(
                {
                    # The current month holds days that are no partitions yet.
                    DATE: dg.DimensionPartitionMapping(
                        MONTH,
                        dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True),
                    ),
                    SYMBOL: dg.DimensionPartitionMapping(SYMBOL, dg.IdentityPartitionMapping()),
                }
            ),
        )

        @dg.asset(
            key=export_asset_key(interval),
            deps=[upstream],
            partitions_def=partitions,
            group_name="exports",
            kinds={"python", "parquet"},
            tags={"interval": interval},
            owners=list(policy.owners),
            required_resource_keys={"warehouse"},
            retry_policy=policy.retry,
            backfill_policy=policy.backfill,
            automation_condition=after_consolidation(),
            description=(
                f"The consolidated {interval} series as Parquet for pandas, polars and DuckDB: "
                f"`{export_dir / DATASET}/interval={interval}/instrument=<instrument>/"
                "month=<YYYY-MM>/data.parquet`, one hive-partitioned dataset. A partition is "
                "one file, replaced whole (atomically) when re-materialised; a month without "
                "bars has none. Rewritten once days of its month are consolidated again."
            ),
        )
        def _export(context: dg.AssetExecutionContext) -> None:
            warehouse: Warehouse = context.resources.warehouse.get_warehouse()
            rows = 0
            for key in context.partition_keys:
                part = partitions.get_partition_key_from_str(key).keys_by_dimension
                exported = export_month(warehouse, export_dir, interval, part[SYMBOL], part[MONTH])
                rows += exported.rows
                context.add_asset_metadata(
                    {
                        "path": dg.MetadataValue.path(str(exported.path)),
                        "rows": exported.rows,
                        "bytes": exported.bytes,
                    },
                    partition_key=key,
                )
            context.log.info(
                "export %s: wrote %d rows for %d partitions",
                interval,
                rows,
                len(context.partition_keys),
            )

    return _export


def build_export_assets(
    universe: Universe, export_dir: Path, policy: AssetPolicy = DEFAULT_POLICY
) -> list[dg.AssetsDefinition]:
    """One export asset per interval of the consolidated series."""
    intervals = dict.fromkeys(i for spec in universe.providers.values() for i in spec.intervals)
    return with_code_references(
        [build_export_asset(interval, universe, export_dir, policy) for interval in intervals]
    )
