"""Freshness of the provider OHLCV assets: is each symbol's newest due day stored?

A partition (a UTC day of a symbol) is *due* once its day has closed and the provider's
``freshness_lag_minutes`` have passed, if the symbol's market had bars that day (an equity's
weekend or holiday is never due, see :func:`~fks_pipelines.quality.freshness.due_days`). A due
partition that is not stored is *behind*: its ``freshness`` check fails as WARN, or as ERROR when
the symbol's due day before it is missing too (the symbol is more than a day behind).

Dagster's freshness policies judge an asset by its last materialisation, so a backfill of last
year would make a stale asset look fresh; its time-partition checks need a time-window
partitions definition, and these assets are date x symbol. So freshness is judged here, as a
partitioned check of each provider asset, by two writers:

- the ``ohlcv_freshness`` sensor records a failed evaluation on each of a symbol's two newest due
  partitions that is missing (and not being fetched by a run), and asks for it: a run of
  historical days never judges the asset's newest days, so it records no freshness failure. A
  partition whose run failed less than ``retry_grace`` ago is the catch-up's to relaunch (in a
  run of its own symbol when another symbol broke the run): it is judged, and asked for, only
  once that grace has passed without a new run, so a symbol held back by another's failure is
  not reported late on its way in;
- each run records a passed evaluation on every partition it stored, with how long after its
  day's close it arrived; that replaces the sensor's failure once the partition is in.

The sensor records a partition's failure once: Dagster 1.13 stores at most one run-less
evaluation per check and partition (a second one breaks a unique index and fails the tick), so
the severity is decided when the partition is first found missing, and a symbol that stays
behind shows it on the next day's partition, as ERROR. Assets of a provider that is not
configured (its key unset) are skipped with a reason naming the variable; an asset never
materialised is not judged (it has not started, it is not behind), but its newest due
partitions are still asked for.
"""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
from dagster._core.event_api import PartitionKeyFilter

from fks_pipelines.defs.checks import ERROR, FRESHNESS, WARN, evaluation
from fks_pipelines.defs.partitions import DaySymbol, partition_key
from fks_pipelines.defs.schedules import (
    TRIGGER_TAG,
    DailyTarget,
    every,
    skipped_targets,
    utc_now,
)
from fks_pipelines.quality.freshness import due_days, overdue

RECENT = timedelta(days=2)
"""A stored partition whose day closed longer ago than this is history, not judged for lag."""
JUDGED_DAYS = 2
"""Due days judged per symbol: the newest, and the one before it (a symbol a day behind)."""


def freshness_rule(lag: timedelta) -> str:
    """The freshness check's description for a provider with freshness lag ``lag``."""
    return (
        f"Each symbol's newest day with bars is stored within {lag.total_seconds() / 60:g} min "
        "of its UTC close (an equity's weekend or holiday is never due). A due partition that "
        "is missing fails as WARN, as ERROR when the due day before it is missing too (more "
        "than a day behind): recorded once by the ohlcv_freshness sensor. A run records a pass "
        "on each partition it stores, with how long after its day's close it arrived; a run of "
        "historical days judges nothing else."
    )


@dataclass(frozen=True)
class Behind:
    """A due partition that is not stored."""

    partition: str
    deadline: pd.Timestamp
    overdue: timedelta
    in_progress: bool
    day_before_missing: bool
    failed_at: datetime | None = None
    """When the last run that held the partition failed (None: no run failed it)."""

    def settled(self, now: datetime, retry_grace: timedelta) -> bool:
        """Not in a run, and not failed so recently that the catch-up may still relaunch it."""
        if self.in_progress:
            return False
        return self.failed_at is None or now - self.failed_at >= retry_grace

    @property
    def severity(self) -> dg.AssetCheckSeverity:
        return ERROR if self.day_before_missing else WARN

    def evaluation(self, key: dg.AssetKey, lag: timedelta) -> dg.AssetCheckEvaluation:
        minutes = self.overdue.total_seconds() / 60
        reason = f"not stored {minutes:.0f} min past its deadline (its day's close + "
        reason += f"{lag.total_seconds() / 60:g} min)"
        if self.day_before_missing:
            reason += "; the due day before it is missing too: more than a day behind"
        return evaluation(
            key,
            FRESHNESS,
            self.partition,
            failure=(self.severity, reason),
            metadata={
                "deadline": dg.MetadataValue.timestamp(self.deadline),
                "overdue_minutes": round(minutes, 1),
                "freshness_lag_minutes": lag.total_seconds() / 60,
                "day_before_missing": self.day_before_missing,
            },
        )


def behind(target: DailyTarget, instance: dg.DagsterInstance, now: datetime) -> list[Behind]:
    """The missing partitions among each symbol's :data:`JUDGED_DAYS` newest due days."""
    at = pd.Timestamp(now)
    lag = target.freshness_lag
    # One due day more than judged: whether the day before the oldest judged one is missing.
    due = {
        symbol: due_days(instrument, target.interval, at, lag, target.start, JUDGED_DAYS + 1)
        for symbol, instrument in target.instruments.items()
    }
    keys = [str(partition_key(day, symbol)) for symbol, days in due.items() for day in days]
    status = instance.get_status_by_partition(target.key, keys, target.asset.partitions_def) or {}

    def missing(key: str) -> bool:
        return status.get(key) != dg.AssetPartitionStatus.MATERIALIZED

    found = []
    for symbol, days in due.items():
        for i, day in enumerate(days[:JUDGED_DAYS]):
            key = str(partition_key(day, symbol))
            if not missing(key):
                continue
            before = days[i + 1] if i + 1 < len(days) else None
            state = status.get(key)
            found.append(
                Behind(
                    partition=key,
                    deadline=pd.Timestamp(day + timedelta(days=1), tz="UTC") + lag,
                    overdue=overdue(day, at, lag),
                    in_progress=state == dg.AssetPartitionStatus.IN_PROGRESS,
                    day_before_missing=before is not None
                    and missing(str(partition_key(before, symbol))),
                    failed_at=failed_at(instance, target.key, key)
                    if state == dg.AssetPartitionStatus.FAILED
                    else None,
                )
            )
    return found


