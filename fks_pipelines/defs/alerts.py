"""The alert sensor: follows asset-check evaluations and alerts on the failed ones.

It reads each check's executions from the instance's check storage, newer than the last it saw
(the cursor keeps the last id per check), so each evaluation is looked at once. The run-sharded
SQLite event log of a default instance cannot be read by a global storage id, while check
executions are indexed per check on every storage. A failed ERROR check (and a WARN one when
``FKS_ALERT_ON_WARN`` is set) is logged at once and sent to ``FKS_ALERT_WEBHOOK_URL`` as a
Slack-compatible message. The checks record one evaluation per partition, so the failures of
one check in one run (or one freshness tick) make one alert naming their partitions. The same
failure (see :attr:`Alert.fingerprint`) alerts once per ``FKS_ALERT_DEDUPE_S``. A receiver that
is down does not hold the sensor up: the post has a short timeout, the alert stays in the cursor
and is retried on later ticks with exponential backoff, at most :data:`MAX_ATTEMPTS` times.

Only the checks it is given are followed: the definitions leave out the assets of providers that
are not configured, so an asset that cannot run never alerts.
"""

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)
from pydantic import Field

from fks_pipelines.alerts.webhook import MAX_ATTEMPTS, Alert, WebhookSender, next_attempt_delay
from fks_pipelines.defs.schedules import every

if TYPE_CHECKING:
    # Dagster's SQL storage (alembic, mako) for one annotation: not on the import path.
    from dagster._core.storage.event_log.base import EventLogStorage

BATCH = 1000  # executions (one per check and partition) read per query
MAX_PARTITIONS_NAMED = 5


class AlertResource(dg.ConfigurableResource):
    """Where alerts go. The webhook URL may hold a token: bind it with ``EnvVar``."""

    webhook_url: str | None = Field(default=None, description="Slack-compatible webhook.")
    dagster_ui_url: str | None = Field(default=None, description="Base URL for links.")
    alert_on_warn: bool = Field(default=False, description="Alert on WARN checks too.")
    dedupe_s: float = Field(default=6 * 3600, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)


def alerts_of(records: Sequence[AssetCheckExecutionRecord]) -> list[Alert]:
    """One alert per check, severity and run among the failed evaluations of ``records``,
    naming the failing partitions (at most :data:`MAX_PARTITIONS_NAMED`), in record order."""
    groups: dict[tuple[str, str, str, str], list[dg.AssetCheckEvaluation]] = {}
    for record in records:
        event = record.event.dagster_event if record.event else None
        if event is None:
            continue
        evaluation: dg.AssetCheckEvaluation = event.event_specific_data
        if evaluation.passed:
            continue
        key = (
            evaluation.asset_key.to_user_string(),
            evaluation.check_name,
            evaluation.severity.value,
            record.run_id,
        )
        groups.setdefault(key, []).append(evaluation)
    alerts = []
    for (asset, check, severity, run_id), failed in groups.items():
        partitions = sorted({e.partition for e in failed if e.partition is not None})
        first = failed[0]
        reason = (first.description or f"check {check} failed").splitlines()[0]
        if len(partitions) > 1:
            reason = f"{len(partitions)} partitions; {partitions[0]}: {reason}"
        named = partitions[:MAX_PARTITIONS_NAMED]
        if len(partitions) > len(named):
            named.append(f"... {len(partitions) - len(named)} more")
        alerts.append(
            Alert(
                asset=asset,
                check=check,
                severity=severity,
                reason=reason,
                partitions=tuple(named),
                run_id=run_id or None,
            )
        )
    return alerts


def settled_failures(
    instance: dg.DagsterInstance,
    key: dg.AssetCheckKey,
    last: int,
    finished: dict[str, bool],
) -> tuple[list[AssetCheckExecutionRecord], int]:
    """The failed executions of ``key`` after id ``last`` that can no longer change, and the id
    the cursor may move to.

    A run plans one execution row per check and partition when it starts and fills each in as
    it evaluates; the rows of a run still running may yet turn into failures, so the cursor
    stops before that run's first row and its failures alert together once it has finished.
    ``finished`` caches run states across the checks of one tick.
    """
    records = executions_after(instance.event_log_storage, key, last)
    if not records:
        return [], last
    open_runs = set()
    for record in records:
        if record.status != AssetCheckExecutionRecordStatus.PLANNED or not record.run_id:
            continue
        if record.run_id not in finished:
            run = instance.get_run_by_id(record.run_id)
            finished[record.run_id] = run is None or run.is_finished
        if not finished[record.run_id]:
            open_runs.add(record.run_id)
    held = [r.id for r in records if r.run_id in open_runs]
    upto = min(held) - 1 if held else max(r.id for r in records)
    failed = [
        r for r in records if r.id <= upto and r.status == AssetCheckExecutionRecordStatus.FAILED
    ]
    return failed, max(upto, last)


