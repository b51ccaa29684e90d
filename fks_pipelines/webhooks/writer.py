"""Group commit: the events of concurrent requests stored in one transaction, then published.

Each request hands its events to one writer thread (:meth:`GroupWriter.submit`) and waits for
the future it gets back. The writer takes whatever has queued up (at most :data:`MAX_BATCH`
requests), stores it with one ``INSERT`` and one commit, adds the new events to the stream in
one round trip, records them as published in a second short transaction, and answers every
waiting request. Under load the two commits and the per-statement overhead are shared by the
whole batch (measured by bench/webhook_intake.py); a lone request is a batch of one.

A request is answered only once its events are committed, so an acknowledgement still means
durable. If the database refuses a batch, each of its requests is tried alone, so that one
request the database refuses fails only itself. A batch the database did not take in time (a
lock or statement timeout, a lost connection) fails whole instead: trying its requests one by
one would wait that long again for each, and the next batch behind it too.

Waits are bounded, so that a stalled warehouse slows the intake and nothing else: the store
gives up on a lock after its timeout (:class:`~fks_pipelines.warehouse.webhook_events.
WebhookEventStore`), a waiting request gives up after ``wait_s``, and a request that gave up
before its batch began is dropped from the queue, never stored. The store is opened by the
writer thread on its first batch (and again after it could not be), never by a request.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import sqlalchemy as sa

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
WAIT_S = 60.0  # default longest a request waits for its batch before it is answered 503


class StorageUnavailable(Exception):
    """The warehouse could not store the events; nothing was stored (the sender should retry)."""


class EventRejected(Exception):
    """The database refused the event's values (a data or integrity error): retrying cannot
    help, the sender is told 422."""


@dataclass
class _Write:
    events: Sequence[WebhookEvent]
    done: Future[list[Receipt]] = field(default_factory=Future)


class GroupWriter:
    """Stores and publishes the events of concurrent callers together (see the module).

    Args:
        store: The event store, or a function opening it (called by the writer thread; raises
            :class:`StorageUnavailable` when the warehouse cannot be reached).
        stream: The Redis stream, or ``None``.
        clock: Unix time now, for ``received_at``.
        max_batch: Most requests per transaction.
        wait_s: Longest :meth:`write` waits for its batch.
    """

    def __init__(
        self,
        store: WebhookEventStore | Callable[[], WebhookEventStore],
        stream: EventStream | None,
        clock: Callable[[], float],
        max_batch: int = MAX_BATCH,
        wait_s: float = WAIT_S,
    ) -> None:
        self._open: Callable[[], WebhookEventStore] | None = None
        self.store: WebhookEventStore | None = None
        if isinstance(store, WebhookEventStore):
            self.store = store
        else:
            self._open = store
        self.stream = stream
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._clock = clock
        self._queue: queue.SimpleQueue[_Write | None] = queue.SimpleQueue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="webhook-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests submitted and not answered yet (queued, or in the batch being stored)."""
        return self._pending

    def submit(self, events: Sequence[WebhookEvent]) -> Future[list[Receipt]]:
        """Queue ``events`` (stored all or none); the future gives a receipt per event, or
        raises :class:`StorageUnavailable` or :class:`EventRejected`. Cancelling it before its
        batch begins drops the events. Never blocks."""
        write = _Write(events)
        with self._pending_lock:
            self._pending += 1
        write.done.add_done_callback(self._answered)
        self._queue.put(write)
        return write.done

    def write(self, events: Sequence[WebhookEvent]) -> list[Receipt]:
        """Store ``events`` (all or none) and publish the new ones; a receipt per event.

        Raises:
            StorageUnavailable: They were not stored (or not within ``wait_s``; a late commit
                then makes the sender's retry a duplicate, never a loss).
            EventRejected: The database refused their values.
        """
        done = self.submit(events)
        try:
            return done.result(timeout=self.wait_s)
        except FutureTimeout:
            done.cancel()  # still queued: dropped; already being stored: it goes on
            raise StorageUnavailable("the event store did not answer in time") from None

    def close(self) -> None:
        """Finish the queued writes and stop the writer thread."""
        self._queue.put(None)
        self._thread.join()

    def _answered(self, _: Future[list[Receipt]]) -> None:
        with self._pending_lock:
            self._pending -= 1

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
            # A request that gave up waiting (its future cancelled) is not stored.
            live = [write for write in batch if write.done.set_running_or_notify_cancel()]
            if live:
                self._commit(live)
            if closing:
                return

    def _commit(self, batch: list[_Write]) -> None:
        try:
            self._store(batch)
        except Exception as exc:
            # Never let the writer thread die: every waiting request would hang.
            log.exception("webhook writer failed")
            failure = (
                exc
                if isinstance(exc, StorageUnavailable)
                else StorageUnavailable("the event store failed; nothing was stored")
            )
            for write in batch:
                if not write.done.done():
                    write.done.set_exception(failure)

    def _opened(self) -> WebhookEventStore:
        if self.store is None:
            assert self._open is not None
            self.store = self._open()  # raises StorageUnavailable
        return self.store

    def _store(self, batch: list[_Write]) -> None:
        events = [event for write in batch for event in write.events]
        stored_at = datetime.fromtimestamp(self._clock(), UTC)
        try:
            store = self._opened()
        except StorageUnavailable as exc:
            _fail(batch, exc)
            return
        try:
            receipts = store.add(events, stored_at)
        except WarehouseError as exc:
            self._refused(batch, store, exc)
            return
        receipts = self._publish(store, events, receipts, stored_at)
        offset = 0
        for write in batch:
            write.done.set_result(receipts[offset : offset + len(write.events)])
            offset += len(write.events)

    def _refused(self, batch: list[_Write], store: WebhookEventStore, exc: WarehouseError) -> None:
        """Answer a batch the database did not store (see the module)."""
        kind = _failure(store, exc)
        if kind == "unavailable":
            log.error("webhook events not stored (%d requests): %s", len(batch), exc)
            _fail(batch, StorageUnavailable("the event store is unavailable; nothing was stored"))
        elif len(batch) > 1:
            for write in batch:
                self._store([write])
        elif kind == "data":
            log.warning("webhook event refused by the database: %s", exc)
            _fail(batch, EventRejected(f"the warehouse refused the event: {_first_line(exc)}"))
        else:
            log.error("webhook events not stored: %s", exc)
            _fail(batch, StorageUnavailable("the event store is unavailable; nothing was stored"))

    def _publish(
        self,
        store: WebhookEventStore,
        events: Sequence[WebhookEvent],
        receipts: list[Receipt],
        stored_at: datetime,
    ) -> list[Receipt]:
        new = [
            _stored(event, receipt.seq, stored_at)
            for event, receipt in zip(events, receipts, strict=True)
            if not receipt.duplicate
        ]
        if self.stream is None or not new or not self.stream.publish(new):
            return receipts
        try:
            store.mark_published(e.seq for e in new)
        except WarehouseError as exc:
            # In the stream already; the sensor will publish them once more (at least once).
            log.warning("published webhook events not marked as such: %s", exc)
        published = {e.seq for e in new}
        return [replace(r, published=True) if r.seq in published else r for r in receipts]


def _fail(batch: list[_Write], exc: Exception) -> None:
    for write in batch:
        write.done.set_exception(exc)


def _failure(store: WebhookEventStore, exc: WarehouseError) -> str:
    """``unavailable`` (timed out, locked, connection lost: the database's ``OperationalError``
    family), ``data`` (a value or row the database refuses: a data or integrity error) or
    ``other``."""
    cause = exc.__cause__
    dbapi = store.warehouse.engine.dialect.loaded_dbapi
    if isinstance(cause, sa.exc.DBAPIError):
        cause = cause.orig
    if isinstance(cause, dbapi.OperationalError | dbapi.InterfaceError):
        return "unavailable"
    if isinstance(cause, dbapi.DataError | dbapi.IntegrityError):
        return "data"
    return "other"


def _first_line(exc: BaseException) -> str:
    cause = exc.__cause__
    text = str(getattr(cause, "orig", None) or cause or exc)
    return text.splitlines()[0] if text else type(exc).__name__


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
