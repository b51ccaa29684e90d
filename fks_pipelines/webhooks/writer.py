"""Group commit: the events of concurrent requests stored in one transaction, then published.

Each request thread hands its events to one writer thread and waits. The writer takes whatever
has queued up (at most :data:`MAX_BATCH` requests), stores it with one ``INSERT`` and one
commit, adds the new events to the stream in one round trip, records them as published in a
second short transaction, and answers every waiting request. Under load the two commits and the
per-statement overhead are shared by the whole batch (measured by bench/webhook_intake.py); a
lone request is a batch of one, as before.

A request is answered only once its events are committed, so an acknowledgement still means
durable. If a batch fails, each of its requests is tried alone, so that one request the
database refuses fails only itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from fks_pipelines.warehouse.store import WarehouseError
from fks_pipelines.warehouse.webhook_events import (
    PENDING,
    Receipt,
    StoredEvent,
    WebhookEventStore,
)
from fks_pipelines.webhooks.events import WebhookEvent
from fks_pipelines.webhooks.stream import EventStream

log = logging.getLogger(__name__)

MAX_BATCH = 256  # requests per transaction
WAIT_S = 60.0  # longest a request waits for its batch before it is answered 503


class StorageUnavailable(Exception):
    """The warehouse could not store the events; nothing was stored (the sender should retry)."""


@dataclass
class _Write:
    events: Sequence[WebhookEvent]
    done: Future[list[Receipt]] = field(default_factory=Future)


class GroupWriter:
    """Stores and publishes the events of concurrent callers together (see the module)."""

    def __init__(
        self,
        store: WebhookEventStore,
        stream: EventStream | None,
        clock: Callable[[], float],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.store = store
        self.stream = stream
        self.max_batch = max_batch
        self._clock = clock
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="webhook-writer", daemon=True)
        self._thread.start()

    def write(self, events: Sequence[WebhookEvent]) -> list[Receipt]:
        """Store ``events`` (all or none) and publish the new ones; a receipt per event.

        Raises:
            StorageUnavailable: They were not stored (or not within :data:`WAIT_S`; a late
                commit then makes the sender's retry a duplicate, never a loss).
        """
        write = _Write(events)
        self._queue.put(write)
        try:
            return write.done.result(timeout=WAIT_S)
        except TimeoutError:
            raise StorageUnavailable("the event store did not answer in time") from None

    def close(self) -> None:
        """Finish the queued writes and stop the writer thread."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            closing = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            self._commit(batch)
            if closing:
                return

    def _commit(self, batch: list[_Write]) -> None:
        try:
            self._store(batch)
        except Exception as exc:
            # Never let the writer thread die: every waiting request would hang.
            log.exception("webhook writer failed")
            for write in batch:
                if not write.done.done():
                    write.done.set_exception(exc)

    def _store(self, batch: list[_Write]) -> None:
        events = [event for write in batch for event in write.events]
        stored_at = datetime.fromtimestamp(self._clock(), UTC)
        try:
            receipts = self.store.add(events, stored_at)
        except WarehouseError as exc:
            if len(batch) > 1:
                for write in batch:
                    self._store([write])
                return
            log.error("webhook events not stored: %s", exc)
            unavailable = StorageUnavailable("the event store is unavailable; nothing was stored")
            batch[0].done.set_exception(unavailable)
            return
        receipts = self._publish(events, receipts, stored_at)
        offset = 0
        for write in batch:
            write.done.set_result(receipts[offset : offset + len(write.events)])
            offset += len(write.events)

    def _publish(
        self, events: Sequence[WebhookEvent], receipts: list[Receipt], stored_at: datetime
    ) -> list[Receipt]:
        new = [
            _stored(event, receipt.seq, stored_at)
            for event, receipt in zip(events, receipts, strict=True)
            if not receipt.duplicate
        ]
        if self.stream is None or not new or not self.stream.publish(new):
            return receipts
        try:
            self.store.mark_published(e.seq for e in new)
        except WarehouseError as exc:
            # In the stream already; the sensor will publish them once more (at least once).
            log.warning("published webhook events not marked as such: %s", exc)
        published = {e.seq for e in new}
        return [replace(r, published=True) if r.seq in published else r for r in receipts]


def _stored(event: WebhookEvent, seq: int, stored_at: datetime) -> StoredEvent:
    return StoredEvent(
        seq=seq,
        id=event.id,
        received_at=stored_at,
        source=event.source,
        provider=event.provider,
        symbol=event.symbol,
        interval=event.interval,
        start=event.start,
        end=event.end,
        closed=event.closed,
        status=PENDING,
        reason=None,
        published=False,
        payload=event.payload,
    )
