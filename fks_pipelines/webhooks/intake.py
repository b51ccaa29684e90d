"""The webhook intake: verify, parse, store durably, then publish.

The order is the contract. A request is refused before anything is stored if it is unsigned,
badly signed, stale, malformed or not an event; an event is acknowledged only once the warehouse
committed it; publication to the Redis stream comes after and may fail without failing the
request (the event is durable; ``published`` says whether it reached the stream, and the
webhook sensor publishes what the intake could not). A re-delivered event (same id or same
payload) is acknowledged with the stored event's id and ``duplicate`` set, and is neither
stored nor published again. The events of concurrent requests are committed together
(:mod:`fks_pipelines.webhooks.writer`).

Every wait is bounded: the warehouse's locks and statements by ``store_timeout_s``, a request's
wait for its batch by :attr:`WebhookIntake.wait_s` (the batch before it and its own), and the
requests waiting at once by :data:`MAX_PENDING` (:attr:`WebhookIntake.saturated`). A service can
therefore verify and parse in a worker thread (:meth:`WebhookIntake.accept`) and wait for the
store without holding one (:meth:`WebhookIntake.submit`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import SecretStr

from fks_pipelines.warehouse.store import Warehouse, WarehouseError
from fks_pipelines.warehouse.webhook_events import Receipt, WebhookEventStore
from fks_pipelines.webhooks import signing
from fks_pipelines.webhooks.events import Delivery, WebhookEvent, parse_events
from fks_pipelines.webhooks.stream import EventStream
from fks_pipelines.webhooks.writer import MAX_BATCH, GroupWriter, StorageUnavailable

log = logging.getLogger(__name__)

STORE_TIMEOUT_S = 4.0
"""Default longest the warehouse may hold one of the intake's transactions (a lock, a
statement): a request is then answered within about twice that, well inside a sender's own
timeout (typically 10-30 s)."""
MAX_PENDING = 4 * MAX_BATCH
"""Most requests waiting for the store at once; beyond, the intake is saturated (503)."""


class IntakeDisabled(Exception):
    """No webhook secret is configured, so no request can be authenticated."""


@dataclass(frozen=True)
class Acknowledgement:
    """The receipts of one request's events, in order; ``batch`` when it sent a JSON list."""

    receipts: list[Receipt]
    batch: bool


class WebhookIntake:
    """Signed events in, durable rows and stream entries out.

    Args:
        secret: The shared HMAC secret (``FKS_WEBHOOK_SECRET``); ``None`` refuses everything.
        warehouse_url: Where ``webhook_events`` lives. The warehouse is opened by the writer
            thread on the first event, so a database that is down at start-up fails requests
            (503), not the service.
        stream: The Redis stream, or ``None`` without Redis (events stay unpublished).
        clock: Unix time now, for the timestamp window.
        store_timeout_s: Longest a lock or statement of the intake's transactions may take
            (PostgreSQL); ``None``: as long as the database lets it.
        max_pending: Most requests waiting for the store at once (:attr:`saturated`).
    """

    def __init__(
        self,
        secret: SecretStr | None,
        warehouse_url: str,
        stream: EventStream | None = None,
        clock: Callable[[], float] = time.time,
        store_timeout_s: float | None = STORE_TIMEOUT_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._secret = secret if secret is not None and secret.get_secret_value() else None
        self.warehouse_url = warehouse_url
        self.stream = stream
        self.store_timeout_s = store_timeout_s
        self.max_pending = max_pending
        self._clock = clock
        self._lock = threading.Lock()
        self._group_writer: GroupWriter | None = None

    @property
    def wait_s(self) -> float:
        """Longest a request waits for its events to be stored: the batch being stored before
        it and its own, each bounded by the store's timeout, and a second for the rest."""
        if self.store_timeout_s is None:
            return 60.0
        return 2 * self.store_timeout_s + 1.0

    @property
    def retry_after_s(self) -> int:
        """What a 503 of the intake tells the sender to wait (``Retry-After``)."""
        return max(1, math.ceil(self.store_timeout_s or STORE_TIMEOUT_S))

    @property
    def pending(self) -> int:
        """Requests waiting for the store now."""
        writer = self._group_writer
        return writer.pending if writer is not None else 0

    @property
    def saturated(self) -> bool:
        """Whether :attr:`max_pending` requests are waiting for the store already."""
        return self.pending >= self.max_pending

    def check_timestamp(self, timestamp: str | None) -> int:
        """The request's signed timestamp, checked before its body is read.

        Raises:
            IntakeDisabled: No secret is configured.
            SignatureError: The timestamp is missing, malformed or stale.
        """
        if self._secret is None:
            raise IntakeDisabled("FKS_WEBHOOK_SECRET is not set: webhooks are refused")
        return signing.check_timestamp(timestamp, self._clock())

    def receive(
        self, source: str, timestamp: int, signature: str | None, body: bytes
    ) -> Acknowledgement:
        """Verify ``body``, store its events and publish the new ones; a receipt per event.

        Raises:
            IntakeDisabled: No secret is configured.
            SignatureError: ``signature`` does not sign ``body`` at ``timestamp``.
            EventError: The body is not JSON, or not events of ``source``'s shape.
            StorageUnavailable: The warehouse did not store them (nothing was stored).
        """
        delivery = self.accept(source, timestamp, signature, body)
        return Acknowledgement(self._writer().write(delivery.events), delivery.batch)

    def accept(self, source: str, timestamp: int, signature: str | None, body: bytes) -> Delivery:
        """Verify ``body`` and parse its events (CPU only: no I/O).

        Raises:
            IntakeDisabled: No secret is configured.
            SignatureError: ``signature`` does not sign ``body`` at ``timestamp``.
            EventError: The body is not JSON, or not events of ``source``'s shape.
        """
        if self._secret is None:
            raise IntakeDisabled("FKS_WEBHOOK_SECRET is not set: webhooks are refused")
        signing.verify(self._secret, timestamp, signature, body)
        return parse_events(source, body)

    def submit(self, events: Sequence[WebhookEvent]) -> Future[list[Receipt]]:
        """Queue accepted events for storage and publication; never blocks. The future gives
        a receipt per event or raises ``StorageUnavailable`` / ``EventRejected``; cancelling
        it before its batch begins drops the events (see :mod:`.writer`)."""
        return self._writer().submit(events)

    def close(self) -> None:
        """Finish the writes under way, stop the writer thread, close the stream's client."""
        with self._lock:
            writer, self._group_writer = self._group_writer, None
        if writer is not None:
            writer.close()
        if self.stream is not None:
            self.stream.close()

    def _writer(self) -> GroupWriter:
        """The writer, started on first use; it opens the event store itself (the warehouse
        is connected, and its schema made, by its thread: a request never waits for that)."""
        with self._lock:
            if self._group_writer is None:
                self._group_writer = GroupWriter(
                    self._store, self.stream, self._clock, wait_s=self.wait_s
                )
            return self._group_writer

    def _store(self) -> WebhookEventStore:
        """Open the event store (in the writer thread).

        Raises:
            StorageUnavailable: The warehouse cannot be reached.
        """
        try:
            return WebhookEventStore(Warehouse.from_url(self.warehouse_url), self.store_timeout_s)
        except (sa.exc.SQLAlchemyError, WarehouseError) as exc:
            # The driver's own message, never the URL (it may hold a password).
            cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else type(exc).__name__
            log.error("webhook event store unavailable: %s", cause)
            raise StorageUnavailable("the event store is unavailable; nothing was stored") from exc
