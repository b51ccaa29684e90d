"""Group commit on SQLite and PostgreSQL: concurrent requests share a transaction, each is
answered only once stored, and a request the database refuses fails alone."""

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import pytest
import redis
import sqlalchemy as sa

from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import Receipt, WebhookEventStore
from fks_pipelines.webhooks.events import WebhookEvent, parse_events
from fks_pipelines.webhooks.stream import STREAM, EventStream
from fks_pipelines.webhooks.writer import EventRejected, GroupWriter, StorageUnavailable
from fks_pipelines_tests.webhooks.samples import body, closed_kline

HOUR = 3_600_000
JULY_9 = 1720483200000


def event(n: int) -> WebhookEvent:
    [parsed] = parse_events(
        "binance", body(closed_kline("BTCUSDT", "1h", JULY_9 + n * HOUR))
    ).events
    return parsed


@pytest.fixture
def store(warehouse_url: str) -> WebhookEventStore:
    return WebhookEventStore(Warehouse.from_url(warehouse_url))


@pytest.fixture
def writer(store: WebhookEventStore) -> Iterator[GroupWriter]:
    writer = GroupWriter(store, None, time.time)
    yield writer
    writer.close()


@contextmanager
def table_locked(store: WebhookEventStore) -> Iterator[None]:
    """Hold the write lock of ``webhook_events`` from another connection while the block runs."""
    engine = sa.create_engine(store.warehouse.engine.url, poolclass=sa.NullPool)
    with engine.connect() as conn:
        if store.warehouse.dialect == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.exec_driver_sql("LOCK TABLE webhook_events IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


def queued_behind_a_lock(
    writer: GroupWriter, store: WebhookEventStore, batches: list[list[WebhookEvent]]
) -> list[Future[list[Receipt]]]:
    """Write ``batches`` from as many threads while the table is locked: the first blocks the
    writer inside its transaction and the others queue up behind it, then the lock goes."""
    pool = ThreadPoolExecutor(len(batches))
    with table_locked(store):
        futures = [pool.submit(writer.write, batches[0])]
        while writer._queue.qsize():  # the writer took the first write and is blocked on it
            time.sleep(0.01)
        futures += [pool.submit(writer.write, events) for events in batches[1:]]
        while writer._queue.qsize() < len(batches) - 1:
            time.sleep(0.01)
    pool.shutdown(wait=False)
    return futures


def test_requests_waiting_for_the_database_are_committed_together(
    writer: GroupWriter, store: WebhookEventStore
) -> None:
    futures = queued_behind_a_lock(writer, store, [[event(n)] for n in range(21)])

    receipts = [f.result(timeout=60)[0] for f in futures]

    assert [r.duplicate for r in receipts] == [False] * 21
    assert store.count() == 21
    stored = [store.get(r.id) for r in receipts]
    stored_at = {s.received_at for s in stored if s is not None}
    assert len(stored_at) == 2  # the first request alone, then the 20 queued behind it at once


def test_a_request_the_database_refuses_fails_alone(
    writer: GroupWriter, store: WebhookEventStore
) -> None:
    refused = replace(event(99), end=event(99).start)  # breaks the table's window check
    batches = [[event(0)], [event(1)], [refused, event(2)], [event(3)]]

    futures = queued_behind_a_lock(writer, store, batches)

    assert not futures[0].result(timeout=60)[0].duplicate
    assert not futures[1].result(timeout=60)[0].duplicate
    with pytest.raises(EventRejected, match="refused"):  # its own fault: 422, not "retry"
        futures[2].result(timeout=60)
    assert not futures[3].result(timeout=60)[0].duplicate
    assert store.count() == 3  # the refused request stored nothing, not even its good event
    assert store.get(event(2).id) is None


def test_the_same_event_from_two_requests_of_one_batch_is_stored_once(
    writer: GroupWriter, store: WebhookEventStore
) -> None:
    futures = queued_behind_a_lock(writer, store, [[event(0)], [event(1)], [event(1)]])

    [a], [b], [c] = (f.result(timeout=60) for f in futures)

    # The two requests of event 1 queue from two threads in either order: one stores it.
    assert not a.duplicate and sorted((b.duplicate, c.duplicate)) == [False, True]
    assert b.id == c.id and b.seq == c.seq
    assert store.count() == 2


def test_new_events_are_published_and_marked(
    store: WebhookEventStore, redis_client: redis.Redis, redis_url: str
) -> None:
    writer = GroupWriter(store, EventStream.from_url(redis_url, maxlen=100), time.time)
    try:
        [first] = writer.write([event(0)])
        [again] = writer.write([event(0)])
    finally:
        writer.close()

    assert first.published and again.published and again.duplicate
    assert redis_client.xlen(STREAM) == 1
    stored = store.get(first.id)
    assert stored is not None and stored.published


def test_close_finishes_the_queued_writes(store: WebhookEventStore) -> None:
    writer = GroupWriter(store, None, time.time)
    results: list[list[Receipt]] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(writer.write([event(n)])))
        for n in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    writer.close()

    assert len(results) == 10
    assert store.count() == 10


