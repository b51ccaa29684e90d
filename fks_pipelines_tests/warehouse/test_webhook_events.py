"""The webhook_events table on SQLite and PostgreSQL: durable, de-duplicated, in order."""

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from fks_pipelines.warehouse.store import Warehouse, WarehouseError
from fks_pipelines.warehouse.webhook_events import StatusUpdate, WebhookEventStore
from fks_pipelines.webhooks.events import WebhookEvent, parse_events

RECEIVED = datetime(2024, 7, 10, 12, 0, 0, 123456, tzinfo=UTC)


def kline(open_ms: int, event_ms: int, symbol: str = "BTCUSDT") -> WebhookEvent:
    payload = {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": open_ms,
            "T": open_ms + 3_599_999,
            "i": "1h",
            "o": "1",
            "c": "2",
            "h": "3",
            "l": "0.5",
            "v": "10",
            "x": True,
        },
    }
    [event] = parse_events("binance", json.dumps(payload).encode()).events
    return event


@pytest.fixture
def store(warehouse_url: str) -> WebhookEventStore:
    return WebhookEventStore(Warehouse.from_url(warehouse_url))


def test_new_events_are_stored_in_order_with_their_fields(store: WebhookEventStore) -> None:
    a, b = kline(1720605600000, 1720609200001), kline(1720609200000, 1720612800001)

    receipts = store.add([a, b], RECEIVED)

    assert [(r.id, r.duplicate, r.published) for r in receipts] == [
        (a.id, False, False),
        (b.id, False, False),
    ]
    assert receipts[0].seq < receipts[1].seq
    stored = store.get(a.id)
    assert stored is not None
    assert (stored.seq, stored.status, stored.reason, stored.published) == (
        receipts[0].seq,
        "pending",
        None,
        False,
    )
    assert stored.received_at == RECEIVED
    assert (stored.start, stored.end) == (a.start, a.end)
    assert stored.start.tzinfo == UTC
    assert (stored.provider, stored.symbol, stored.interval, stored.closed) == (
        "binance",
        "BTCUSDT",
        "1h",
        True,
    )
    assert stored.payload == a.payload


def test_a_redelivery_by_id_or_by_payload_is_a_duplicate(store: WebhookEventStore) -> None:
    event = kline(1720605600000, 1720609200001)
    [first] = store.add([event], RECEIVED)

    [same_id] = store.add([replace(event, payload_hash="0" * 64)], RECEIVED)
    [same_payload] = store.add([replace(event, id="binance:other")], RECEIVED)

    assert same_id == replace(first, duplicate=True)
    assert same_payload == replace(first, duplicate=True)  # answered with the stored id
    assert store.count() == 1


def test_a_body_repeating_an_event_stores_it_once(store: WebhookEventStore) -> None:
    event = kline(1720605600000, 1720609200001)

    receipts = store.add([event, event], RECEIVED)

    assert [r.duplicate for r in receipts] == [False, True]
    assert receipts[0].seq == receipts[1].seq
    assert store.count() == 1


def test_concurrent_deliveries_of_one_event_store_it_once(store: WebhookEventStore) -> None:
    event = kline(1720605600000, 1720609200001)
    barrier = threading.Barrier(8)
    outcomes: list[bool] = []

    def deliver() -> None:
        barrier.wait()
        [receipt] = store.add([event], RECEIVED)
        outcomes.append(receipt.duplicate)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == [False] + [True] * 7
    assert store.count() == 1


def test_a_batch_is_stored_whole_or_not_at_all(store: WebhookEventStore) -> None:
    good = kline(1720605600000, 1720609200001)
    empty_window = replace(kline(1720609200000, 1720612800001), end=good.start)

    with pytest.raises(WarehouseError, match="nothing was changed"):
        store.add([good, empty_window], RECEIVED)

    assert store.count() == 0


def test_events_to_handle_follow_the_cursor_and_catch_late_pending_ones(
    store: WebhookEventStore,
) -> None:
    receipts = store.add(
        [kline(1720605600000 + n * 3_600_000, 1720609200001 + n) for n in range(4)], RECEIVED
    )
    seqs = [r.seq for r in receipts]

    first = store.to_handle(cursor=0, limit=2)
    store.set_status(
        [
            StatusUpdate(seqs[0], "requested", "refresh it"),
            StatusUpdate(seqs[1], "unmapped", "no asset"),
        ],
        RECEIVED,
    )
    rest = store.to_handle(cursor=seqs[1], limit=10)
    # An event below the cursor still pending (a transaction that committed late) is read too.
    store.set_status([StatusUpdate(seq, "ignored", "open bar") for seq in seqs[2:]], RECEIVED)
    store.set_status([StatusUpdate(seqs[0], "pending", "")], RECEIVED)
    late = store.to_handle(cursor=seqs[3], limit=10)

    assert [e.seq for e in first] == seqs[:2]
    assert [e.seq for e in rest] == seqs[2:]
    assert [e.seq for e in late] == [seqs[0]]
    stored = store.get(receipts[1].id)
    assert stored is not None
    assert (stored.status, stored.reason) == ("unmapped", "no asset")


def test_unpublished_events_are_listed_oldest_first_until_marked(
    store: WebhookEventStore,
) -> None:
    old = store.add([kline(1720605600000, 1720609200001)], RECEIVED)
    new = store.add([kline(1720609200000, 1720612800001)], RECEIVED + timedelta(minutes=5))

    due = store.unpublished(received_before=RECEIVED + timedelta(minutes=1), limit=10)
    store.mark_published([old[0].seq])
    after = store.unpublished(received_before=RECEIVED + timedelta(hours=1), limit=10)

    assert [e.seq for e in due] == [old[0].seq]
    assert due[0].payload is not None and due[0].payload["E"] == 1720609200001
    assert [e.seq for e in after] == [new[0].seq]


def test_purge_deletes_only_handled_and_published_events_handled_before_the_cutoff(
    store: WebhookEventStore,
) -> None:
    old, unpublished, recent, pending = (
        kline(1720605600000 + k * 3_600_000, 1720609200001 + k * 3_600_000) for k in range(4)
    )
    receipts = store.add([old, unpublished, recent, pending], RECEIVED)
    seqs = [r.seq for r in receipts]
    store.mark_published([seqs[0], seqs[2], seqs[3]])
    store.set_status([StatusUpdate(s, "requested", "") for s in seqs[:2]], RECEIVED)
    store.set_status([StatusUpdate(seqs[2], "ignored", "open bar")], RECEIVED + timedelta(days=2))
    cutoff = RECEIVED + timedelta(days=1)

    assert store.purge(cutoff, unpublished_too=False, limit=100) == 1
    assert store.get(old.id) is None
    assert [store.get(e.id) is not None for e in (unpublished, recent, pending)] == [True] * 3

    assert store.purge(cutoff, unpublished_too=True, limit=100) == 1
    assert store.get(unpublished.id) is None
    assert store.count() == 2


def test_a_purged_event_delivered_again_is_stored_again(store: WebhookEventStore) -> None:
    event = kline(1720605600000, 1720609200001)
    [receipt] = store.add([event], RECEIVED)
    store.set_status([StatusUpdate(receipt.seq, "requested", "")], RECEIVED)

    store.purge(RECEIVED + timedelta(seconds=1), unpublished_too=True, limit=100)
    [again] = store.add([event], RECEIVED + timedelta(days=40))

    assert not again.duplicate
    assert again.seq > receipt.seq
