"""The webhook intake: verify, parse, store durably, then publish.

The order is the contract. A request is refused before anything is stored if it is unsigned,
badly signed, stale, malformed or not an event; an event is acknowledged only once the warehouse
committed it; publication to the Redis stream comes after and may fail without failing the
request (the event is durable; ``published`` says whether it reached the stream, and the
webhook sensor publishes what the intake could not). A re-delivered event (same id or same
payload) is acknowledged with the stored event's id and ``duplicate`` set, and is neither
stored nor published again. The events of concurrent requests are committed together
(:mod:`fks_pipelines.webhooks.writer`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from pydantic import SecretStr

from fks_pipelines.warehouse.store import Warehouse, WarehouseError
from fks_pipelines.warehouse.webhook_events import Receipt, WebhookEventStore
from fks_pipelines.webhooks import signing
from fks_pipelines.webhooks.events import parse_events
from fks_pipelines.webhooks.stream import EventStream
from fks_pipelines.webhooks.writer import GroupWriter, StorageUnavailable

log = logging.getLogger(__name__)


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
        warehouse_url: Where ``webhook_events`` lives. The warehouse is opened on first use, so
            a database that is down at start-up fails requests (503), not the service.
        stream: The Redis stream, or ``None`` without Redis (events stay unpublished).
        clock: Unix time now, for the timestamp window.
    """

    def __init__(
        self,
        secret: SecretStr | None,
        warehouse_url: str,
        stream: EventStream | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret if secret is not None and secret.get_secret_value() else None
        self.warehouse_url = warehouse_url
        self.stream = stream
        self._clock = clock
        self._lock = threading.Lock()
        self._group_writer: GroupWriter | None = None

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
        if self._secret is None:
            raise IntakeDisabled("FKS_WEBHOOK_SECRET is not set: webhooks are refused")
        signing.verify(self._secret, timestamp, signature, body)
        delivery = parse_events(source, body)
        return Acknowledgement(self._writer().write(delivery.events), delivery.batch)

    def close(self) -> None:
        """Finish the writes under way, stop the writer thread, close the stream's client."""
        with self._lock:
            writer, self._group_writer = self._group_writer, None
        if writer is not None:
            writer.close()
        if self.stream is not None:
            self.stream.close()

    def _writer(self) -> GroupWriter:
        """The writer, started with the event store on first use (the warehouse is opened, and
        its schema made, then).

        Raises:
            StorageUnavailable: The warehouse cannot be reached.
        """
        with self._lock:
            if self._group_writer is None:
                self._group_writer = GroupWriter(self._store(), self.stream, self._clock)
            return self._group_writer

    def _store(self) -> WebhookEventStore:
        try:
            return WebhookEventStore(Warehouse.from_url(self.warehouse_url))
        except (sa.exc.SQLAlchemyError, WarehouseError) as exc:
            # The driver's own message, never the URL (it may hold a password).
            cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else type(exc).__name__
            log.error("webhook event store unavailable: %s", cause)
            raise StorageUnavailable("the event store is unavailable; nothing was stored") from exc