@pytest.fixture
def pg_store(pg_warehouse_url: str) -> WebhookEventStore:
    return WebhookEventStore(Warehouse.from_url(pg_warehouse_url), timeout_s=1.0)


def test_a_batch_the_database_does_not_take_in_time_fails_whole(
    pg_store: WebhookEventStore,
) -> None:
    """A locked table fails a batch after the store's timeout, all its requests at once: tried
    one by one, 6 requests waited 6 timeouts (and the batches behind them as long)."""
    writer = GroupWriter(pg_store, None, time.time)
    assert pg_store.timeout_s is not None
    try:
        with table_locked(pg_store):
            started = time.monotonic()
            futures = [writer.submit([event(n)]) for n in range(6)]
            for future in futures:
                with pytest.raises(StorageUnavailable, match="unavailable"):
                    future.result(timeout=60)
            elapsed = time.monotonic() - started
    finally:
        writer.close()

    # One batch, or the first request and then the rest: at most two timeouts.
    assert elapsed < 4 * pg_store.timeout_s
    assert pg_store.count() == 0
    after = GroupWriter(pg_store, None, time.time)
    try:
        [receipt] = after.write([event(0)])  # the lock is gone
    finally:
        after.close()
    assert not receipt.duplicate


def test_a_write_given_up_before_its_batch_began_is_not_stored(
    writer: GroupWriter, store: WebhookEventStore
) -> None:
    with table_locked(store):
        first = writer.submit([event(0)])
        while writer._queue.qsize():  # the writer took the first write and is blocked on it
            time.sleep(0.01)
        given_up = writer.submit([event(1)])
        assert writer.pending == 2
        assert given_up.cancel()  # what the service does when a request stops waiting

    assert not first.result(timeout=60)[0].duplicate
    assert writer.write([event(2)])  # the writer went on past the cancelled write
    assert store.get(event(1).id) is None
    assert store.count() == 2
    assert writer.pending == 0


def test_a_value_the_database_refuses_is_rejected_and_fails_alone(
    pg_store: WebhookEventStore,
) -> None:
    """PostgreSQL's jsonb refuses an infinite number (the intake refuses one before this;
    here the event is made by hand): not a "retry later" for the sender."""
    infinite = replace(event(7), payload={"x": float("inf")})
    writer = GroupWriter(pg_store, None, time.time)
    try:
        futures = queued_behind_a_lock(writer, pg_store, [[event(0)], [infinite], [event(1)]])
        assert not futures[0].result(timeout=60)[0].duplicate
        with pytest.raises(EventRejected, match="refused the event"):
            futures[1].result(timeout=60)
        assert not futures[2].result(timeout=60)[0].duplicate
    finally:
        writer.close()
    assert pg_store.count() == 2


def test_the_writer_opens_the_store_itself_and_again_after_it_could_not(
    warehouse_url: str,
) -> None:
    down = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    urls = [down, warehouse_url]

    def open_store() -> WebhookEventStore:
        try:
            return WebhookEventStore(Warehouse.from_url(urls.pop(0)))
        except sa.exc.OperationalError as exc:
            raise StorageUnavailable("the event store is unavailable") from exc

    writer = GroupWriter(open_store, None, time.time)
    try:
        with pytest.raises(StorageUnavailable):
            writer.write([event(0)])
        [receipt] = writer.write([event(0)])
    finally:
        writer.close()

    assert not receipt.duplicate
    assert urls == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
