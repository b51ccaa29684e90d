"""Daily schedules and the catch-up sensor of the provider OHLCV assets.

Each provider asset has a partitioned job and a schedule that, shortly after a UTC day closes,
asks for that day's partitions of the symbols that traded: crypto every day, equities only on
days their exchange's calendar gives bars for (see :mod:`fks_pipelines.market.calendars`). A
schedule tick asks for adjacent symbols as one range run.

The catch-up sensor looks back over recent finished days and launches what is missing or failed,
as range runs cut like a backfill under the assets' ``BackfillPolicy``. It gives up on a partition
after a set number of launches (an unknown symbol does not mend itself) and says so in the
sensor's log.

Automation degrades per provider, never per tick: the assets of a provider that is not configured
(its key unset) are skipped by every schedule and sensor with a reason naming the variable, and
the others are launched. A run request for such an asset would fail when the daemon creates the
run (its resource cannot be configured), failing the whole tick and holding its cursor.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import dagster as dg

from fks_pipelines.defs.partitions import (
    RANGE_END_TAG,
    RANGE_START_TAG,
    DaySymbol,
    partition_key,
    run_ranges,
)
from fks_pipelines.market.calendars import has_bars
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument, Universe

# Minutes past 00:00 UTC at which a day's partitions are asked for: late enough for end-of-day
# providers to have published a US session (it ends 21:00 UTC at the latest).
DAILY_CRON = "15 0 * * *"
DAILY_AT = "00:15 UTC"
TRIGGER_TAG = "fks/trigger"
# Run tags that make a range run findable by partition in the Runs list (filter by tag): the
# dimension a range holds fixed, as Dagster sets dagster/partition for a single partition.
SYMBOL_TAG = "fks/symbol"
DATE_TAG = "fks/date"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DailyTarget:
    """A partitioned OHLCV asset as schedules see it: its job and which symbols trade when."""

    asset: dg.AssetsDefinition
    provider: str
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
        self,
        keys: Sequence[str],
        run_key_prefix: str | None,
        tags: dict[str, str],
        per_symbol: bool = False,
    ) -> list[dg.RunRequest]:
        """Range runs covering ``keys`` (see :func:`run_ranges`); a single partition runs as
        itself."""
        requests = []
        ranges = run_ranges(keys, list(self.instruments), self.partitions_per_run, per_symbol)
        for first, last in ranges:
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
                        tags={
                            **tags,
                            **range_tags(first, last),
                            RANGE_START_TAG: first,
                            RANGE_END_TAG: last,
                        },
                    )
                )
        return requests


def range_tags(first: str, last: str) -> dict[str, str]:
    """The ``fks/symbol`` or ``fks/date`` tag of the range ``[first, last]``: the dimension it
    holds fixed."""
    a, b = DaySymbol.from_key(first), DaySymbol.from_key(last)
    if a.symbol == b.symbol:
        return {SYMBOL_TAG: a.symbol}
    return {DATE_TAG: a.day.isoformat()}


def skipped_targets(
    targets: Sequence[DailyTarget], missing_keys: Mapping[str, str]
) -> tuple[list[DailyTarget], dict[str, str]]:
    """The targets whose provider is configured, and a reason for each of the others.

    ``missing_keys`` maps a provider that is not configured to the variable it lacks.
    """
    ready: list[DailyTarget] = []
    skipped: dict[str, str] = {}
    for target in targets:
        variable = missing_keys.get(target.provider)
        if variable is None:
            ready.append(target)
        else:
            skipped[target.name] = not_configured(target, variable)
    return ready, skipped


def not_configured(target: DailyTarget, variable: str) -> str:
    return (
        f"{target.key.to_user_string()} skipped: {target.provider} is not configured "
        f"({variable} is not set)"
    )


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
                provider=tags["provider"],
                interval=Interval.parse(tags["interval"]),
                instruments={s: universe.instruments[i] for s, i in spec.symbols.items()},
                start=spec.start_date,
                partitions_per_run=partitions_per_run,
                freshness_lag=timedelta(minutes=spec.freshness_lag_minutes),
            )
        )
    return targets


def build_daily_schedule(
    target: DailyTarget, missing_key: str | None = None
) -> dg.ScheduleDefinition:
    """Materialise the UTC day that closed before each tick, for the symbols that traded.

    With ``missing_key`` (the provider's unset key variable) every tick skips, naming it.
    """

    @dg.schedule(
        name=f"{target.name}_daily",
        job=target.job,
        cron_schedule=DAILY_CRON,
        execution_timezone="UTC",
        description=(
            f"Daily at {DAILY_AT}: the UTC day just closed of {target.key.to_user_string()}, "
            "for the symbols whose market had bars that day."
        ),
    )
    def _daily(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        if missing_key is not None:
            return dg.SkipReason(not_configured(target, missing_key))
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
    missing_keys: Mapping[str, str] | None = None,
    clock: Clock = utc_now,
) -> dg.SensorDefinition:
    """Launch missing or failed partitions of the last ``lookback_days`` finished UTC days.

    Targets whose provider is in ``missing_keys`` (provider -> unset key variable) are skipped.
    """
    ready, skipped = skipped_targets(targets, missing_keys or {})

    @dg.sensor(
        name="ohlcv_catchup",
        jobs=[t.job for t in ready] or None,
        minimum_interval_seconds=interval_s,
        description=(
            f"Every {every(interval_s)}: finds partitions of the last {lookback_days} finished "
            "UTC days that are missing or failed (days without a session excepted) and launches "
            f"them as range runs; gives up on a partition after {max_attempts} launches. Skips "
            "providers without their key."
        ),
    )
    def _catchup(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        for reason in skipped.values():
            context.log.info(reason)
        today = clock().astimezone(UTC).date()
        days = [today - timedelta(days=n) for n in range(lookback_days, 0, -1)]
        attempts: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        kept: dict[str, int] = {}
        requests: list[dg.RunRequest] = []
        for target in ready:
            keys = target.trading_keys(days)
            status = context.instance.get_status_by_partition(
                target.key, keys, target.asset.partitions_def
            )
            status = status or {}
            launch: list[str] = []
            again: list[str] = []
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
                (again if tried else launch).append(key)
            tags = {TRIGGER_TAG: "catchup"}
            requests += target.run_requests(launch, None, tags)
            # A partition launched before and still not stored may hold a symbol that keeps
            # failing (a run fails whole): its next runs hold one symbol, so the others get in.
            requests += target.run_requests(again, None, tags, per_symbol=True)
        if not requests:
            reason = f"nothing missing or failed in the last {lookback_days} days"
            if skipped:
                reason += "; " + "; ".join(skipped.values())
            return dg.SensorResult(skip_reason=reason, cursor=json.dumps(kept, sort_keys=True))
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(kept, sort_keys=True))

    return _catchup


def every(seconds: int) -> str:
    """``900`` -> ``15 min``: an interval as a person reads it."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
