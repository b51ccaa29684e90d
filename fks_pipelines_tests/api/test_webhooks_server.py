"""The webhook route through a real socket: uvicorn on loopback, a real client, and a fuzz."""

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import WebhookEventStore
from fks_pipelines.webhooks.events import EXAMPLES
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines.webhooks.stream import STREAM, EventStream
from fks_pipelines_tests.api.test_webhooks import SECRET, webhook_app
from fks_pipelines_tests.api.uvicorn_server import serve
from fks_pipelines_tests.webhooks.samples import closed_kline, headers


@pytest.fixture
def server(warehouse_url: str, redis_client: redis.Redis, redis_url: str) -> Iterator[str]:
    intake = WebhookIntake(
        SecretStr(SECRET), warehouse_url, EventStream.from_url(redis_url, maxlen=10_000)
    )
    with serve(webhook_app(intake)) as url:
        yield url
    intake.close()


def test_a_signed_event_through_a_real_socket(
    server: str, warehouse_url: str, redis_client: redis.Redis
) -> None:
    raw = json.dumps(closed_kline("ETHUSDT", "1d", 1720483200000)).encode()

    with httpx.Client(base_url=server) as client:
        response = client.post("/webhooks/binance", content=raw, headers=headers(SECRET, raw))
        refused = client.post("/webhooks/binance", content=raw, headers=headers("guess", raw))

    assert response.status_code == 202
    assert response.json()["duplicate"] is False
    assert refused.status_code == 401
    store = WebhookEventStore(Warehouse.from_url(warehouse_url))
    assert store.get(response.json()["id"]) is not None
    assert redis_client.xlen(STREAM) == 1


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["\x00", "\ud800", "1e999", "", "AM", "kline", "ohlcv.updated", "1h"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


def mutated(example: object) -> st.SearchStrategy[object]:
    """``example`` with one top-level field replaced, removed or added: near-valid events."""
    event = example[0] if isinstance(example, list) else example
    assert isinstance(event, dict)
    fields = st.sampled_from([*event, "k", "extra"])
    replaced = st.builds(lambda key, value: {**event, key: value}, fields, json_values)
    removed = fields.map(lambda key: {k: v for k, v in event.items() if k != key})
    return replaced | removed | st.lists(replaced, min_size=1, max_size=3)


bodies = st.sampled_from(sorted(EXAMPLES)).flatmap(
    lambda provider: st.tuples(
        st.just(provider), mutated(EXAMPLES[provider]) | json_values | st.binary(max_size=64)
    )
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=bodies)
def test_no_signed_body_makes_a_server_error(server: str, case: tuple[str, object]) -> None:
    provider, payload = case
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()

    with httpx.Client(base_url=server) as client:
        response = client.post(
            f"/webhooks/{provider}", content=raw, headers=headers(SECRET, raw, time.time())
        )

    assert response.status_code in (202, 400, 422), response.text
    if response.status_code != 202:
        assert response.json()["error"]["message"]
