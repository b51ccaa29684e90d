"""The daily quality report asset and its schedule.

``quality/daily_report`` is partitioned by UTC day; a partition reads the stored quality rows
(table ``ohlcv_quality``) of that day and the days before it and records the report of
:func:`~fks_pipelines.quality.report.daily_report` as its materialisation metadata: a Markdown
page the UI renders, and numbers (mean and lowest score, missing bars, high-severity outliers,
failed checks, mean score per provider and interval) that the asset's Plots view draws per day.
A backfill of many days runs as ranges; each day of a range gets a materialisation of its own.
"""

from collections.abc import Sequence
from datetime import UTC, date, timedelta

import dagster as dg

from fks_pipelines.defs.assets import beta_apis, with_code_references
from fks_pipelines.defs.partitions import DATE
from fks_pipelines.market.universe import Universe
from fks_pipelines.quality.report import daily_report, history_window
from fks_pipelines.warehouse.store import Warehouse

REPORT_KEY = dg.AssetKey(["quality", "daily_report"])
GROUP = "quality"
REPORT_SCHEDULE = "quality_daily_report"
# 45 minutes after the provider schedules (00:15) ask for the day. Rows stored later (end-of-day
# providers, catch-up runs) show when that day's report is materialised again.
REPORT_CRON = "0 1 * * *"


def build_quality_report_asset(
    universe: Universe,
    deps: Sequence[dg.AssetKey],
    start: date,
    *,
    history_days: int = 14,
    partitions_per_run: int = 100,
) -> dg.AssetsDefinition:
    """The ``quality/daily_report`` asset: one quality report per UTC day since ``start``.

    Args:
        universe: Its provider priority orders the report's rows.
        deps: The OHLCV assets whose quality the report shows (partitioned by date x symbol);
            a report day depends on that date of every symbol. None may start after ``start``.
        start: The first day reported.
        history_days: Days each report's sparklines cover, the reported day included.
        partitions_per_run: Most days one backfill run reports.

    Returns:
        The asset; it needs the ``warehouse`` resource.
    """
    with beta_apis():

        @dg.asset(
            key=REPORT_KEY,
            # The same daily definition as the date dimension of the OHLCV assets, so that the
            # mapping below pairs a report day with that date of every symbol.
            partitions_def=dg.DailyPartitionsDefinition(start_date=start.isoformat()),
            deps=[
                dg.AssetDep(
                    key,
                    partition_mapping=dg.MultiToSingleDimensionPartitionMapping(
                        partition_dimension_name=DATE
                    ),
                )
                for key in deps
            ],
            group_name=GROUP,
            kinds={"python"},
            required_resource_keys={"warehouse"},
            backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run),
            description=(
                "A daily data quality report: for each provider (and the consolidated series), "
                "interval and symbol, the UTC day's quality score, missing bars, outliers, "
                f"cross-provider agreement and failed checks, with the score's last {history_days} "
                "days as a sparkline. Read from the warehouse table `ohlcv_quality`; shown as "
                "each partition's `report` metadata, its figures plotted per day."
            ),
        )
        def _report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
            warehouse: Warehouse = context.resources.warehouse.get_warehouse()
            days = sorted(date.fromisoformat(key) for key in context.partition_keys)
            # One read for the whole range, history of its first day included.
            rows = warehouse.read_quality(*history_window(days[0], days[-1], history_days))
            for day in days:
                report = daily_report(rows, day, history_days, priority=universe.priority)
                context.add_asset_metadata(
                    {"report": dg.MetadataValue.md(report.markdown), **report.metadata},
                    partition_key=day.isoformat(),
                )
            context.log.info(
                "quality report of %d days from %d stored quality rows", len(days), len(rows)
            )
            return dg.MaterializeResult(metadata={"run_partitions": len(days)})

    [asset] = with_code_references([_report])
    return asset


def build_report_schedule(asset: dg.AssetsDefinition) -> dg.ScheduleDefinition:
    """The ``quality_daily_report`` schedule: at 01:00 UTC, the report of the previous UTC day.

    Args:
        asset: The asset of :func:`build_quality_report_asset`.
    """
    partitions = asset.partitions_def
    if not isinstance(partitions, dg.TimeWindowPartitionsDefinition):
        raise TypeError(f"{asset.key.to_user_string()} is not partitioned by day")
    first = partitions.start.date()
    job = dg.define_asset_job(
        f"{REPORT_SCHEDULE}_job",
        selection=[asset.key],
        description=f"Materialise days of {asset.key.to_user_string()}.",
    )

    @dg.schedule(
        name=REPORT_SCHEDULE,
        job=job,
        cron_schedule=REPORT_CRON,
        execution_timezone="UTC",
        description=(
            "Daily at 01:00 UTC: the quality report of the previous UTC day, from the quality "
            "rows the OHLCV assets stored for it."
        ),
    )
    def _daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
        if day < first:
            return dg.SkipReason(f"{day} is before the first reported day, {first}")
        return dg.RunRequest(run_key=day.isoformat(), partition_key=day.isoformat())

    return _daily
