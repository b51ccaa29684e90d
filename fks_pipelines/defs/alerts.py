"""The alert sensor: follows asset-check evaluations and alerts on the failed ones.

It reads each check's executions from the instance's check storage, newer than the last it saw
(the cursor keeps the last id per check), so each evaluation is looked at once. The run-sharded
SQLite event log of a default instance cannot be read by a global storage id, while check
executions are indexed per check on every storage. A failed ERROR check (and a WARN one when
``FKS_ALERT_ON_WARN`` is set) is logged at once and sent to ``FKS_ALERT_WEBHOOK_URL`` as a
Slack-compatible message. The same failure (see :attr:`Alert.fingerprint`) alerts once per
``FKS_ALERT_DEDUPE_S``. A receiver that is down does not hold the sensor up: the post has a
short timeout, the alert stays in the cursor and is retried on later ticks with exponential
backoff, at most :data:`MAX_ATTEMPTS` times.
"""

import dataclasses
import json
import time
from collections.abc import Callable, Sequence

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)
from pydantic import Field

from fks_pipelines.alerts.webhook import MAX_ATTEMPTS, Alert, WebhookSender, next_attempt_delay

BATCH = 100  # newest failed executions read per check and tick
MAX_PARTITIONS_NAMED = 5
PARTITION_KEYS = ("failing_partitions", "incomplete_partitions", "partitions")


class AlertResource(dg.ConfigurableResource):
    """Where alerts go. The webhook URL may hold a token: bind it with ``EnvVar``."""

    webhook_url: str | None = Field(default=None, description="Slack-compatible webhook.")
    dagster_ui_url: str | None = Field(default=None, description="Base URL for links.")
    alert_on_warn: bool = Field(default=False, description="Alert on WARN checks too.")
    dedupe_s: float = Field(default=6 * 3600, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)


def alert_of(record: AssetCheckExecutionRecord) -> Alert | None:
    """The alert for a failed check evaluation, or None for a passed one."""
    event = record.event.dagster_event if record.event else None
    if event is None:
        return None
    evaluation = event.event_specific_data
    if evaluation.passed:
        return None
    partitions: list[str] = []
    for name in PARTITION_KEYS:
        value = evaluation.metadata.get(name)
        if value is not None:
            partitions = [str(p) for p in value.value][:MAX_PARTITIONS_NAMED]
            break
    if not partitions and evaluation.partition:
        partitions = [str(evaluation.partition)]
    return Alert(
        asset=evaluation.asset_key.to_user_string(),
        check=evaluation.check_name,
        severity=evaluation.severity.value,
        reason=(evaluation.description or f"check {evaluation.check_name} failed").splitlines()[0],
        partitions=tuple(partitions),
        run_id=record.run_id,
    )


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
            "Alerts on failed asset checks (ERROR, and WARN if configured): one line in this "
            "log and one Slack-compatible message to FKS_ALERT_WEBHOOK_URL, de-duplicated, "
            "retried while the receiver is down."
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
        for key, newest in latest.items():
            name = key.to_user_string()
            if newest.id <= seen.get(name, 0):
                continue
            history = storage.get_asset_check_execution_history(
                key, limit=BATCH, status={AssetCheckExecutionRecordStatus.FAILED}
            )
            records += [r for r in history if r.id > seen.get(name, 0)]
            seen[name] = newest.id
        records.sort(key=lambda r: r.create_timestamp)
        severities = {"ERROR", "WARN"} if alerts.alert_on_warn else {"ERROR"}
        queued = {a.fingerprint for a in pending}
        for record in records:
            alert = alert_of(record)
            if alert is None or alert.severity not in severities:
                continue
            if alert.fingerprint in sent or alert.fingerprint in queued:
                continue
            context.log.warning("check failed: %s (run %s)", alert.line(), alert.run_id)
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
        return dg.SensorResult(
            skip_reason=None if records or still else "no new check evaluations",
            cursor=cursor,
        )

    return _alerts
