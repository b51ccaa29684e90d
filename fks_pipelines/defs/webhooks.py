"""The ``webhook_events`` sensor: stored webhook events in, runs of the partitions they affect out.

Each tick reads the events stored after its cursor (their ``seq``) and any still ``pending``
below it (see :mod:`fks_pipelines.warehouse.webhook_events`), at most :data:`BATCH` of them,
and maps each to the partitions it affects (:func:`fks_pipelines.webhooks.mapping.decide`). A
burst is batched: the partitions of one asset are asked for together, as the schedules ask for
them (one run per partition, or a range run over adjacent ones), each with the run key
``webhook:<highest seq>:<first>:<last>``, so a tick evaluated again asks for nothing twice.
Every event read gets its status (``requested``, ``unmapped``, ``ignored``) and reason in the
table before the tick returns; a tick that fails leaves the cursor where it was and the next one
reads the same events again.

The sensor also publishes to the Redis stream the events the intake could not (Redis down at
the time), once they are :data:`PUBLISH_GRACE` old, so that an intake still publishing its own
event is not raced; and deletes events it handled more than ``retention_days`` ago (never a
pending one, nor one still to publish), so that the table does not grow without end.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import dagster as dg
from pydantic import Field

from fks_pipelines.defs.partitions import partition_key
from fks_pipelines.defs.resources import WarehouseResource
from fks_pipelines.defs.schedules import TRIGGER_TAG, DailyTarget, skipped_targets, utc_now
from fks_pipelines.warehouse.webhook_events import StatusUpdate, WebhookEventStore
from fks_pipelines.webhooks.mapping import IGNORED, REQUESTED, AssetScope, decide
from fks_pipelines.webhooks.stream import EventStream

BATCH = 5000  # events read (and published) per tick; a larger backlog takes several ticks
PUBLISH_GRACE = timedelta(seconds=30)
WEBHOOK = "webhook"
SEQ_TAG = "fks/webhook_seq"


class WebhookStreamResource(dg.ConfigurableResource):
    """The Redis stream of webhook events. The URL may hold a password: bind it with EnvVar."""

    redis_url: str | None = Field(default=None, description="Redis; none: no stream.")
    maxlen: int = Field(default=100_000, ge=1, description="Approximate cap of the stream.")

    def get_stream(self) -> EventStream | None:
        return EventStream.from_url(self.redis_url, self.maxlen) if self.redis_url else None


def asset_scope(target: DailyTarget) -> AssetScope:
    tags = target.asset.tags_by_key[target.key]
    return AssetScope(
        provider=tags["provider"],
        interval=target.interval.name,
        symbols=frozenset(target.instruments),
        first_day=target.start,
    )


def build_webhook_sensor(
    targets: Sequence[DailyTarget],
    missing_keys: Mapping[str, str] | None = None,
    interval_s: int = 30,
    retention_days: int = 30,
    clock: Callable[[], datetime] = utc_now,
) -> dg.SensorDefinition:
    """The sensor turning stored webhook events into runs of ``targets``' partitions.

    Args:
        targets: The provider assets events may refresh.
        missing_keys: Provider -> its unset key variable, for each provider not configured: an
            event for its assets is marked ``ignored`` with that reason instead of launching a
            run that would fail.
        interval_s: Seconds between evaluations.
        retention_days: Handled events older than this are deleted (0: kept for ever).
        clock: Now, UTC (tests pass a fixed time).
    """
    scopes: dict[tuple[str, str], AssetScope] = {}
    by_asset: dict[tuple[str, str], DailyTarget] = {}
    for target in targets:
        scope = asset_scope(target)
        scopes[(scope.provider, scope.interval)] = scope
        by_asset[(scope.provider, scope.interval)] = target
    ready, skipped = skipped_targets(targets, missing_keys or {})

    @dg.sensor(
        name="webhook_events",
        jobs=[t.job for t in ready] or None,
        minimum_interval_seconds=interval_s,
        description=(
            "Turns stored webhook events into runs of the provider OHLCV partitions they "
            "affect (closed bars: their UTC day), batching bursts; marks the events it cannot "
            "map as unmapped or ignored (an open bar, a provider without its key), with the "
            "reason, in the table webhook_events."
        ),
    )
    def _webhooks(
        context: dg.SensorEvaluationContext,
        warehouse: WarehouseResource,
        webhook_stream: WebhookStreamResource,
    ) -> dg.SensorResult:
        now = clock()
        store = WebhookEventStore(warehouse.get_warehouse())
        _publish_backlog(context, store, webhook_stream, now)
        if retention_days:
            _purge(context, store, webhook_stream, now - timedelta(days=retention_days))
        cursor = int(context.cursor) if context.cursor else 0
        events = store.to_handle(cursor, BATCH)
        if not events:
            return dg.SensorResult(skip_reason="no new webhook events", cursor=str(cursor))
        keys: dict[tuple[str, str], set[str]] = defaultdict(set)
        highest: dict[tuple[str, str], int] = defaultdict(int)
        updates = []
        for event in events:
            decision = decide(event, scopes, now)
            status, reason = decision.status, decision.reason
            asset = (decision.asset.provider, decision.asset.interval) if decision.asset else None
            if status == REQUESTED and asset is not None and by_asset[asset].name in skipped:
                status, reason = IGNORED, skipped[by_asset[asset].name]
            updates.append(StatusUpdate(event.seq, status, reason))
            if status == REQUESTED and asset is not None:
                keys[asset].update(str(partition_key(d, event.symbol)) for d in decision.days)
                highest[asset] = max(highest[asset], event.seq)
        requests: list[dg.RunRequest] = []
        for asset, asked in sorted(keys.items()):
            target = by_asset[asset]
            tags = {TRIGGER_TAG: WEBHOOK, SEQ_TAG: str(highest[asset])}
            requests += target.run_requests(sorted(asked), f"{WEBHOOK}:{highest[asset]}", tags)
        store.set_status(updates, now)
        counts = Counter(update.status for update in updates)
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        context.log.info(
            "%d webhook events: %s; %d run requests", len(events), summary, len(requests)
        )
        return dg.SensorResult(
            run_requests=requests,
            cursor=str(max(cursor, events[-1].seq)),
            skip_reason=None if requests else f"no partition to refresh ({summary})",
        )

    return _webhooks


def _purge(
    context: dg.SensorEvaluationContext,
    store: WebhookEventStore,
    resource: WebhookStreamResource,
    handled_before: datetime,
) -> None:
    purged = store.purge(handled_before, unpublished_too=resource.redis_url is None, limit=BATCH)
    if purged:
        context.log.info("deleted %d webhook events handled before %s", purged, handled_before)


def _publish_backlog(
    context: dg.SensorEvaluationContext,
    store: WebhookEventStore,
    resource: WebhookStreamResource,
    now: datetime,
) -> None:
    stream = resource.get_stream()
    if stream is None:
        return
    try:
        backlog = store.unpublished(now - PUBLISH_GRACE, BATCH)
        if backlog and stream.publish(backlog):
            store.mark_published(e.seq for e in backlog)
            context.log.info("published %d webhook events to the stream late", len(backlog))
    finally:
        stream.close()
