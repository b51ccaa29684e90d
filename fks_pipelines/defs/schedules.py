"""Daily schedules and the catch-up sensor of the provider OHLCV assets.

Each provider asset has a partitioned job and a schedule that, shortly after a UTC day closes,
asks for that day's partitions of the symbols that traded: crypto every day, equities only on
days their exchange's calendar gives bars for (see :mod:`fks_pipelines.market.calendars`). A
schedule tick asks for adjacent symbols as one range run.

The catch-up sensor looks back over recent finished days and launches what is missing or failed,
as range runs cut like a backfill under the assets' ``BackfillPolicy``. It gives up on a partition
after a set number of launches (a missing key or an unknown symbol does not mend itself) and says
so in the sensor's log.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import dagster as dg

from fks_pipelines.defs.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    partition_key,
    run_ranges,
)
from fks_pipelines.market.calendars import has_bars
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument, Universe

# Minutes past 00:00 UTC at which a day's partitions are asked for: late enough for end-of-day
# providers to have published a US session (it ends 21:00 UTC at the latest).
DAILY_CRON = "15 0 * * *"
TRIGGER_TAG = "fks/trigger"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DailyTarget:
    """A partitioned OHLCV asset as schedules see it: its job and which symbols trade when."""

    asset: dg.AssetsDefinition
    interval: Interval
    instruments: dict[str, Instrument]  # partition symbol -> instrument, in partition order
    start: date
    partitions_per_run: int
    freshness_lag: timedelta = timedelta(hours=2)

    @property
    def key(self) -> dg.AssetKey:
        return self.asset.key

    @property
    def name(self) -> str:
        return "_".join(self.key.path)

    @cached_property
    def job(self) -> dg.UnresolvedAssetJobDefinition:
        return dg.define_asset_job(
            f"{self.name}_job",
            selection=[self.key],
            description=f"Materialise partitions of {self.key.to_user_string()}.",
        )

    def trading_keys(self, days: Iterable[date]) -> list[dg.MultiPartitionKey]:
        """Partitions of ``days`` whose symbol is expected to have bars that day."""
        return [
            partition_key(day, symbol)
            for day in days
            if day >= self.start
            for symbol, instrument in self.instruments.items()
            if has_bars(instrument, self.interval, day)
        ]

    def run_requests(
        self, keys: Sequence[str], run_key_prefix: str | None, tags: dict[str, str]
    ) -> list[dg.RunRequest]:
        """Range runs covering ``keys``; a single partition runs as itself."""
        requests = []
        for first, last in run_ranges(keys, list(self.instruments), self.partitions_per_run):
            run_key = f"{run_key_prefix}:{first}:{last}" if run_key_prefix else None
            if first == last:
                requests.append(
                    dg.RunRequest(
                        run_key=run_key, job_name=self.job.name, partition_key=first, tags=tags
                    )
                )
            else:
                requests.append(
                    dg.RunRequest(
                        run_key=run_key,
                        job_name=self.job.name,
                        tags={**tags, RANGE_START_TAG: first, RANGE_END_TAG: last},
                    )
                )
        return requests


def provider_targets(
    universe: Universe, assets: Sequence[dg.AssetsDefinition], partitions_per_run: int
) -> list[DailyTarget]:
    """The schedule targets of provider OHLCV assets (tagged with their provider and interval)."""
    targets = []
    for asset in assets:
        tags = asset.tags_by_key[asset.key]
        spec = universe.provider(tags["provider"])
        targets.append(
            DailyTarget(
                asset=asset,
                interval=Interval.parse(tags["interval"]),
                instruments={s: universe.instruments[i] for s, i in spec.symbols.items()},
                start=spec.start_date,
                partitions_per_run=partitions_per_run,
                freshness_lag=timedelta(minutes=spec.freshness_lag_minutes),
            )
        )
    return targets


def build_daily_schedule(target: DailyTarget) -> dg.ScheduleDefinition:
    """Materialise the UTC day that closed before each tick, for the symbols that traded."""

    @dg.schedule(
        name=f"{target.name}_daily",
        job=target.job,
        cron_schedule=DAILY_CRON,
        execution_timezone="UTC",
        description=(
            f"Each day at {DAILY_CRON} UTC: the previous UTC day of "
            f"{target.key.to_user_string()}, for symbols whose market traded that day."
        ),
    )
    def _daily(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        day = context.scheduled_execution_time.astimezone(UTC).date() - timedelta(days=1)
        keys = target.trading_keys([day])
        if not keys:
            return dg.SkipReason(f"no symbol of {target.key.to_user_string()} traded on {day}")
        return target.run_requests(keys, day.isoformat(), {TRIGGER_TAG: "schedule"})

    return _daily


def build_catchup_sensor(
    targets: Sequence[DailyTarget],
    lookback_days: int,
    max_attempts: int,
    interval_s: int,
    clock: Clock = utc_now,
) -> dg.SensorDefinition:
    """Launch missing or failed partitions of the last ``lookback_days`` finished UTC days."""

    @dg.sensor(
        name="ohlcv_catchup",
        jobs=[t.job for t in targets],
        minimum_interval_seconds=interval_s,
        description=(
            f"Every {interval_s} s: finds partitions of the last {lookback_days} finished UTC "
            "days that are missing or failed (days without a session excepted) and launches "
            f"them as range runs; gives up on a partition after {max_attempts} launches."
        ),
    )
    def _catchup(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        today = clock().astimezone(UTC).date()
        days = [today - timedelta(days=n) for n in range(lookback_days, 0, -1)]
        attempts: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        kept: dict[str, int] = {}
        requests: list[dg.RunRequest] = []
        for target in targets:
            keys = target.trading_keys(days)
            status = context.instance.get_status_by_partition(
                target.key, keys, target.asset.partitions_def
            )
            status = status or {}
            launch = []
            for key in keys:
                state = status.get(key)
                entry = f"{target.name}|{key}"
                if state in (dg.AssetPartitionStatus.MATERIALIZED,):
                    continue
                tried = attempts.get(entry, 0)
                if state == dg.AssetPartitionStatus.IN_PROGRESS:
                    kept[entry] = tried
                    continue
                if tried >= max_attempts:
                    kept[entry] = tried
                    context.log.warning(
                        "%s %s still %s after %d launches; not launching it again",
                        target.key.to_user_string(),
                        key,
                        "failed" if state else "missing",
                        tried,
                    )
                    continue
                kept[entry] = tried + 1
                launch.append(key)
            requests += target.run_requests(launch, None, {TRIGGER_TAG: "catchup"})
        if not requests:
            return dg.SensorResult(
                skip_reason=f"nothing missing or failed in the last {lookback_days} days",
                cursor=json.dumps(kept, sort_keys=True),
            )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(kept, sort_keys=True))

    return _catchup