def failed_at(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> datetime | None:
    """When the run that last planned ``partition`` ended (None if it is unknown)."""
    planned = instance.get_latest_planned_materialization_info(key, partition)
    record = instance.get_run_record_by_id(planned.run_id) if planned else None
    if record is None or record.end_time is None:
        return None
    return datetime.fromtimestamp(record.end_time, tz=UTC)


def already_recorded(instance: dg.DagsterInstance, key: dg.AssetCheckKey, partition: str) -> bool:
    """Whether a run-less evaluation of ``partition`` is stored (a cursor may have been reset)."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        key, limit=100, partition_filter=PartitionKeyFilter(key=partition)
    )
    return any(not record.run_id for record in history)


def stored_evaluation(
    key: dg.AssetKey, partition: str, lag: timedelta, now: pd.Timestamp
) -> dg.AssetCheckEvaluation:
    """The pass a run records on a partition it stored: how long after its day's close."""
    close = DaySymbol.from_key(partition).end
    after = now - close
    metadata: dict[str, object] = {
        "day_closed": dg.MetadataValue.timestamp(close),
        "freshness_lag_minutes": lag.total_seconds() / 60,
    }
    if after > RECENT:
        text = f"stored; history (its day closed {after.days} days before this run)"
    else:
        # Only for a day just closed: a lag of months would drown the check's plot.
        metadata["stored_minutes_after_close"] = round(after.total_seconds() / 60, 1)
        text = (
            f"stored {after.total_seconds() / 60:.0f} min after its day's close "
            f"(lag allowed: {lag.total_seconds() / 60:g} min)"
        )
    return evaluation(key, FRESHNESS, partition, description=text, metadata=metadata)


def ever_materialized(instance: dg.DagsterInstance, key: dg.AssetKey) -> bool:
    return bool(
        instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    )


def build_freshness_sensor(
    targets: Sequence[DailyTarget],
    missing_keys: Mapping[str, str],
    interval_s: int = 300,
    clock: Callable[[], datetime] = utc_now,
    retry_grace: timedelta = timedelta(0),
) -> dg.SensorDefinition:
    """Records freshness failures of due partitions that are missing, and asks for them.

    ``missing_keys`` maps each provider that is not configured to the variable it lacks; a
    partition whose run failed less than ``retry_grace`` ago is left to the catch-up sensor.
    """
    ready, skipped = skipped_targets(targets, missing_keys)

    @dg.sensor(
        name="ohlcv_freshness",
        jobs=[t.job for t in ready] or None,
        minimum_interval_seconds=interval_s,
        description=(
            f"Every {every(interval_s)}: records a failed freshness check on each provider "
            "partition that is "
            "due (its day closed more than the provider's lag ago) and not stored, once, and "
            "asks for it. Skips providers without their key."
        ),
    )
    def _freshness(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        for reason in skipped.values():
            context.log.info(reason)
        recorded: dict[str, list[str]] = json.loads(context.cursor) if context.cursor else {}
        now = clock()
        events: list[dg.AssetCheckEvaluation] = []
        requests: list[dg.RunRequest] = []
        state: dict[str, list[str]] = {}
        not_started: list[str] = []
        for target in ready:
            name = target.key.to_user_string()
            found = behind(target, context.instance, now)
            # A partition a run is fetching now is judged once that run is over; one whose run
            # just failed, once the catch-up has had its chance to relaunch it.
            settled = [b for b in found if b.settled(now, retry_grace)]
            failing = [b for b in settled if b.overdue > timedelta(0)]
            if failing and not ever_materialized(context.instance, target.key):
                not_started.append(name)
            elif failing:
                before = recorded.get(name)
                # A cursor of an earlier release held other shapes: judge afresh.
                before = set(before) if isinstance(before, list) else set()
                check = dg.AssetCheckKey(target.key, FRESHNESS)
                for b in failing:
                    if b.partition in before or already_recorded(
                        context.instance, check, b.partition
                    ):
                        continue
                    events.append(b.evaluation(target.key, target.freshness_lag))
                state[name] = sorted(b.partition for b in failing)
            launch = [b.partition for b in settled]
            requests += target.run_requests(launch, FRESHNESS, {TRIGGER_TAG: FRESHNESS})
        if not_started:
            context.log.info(
                "not judged (never materialised): %s; their due partitions are asked for",
                ", ".join(not_started),
            )
        cursor = json.dumps(state, sort_keys=True)
        if not events and not requests:
            return dg.SensorResult(skip_reason=_nothing_due(skipped, len(ready)), cursor=cursor)
        return dg.SensorResult(run_requests=requests, asset_events=events, cursor=cursor)

    return _freshness


def _nothing_due(skipped: Mapping[str, str], ready: int) -> str:
    text = f"{ready} configured assets up to date"
    if skipped:
        text += "; skipped: " + "; ".join(skipped.values())
    return text
