"""Durable storage of webhook events (table ``webhook_events``), on PostgreSQL and SQLite.

An event is inserted with ``INSERT ... ON CONFLICT DO NOTHING`` against the unique event id
and payload hash, so two deliveries of one event racing each other store it once: there is no
read-then-write window. The rows an insert skipped are the duplicates; their stored twin is
looked up in the same transaction.

``seq`` numbers events in arrival order. The webhook sensor reads the events after its cursor
*and* any still ``pending`` below it: on PostgreSQL a sequence number is drawn when an insert
starts, so a transaction that commits late can land below numbers already read.

The intake's writes wait a bounded time (``timeout_s``: PostgreSQL's ``lock_timeout`` and
``statement_timeout`` for their transaction): a table locked by a migration or a long
maintenance statement fails them in time to answer the sender 503 "retry later", well within
the sender's own timeout, instead of holding the intake for as long as the lock lasts. On SQLite
the wait for the write lock is the connection's busy timeout.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.tables import webhook_events
from fks_pipelines.webhooks.events import WebhookEvent

PENDING = "pending"
_IN_CHUNK = 1000  # bound parameters per IN list, well within both databases' limits

T = TypeVar("T")


@dataclass(frozen=True)
class Receipt:
    """What an intake answers for one event: its id, and whether it was stored before."""

    id: str
    seq: int
    duplicate: bool
    published: bool


@dataclass(frozen=True)
class StoredEvent:
    """A stored event; ``payload`` is loaded only where it is needed (publication)."""

    seq: int
    id: str
    received_at: datetime
    source: str
    provider: str
    symbol: str
    interval: str
    start: datetime
    end: datetime
    closed: bool
    status: str
    reason: str | None
    published: bool
    payload: dict[str, Any] | None = None


@dataclass(frozen=True)
class StatusUpdate:
    seq: int
    status: str
    reason: str


_SUMMARY = (
    webhook_events.c.seq,
    webhook_events.c.id,
    webhook_events.c.received_at,
    webhook_events.c.source,
    webhook_events.c.provider,
    webhook_events.c.symbol,
    webhook_events.c.interval,
    webhook_events.c.window_start,
    webhook_events.c.window_end,
    webhook_events.c.closed,
    webhook_events.c.status,
    webhook_events.c.reason,
    webhook_events.c.published,
)


class WebhookEventStore:
    """The ``webhook_events`` table of one warehouse.

    Args:
        warehouse: Where the table is.
        timeout_s: Longest one of the intake's transactions (:meth:`add`,
            :meth:`mark_published`) waits for a lock or a statement on PostgreSQL; ``None``
            waits as long as the database does.
    """

    def __init__(self, warehouse: Warehouse, timeout_s: float | None = None) -> None:
        self.warehouse = warehouse
        self.timeout_s = timeout_s
        dialect = postgresql if warehouse.dialect == "postgresql" else sqlite
        table = webhook_events
        # The intake's statements, built once with bound parameters: building a statement per
        # request cost more CPU than executing it.
        self._insert = (
            dialect.insert(table).on_conflict_do_nothing().returning(table.c.id, table.c.seq)
        )
        self._publish = (
            sa.update(table)
            .where(table.c.seq.in_(sa.bindparam("seqs", expanding=True)))
            .values(published=True)
        )
        self._set_status = (
            sa.update(table)
            .where(table.c.seq == sa.bindparam("event_seq"))
            .values(
                status=sa.bindparam("new_status"),
                reason=sa.bindparam("new_reason"),
                handled_at=sa.bindparam("at"),
            )
        )

    def add(self, events: Sequence[WebhookEvent], received_at: datetime) -> list[Receipt]:
        """Store ``events`` (all or none) unless stored before; one receipt per event, in order.

        Raises:
            WarehouseError: The database refused or is unreachable; nothing was stored.
        """
        received = self._time(received_at)
        rows = [
            {
                "id": e.id,
                "payload_hash": e.payload_hash,
                "received_at": received,
                "source": e.source,
                "provider": e.provider,
                "symbol": e.symbol,
                "interval": e.interval,
                "window_start": self._time(e.start),
                "window_end": self._time(e.end),
                "closed": e.closed,
                "payload": e.payload,
                "status": PENDING,
                "published": False,
            }
            for e in events
        ]
        with self.warehouse.transaction(f"storing {len(rows)} webhook events") as conn:
            self._bound(conn)
            inserted = {row.id: row.seq for row in conn.execute(self._insert, rows)}
            skipped = [e for e in events if e.id not in inserted]
            twins = self._twins(conn, skipped) if skipped else []
        by_id = {t.id: t for t in twins}
        by_hash = {t.hash: t for t in twins}
        receipts = []
        claimed: set[str] = set()
        for event in events:
            if event.id in inserted:
                # A second copy within one body is a duplicate of the first.
                receipts.append(Receipt(event.id, inserted[event.id], event.id in claimed, False))
                claimed.add(event.id)
                continue
            twin = by_id.get(event.id) or by_hash[event.payload_hash]
            receipts.append(Receipt(twin.id, twin.seq, True, twin.published))
        return receipts

    def _bound(self, conn: sa.Connection) -> None:
        """Give this transaction :attr:`timeout_s` to wait for locks and statements (one round
        trip; ``SET LOCAL`` ends with the transaction, so the pooled connection keeps its own
        settings)."""
        if self.timeout_s is None or self.warehouse.dialect != "postgresql":
            return
        limit = f"{max(1, round(self.timeout_s * 1000))}ms"
        conn.execute(
            sa.text(
                "SELECT set_config('lock_timeout', :limit, true), "
                "set_config('statement_timeout', :limit, true)"
            ),
            {"limit": limit},
        )

    @staticmethod
    def _twins(conn: sa.Connection, events: Sequence[WebhookEvent]) -> list[sa.Row[Any]]:
        """The stored events sharing an id or a payload hash with ``events``."""
        table = webhook_events
        columns = (table.c.id, table.c.payload_hash.label("hash"), table.c.seq, table.c.published)
        twins: list[sa.Row[Any]] = []
        for chunk in _chunks(events):
            ids = [e.id for e in chunk]
            hashes = [e.payload_hash for e in chunk]
            query = sa.select(*columns).where(
                sa.or_(table.c.id.in_(ids), table.c.payload_hash.in_(hashes))
            )
            twins += conn.execute(query)
        return twins

    def mark_published(self, seqs: Iterable[int]) -> None:
        """Record that the events ``seqs`` are in the Redis stream."""
        with self.warehouse.transaction("marking webhook events published") as conn:
            self._bound(conn)
            if self.warehouse.dialect == "postgresql":
                # The flag only spares a second publication: losing it in a crash is harmless
                # (delivery is at least once), so this commit does not wait for the WAL flush.
                conn.exec_driver_sql("SET LOCAL synchronous_commit = off")
            for chunk in _chunks(sorted(seqs)):
                conn.execute(self._publish, {"seqs": list(chunk)})

    def unpublished(self, received_before: datetime, limit: int) -> list[StoredEvent]:
        """The oldest events not in the stream yet, received before ``received_before``."""
        table = webhook_events
        query = (
            sa.select(*_SUMMARY, table.c.payload)
            .where(
                table.c.published == sa.false(),
                table.c.received_at < self._time(received_before),
            )
            .order_by(table.c.seq)
            .limit(limit)
        )
        with self.warehouse.engine.connect() as conn:
            return [self._stored(row, row.payload) for row in conn.execute(query)]

    def to_handle(self, cursor: int, limit: int) -> list[StoredEvent]:
        """Events after ``cursor``, and any still pending below it, oldest first."""
        table = webhook_events
        query = (
            sa.select(*_SUMMARY)
            .where(sa.or_(table.c.seq > cursor, table.c.status == PENDING))
            .order_by(table.c.seq)
            .limit(limit)
        )
        with self.warehouse.engine.connect() as conn:
            return [self._stored(row) for row in conn.execute(query)]

    def latest_closed(self, provider: str, since: datetime) -> dict[tuple[str, str], datetime]:
        """Per (symbol, interval) of ``provider``, the open of the newest final bar an event
        reported, among bars opening at or after ``since``: where a stream left off."""
        table = webhook_events
        query = (
            sa.select(table.c.symbol, table.c.interval, sa.func.max(table.c.window_start))
            .where(
                table.c.provider == provider,
                table.c.closed == sa.true(),
                table.c.window_start >= self._time(since),
            )
            .group_by(table.c.symbol, table.c.interval)
        )
        with self.warehouse.engine.connect() as conn:
            return {
                (symbol, interval): _utc(start) for symbol, interval, start in conn.execute(query)
            }

    def set_status(self, updates: Iterable[StatusUpdate], at: datetime) -> None:
        """Give events their status and reason: one statement, executed for every event."""
        handled = self._time(at)
        rows = [
            {"event_seq": u.seq, "new_status": u.status, "new_reason": u.reason, "at": handled}
            for u in updates
        ]
        if not rows:
            return
        with self.warehouse.transaction("recording webhook event statuses") as conn:
            conn.execute(self._set_status, rows)

    def purge(self, handled_before: datetime, *, unpublished_too: bool, limit: int) -> int:
        """Delete at most ``limit`` events the sensor handled before ``handled_before``; returns
        how many. Pending events are never deleted, nor unpublished ones unless
        ``unpublished_too`` (no stream to publish them to). A purged event's id and payload hash
        are forgotten: a re-delivery after that is a new event."""
        table = webhook_events
        conditions = [table.c.status != PENDING, table.c.handled_at < self._time(handled_before)]
        if not unpublished_too:
            conditions.append(table.c.published == sa.true())
        oldest = sa.select(table.c.seq).where(*conditions).order_by(table.c.seq).limit(limit)
        with self.warehouse.transaction("purging handled webhook events") as conn:
            seqs = list(conn.execute(oldest).scalars())
            for chunk in _chunks(seqs):
                conn.execute(sa.delete(table).where(table.c.seq.in_(chunk)))
        return len(seqs)

    def get(self, event_id: str) -> StoredEvent | None:
        """The stored event ``event_id`` with its payload, if any."""
        table = webhook_events
        query = sa.select(*_SUMMARY, table.c.payload).where(table.c.id == event_id)
        with self.warehouse.engine.connect() as conn:
            row = conn.execute(query).first()
        return self._stored(row, row.payload) if row is not None else None

    def count(self) -> int:
        with self.warehouse.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(webhook_events)).scalar_one()

    def _time(self, value: datetime) -> datetime:
        """UTC; naive on SQLite, whose DATETIME storage has no offset."""
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if self.warehouse.dialect == "sqlite" else value

    @staticmethod
    def _stored(row: sa.Row[Any], payload: dict[str, Any] | None = None) -> StoredEvent:
        return StoredEvent(
            seq=row.seq,
            id=row.id,
            received_at=_utc(row.received_at),
            source=row.source,
            provider=row.provider,
            symbol=row.symbol,
            interval=row.interval,
            start=_utc(row.window_start),
            end=_utc(row.window_end),
            closed=row.closed,
            status=row.status,
            reason=row.reason,
            published=row.published,
            payload=payload,
        )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(values: Sequence[T]) -> list[Sequence[T]]:
    return [values[i : i + _IN_CHUNK] for i in range(0, len(values), _IN_CHUNK)]
