"""The service's own app takes webhooks: the intake its start-up built, its warehouse, its
Redis stream and its metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis

from fks_pipelines.api.app import create_app
from fks_pipelines.settings import Settings
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import WebhookEventStore
from fks_pipelines.webhooks.stream import STREAM
from fks_pipelines_tests.api.support import Fakes, served
from fks_pipelines_tests.webhooks.samples import body, closed_kline, headers

pytestmark = pytest.mark.anyio

SECRET = "whsec-app-tests-2b7d91"
KLINE = closed_kline("BTCUSDT", "1h", 1720519200000)  # 2024-07-09 10:00 UTC


@pytest.fixture
def signed_settings(
    fakes: Fakes, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> Settings:
    return fakes.settings(tmp_path, REDIS_URL=redis_url, FKS_WEBHOOK_SECRET=SECRET)


@pytest.fixture
async def signed_api(signed_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with served(create_app(signed_settings)) as client:
        yield client


async def test_the_app_stores_and_publishes_a_signed_event(
    signed_api: httpx.AsyncClient, signed_settings: Settings, redis_client: redis.Redis
) -> None:
    raw = body(KLINE)

    response = await signed_api.post("/webhooks/binance", content=raw, headers=headers(SECRET, raw))

    assert response.status_code == 202
    event_id = response.json()["id"]
    store = WebhookEventStore(Warehouse.from_url(signed_settings.resolved_warehouse_url))
    stored = store.get(event_id)
    assert stored is not None and stored.payload == KLINE
    [(_, fields)] = redis_client.xrange(STREAM)
    assert fields[b"id"] == event_id.encode()
    metrics = (await signed_api.get("/metrics")).text
    assert 'fks_webhook_events_total{outcome="accepted",provider="binance"}' in metrics


async def test_the_app_without_a_secret_refuses_webhooks(api: httpx.AsyncClient) -> None:
    raw = body(KLINE)

    response = await api.post("/webhooks/binance", content=raw, headers=headers(SECRET, raw))

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "webhooks_disabled"


async def test_the_app_documents_the_webhook_route(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()

    assert "/webhooks/{provider}" in document["paths"]