def executions_after(
    storage: "EventLogStorage", key: dg.AssetCheckKey, last: int
) -> list[AssetCheckExecutionRecord]:
    """Executions of ``key`` with ids above ``last``, newest first, read in pages."""
    found: list[AssetCheckExecutionRecord] = []
    cursor: int | None = None
    while True:
        page = storage.get_asset_check_execution_history(key, limit=BATCH, cursor=cursor)
        found += [r for r in page if r.id > last]
        if len(page) < BATCH or page[-1].id <= last:
            return found
        cursor = page[-1].id


def build_alert_sensor(
    check_keys: Sequence[dg.AssetCheckKey],
    interval_s: int = 60,
    clock: Callable[[], float] = time.time,
) -> dg.SensorDefinition:
    """The sensor following the evaluations of ``check_keys``."""

    @dg.sensor(
        name="check_alerts",
        minimum_interval_seconds=interval_s,
        description=(
            f"Every {every(interval_s)}: alerts on failed asset checks of configured providers "
            "(ERROR, and WARN if configured): one line in this log and one Slack-compatible "
            "message per check and run to FKS_ALERT_WEBHOOK_URL, naming the failed partitions, "
            "de-duplicated, retried while the receiver is down."
        ),
    )
    def _alerts(context: dg.SensorEvaluationContext, alerts: AlertResource) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else {}
        seen: dict[str, int] = state.get("seen", {})
        pending = [Alert.from_json(a) for a in state.get("pending", [])]
        now = clock()
        sent: dict[str, float] = {
            f: at for f, at in state.get("sent", {}).items() if now - at < alerts.dedupe_s
        }
        storage = context.instance.event_log_storage
        latest = storage.get_latest_asset_check_execution_by_key(list(check_keys))
        records: list[AssetCheckExecutionRecord] = []
        finished: dict[str, bool] = {}
        for key, newest in latest.items():
            name = key.to_user_string()
            last = seen.get(name, 0)
            if newest.id <= last:
                continue
            failed, seen[name] = settled_failures(context.instance, key, last, finished)
            records += failed
        records.sort(key=lambda r: r.create_timestamp)
        severities = {"ERROR", "WARN"} if alerts.alert_on_warn else {"ERROR"}
        queued = {a.fingerprint for a in pending}
        raised = 0
        for alert in alerts_of(records):
            if alert.severity not in severities:
                continue
            if alert.fingerprint in sent or alert.fingerprint in queued:
                continue
            context.log.warning("check failed: %s (run %s)", alert.line(), alert.run_id)
            raised += 1
            queued.add(alert.fingerprint)
            if alerts.webhook_url:
                pending.append(alert)
            else:
                sent[alert.fingerprint] = now
        still: list[Alert] = []
        if pending and alerts.webhook_url:
            with WebhookSender(alerts.webhook_url, alerts.timeout_s) as sender:
                for alert in pending:
                    if alert.next_at > now:
                        still.append(alert)
                    elif sender.send(alert, alerts.dagster_ui_url):
                        sent[alert.fingerprint] = now
                    elif alert.attempts + 1 >= MAX_ATTEMPTS:
                        context.log.error(
                            "giving up on alert after %d attempts: %s", MAX_ATTEMPTS, alert.line()
                        )
                    else:
                        attempts = alert.attempts + 1
                        still.append(
                            dataclasses.replace(
                                alert,
                                attempts=attempts,
                                next_at=now + next_attempt_delay(attempts),
                            )
                        )
        cursor = json.dumps(
            {"seen": seen, "pending": [a.to_json() for a in still], "sent": sent},
            sort_keys=True,
        )
        # What the tick did, on the tick: it never launches runs, so this is its only line.
        summary = f"{len(records)} new failed check evaluations, {raised} alerts raised"
        if still:
            summary += f", {len(still)} waiting for the receiver"
        return dg.SensorResult(skip_reason=summary, cursor=cursor)

    return _alerts
