"""Freshness of the provider OHLCV assets: a check per asset and the freshness trigger sensor.

Dagster's freshness builders cover time-window partitions (``build_time_partition_freshness_
checks``) or an asset's last update; these assets are partitioned by date x symbol, and an
equity symbol has no partition to expect on a holiday. So freshness is measured here: for each
symbol, the newest UTC day with bars that closed at least the provider's ``freshness_lag_minutes``
ago (:func:`~fks_pipelines.quality.freshness.due_days`) must be materialised. A stale asset fails
its ``freshness`` check as WARN, as ERROR once a day overdue.

The ``ohlcv_freshness`` sensor evaluates every asset's freshness, records the check evaluation
when it changes, and asks for the stale partitions (one run key per partition range, so a
failing run is left to the catch-up sensor instead of being relaunched every tick). Its runs
queue in the providers' pools like any other.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
import pandas as pd

from fks_pipelines.defs.partitions import DaySymbol, partition_key
from fks_pipelines.defs.schedules import TRIGGER_TAG, DailyTarget, utc_now
from fks_pipelines.quality.freshness import due_days, overdue

FRESHNESS = "freshness"
ERROR_AFTER = timedelta(days=1)


@dataclass(frozen=True)
class Freshness:
    """Which partitions are due for an asset at a moment, and which of them are missing."""

    due: list[str]
    stale: list[str]
    in_progress: list[str]
    overdue: timedelta
    lag: timedelta

    @property
    def passed(self) -> bool:
        return not self.stale

    def result(self) -> dg.AssetCheckResult:
        metadata = {
            "partitions_due": len(self.due),
            "partitions_stale": len(self.stale),
            "freshness_lag_minutes": self.lag.total_seconds() / 60,
            "overdue_minutes": round(self.overdue.total_seconds() / 60, 1),
        }
        if self.passed:
            return dg.AssetCheckResult(check_name=FRESHNESS, passed=True, metadata=metadata)
        severity = (
            dg.AssetCheckSeverity.ERROR
            if self.overdue >= ERROR_AFTER
            else dg.AssetCheckSeverity.WARN
        )
        return dg.AssetCheckResult(
            check_name=FRESHNESS,
            passed=False,
            severity=severity,
            # The overdue minutes stay in the metadata: a description that changed every tick
            # would make the same staleness a new alert each time.
            description=(
                f"{len(self.stale)} partitions not stored within "
                f"{self.lag.total_seconds() / 60:g} min of their day's close"
                + (" (more than a day behind)" if severity == dg.AssetCheckSeverity.ERROR else "")
            ),
            metadata={**metadata, "stale_partitions": self.stale},
        )


def assess(target: DailyTarget, instance: dg.DagsterInstance, now: datetime) -> Freshness:
    """Each symbol's newest due day, and the one due before it, against what is stored.

    A symbol missing its newest due day is stale; missing the one before too, it is more than a
    day behind, and the overdue time counts from that earlier day's deadline.
    """
    at = pd.Timestamp(now)
    lag = target.freshness_lag
    newest: dict[str, str] = {}
    earlier: dict[str, str] = {}
    for symbol, instrument in target.instruments.items():
        due = due_days(instrument, target.interval, at, lag, target.start, count=2)
        if not due:
            continue
        newest[symbol] = str(partition_key(due[0], symbol))
        if len(due) > 1:  # the day due before it
            earlier[symbol] = str(partition_key(due[1], symbol))
    keys = [*newest.values(), *earlier.values()]
    status = instance.get_status_by_partition(target.key, keys, target.asset.partitions_def) or {}
    stored = {k for k in keys if status.get(k) == dg.AssetPartitionStatus.MATERIALIZED}
    stale = [k for k in newest.values() if k not in stored]
    running = [k for k in stale if status.get(k) == dg.AssetPartitionStatus.IN_PROGRESS]
    late = []
    for symbol, key in newest.items():
        if key not in stale:
            continue
        # Behind since the earliest of the two due days that is missing.
        before = earlier.get(symbol)
        since = before if before is not None and before not in stored else key
        late.append(overdue(DaySymbol.from_key(since).day, at, lag))
    return Freshness(
        due=list(newest.values()),
        stale=stale,
        in_progress=running,
        overdue=max(late, default=timedelta(0)),
        lag=lag,
    )


def build_freshness_check(
    target: DailyTarget, clock: Callable[[], datetime] = utc_now
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=target.key,
        name=FRESHNESS,
        description=(
            f"Each symbol's newest day with bars is stored within "
            f"{target.freshness_lag.total_seconds() / 60:g} min of its close (WARN; ERROR a day "
            "late). Evaluated by the ohlcv_freshness sensor, and after every run."
        ),
    )
    def _freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        return assess(target, context.instance, clock()).result()

    return _freshness


def build_freshness_sensor(
    targets: Sequence[DailyTarget],
    interval_s: int = 300,
    clock: Callable[[], datetime] = utc_now,
) -> dg.SensorDefinition:
    @dg.sensor(
        name="ohlcv_freshness",
        jobs=[t.job for t in targets],
        minimum_interval_seconds=interval_s,
        description=(
            "Evaluates every provider asset's freshness check and asks for the newest "
            "partitions once they are past their provider's freshness lag."
        ),
    )
    def _freshness(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        previous: dict[str, list[str]] = json.loads(context.cursor) if context.cursor else {}
        now = clock()
        events: list[dg.AssetCheckEvaluation] = []
        requests: list[dg.RunRequest] = []
        state: dict[str, list[str]] = {}
        for target in targets:
            freshness = assess(target, context.instance, now)
            name = target.key.to_user_string()
            state[name] = freshness.stale
            if previous.get(name) != freshness.stale:
                result = freshness.result()
                events.append(
                    dg.AssetCheckEvaluation(
                        asset_key=target.key,
                        check_name=FRESHNESS,
                        passed=result.passed,
                        severity=result.severity,
                        description=result.description,
                        metadata=result.metadata,
                    )
                )
            launch = [k for k in freshness.stale if k not in freshness.in_progress]
            requests += target.run_requests(launch, FRESHNESS, {TRIGGER_TAG: FRESHNESS})
        return dg.SensorResult(
            run_requests=requests,
            asset_events=events,
            cursor=json.dumps(state, sort_keys=True),
        )

    return _freshness
