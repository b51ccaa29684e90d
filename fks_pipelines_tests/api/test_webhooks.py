"""POST /webhooks/{provider} on the ASGI transport, with a real warehouse and a real Redis."""

import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from prometheus_client import REGISTRY
from pydantic import SecretStr

from fks_pipelines.api.errors import install_error_handlers
from fks_pipelines.api.services import intake_from_settings
from fks_pipelines.api.webhooks import MAX_BODY_BYTES, build_webhook_router
from fks_pipelines.settings import Settings
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import WebhookEventStore
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines.webhooks.stream import STREAM, EventStream
from fks_pipelines_tests.webhooks.samples import (
    BINANCE_DOCS_KLINE,
    GENERIC,
    POLYGON_DOCS_AM,
    body,
    closed_kline,
    headers,
)

pytestmark = pytest.mark.anyio

SECRET = "whsec-route-tests-5f1c0a"
KLINE = closed_kline("BTCUSDT", "1h", 1720519200000)  # 2024-07-09 10:00 UTC


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_app(intake: WebhookIntake) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_webhook_router(intake))
    return app


def client_of(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.fixture
def stream(redis_client: redis.Redis, redis_url: str) -> EventStream:
    return EventStream.from_url(redis_url, maxlen=10_000)


@pytest.fixture
def intakes() -> Iterator[Callable[..., WebhookIntake]]:
    """Makes intakes, closed (their writer threads stopped) after the test."""
    made: list[WebhookIntake] = []

    def make(*args: Any, **kwargs: Any) -> WebhookIntake:
        made.append(WebhookIntake(*args, **kwargs))
        return made[-1]

    yield make
    for intake in made:
        intake.close()


@pytest.fixture
def intake(
    intakes: Callable[..., WebhookIntake], warehouse_url: str, stream: EventStream
) -> WebhookIntake:
    return intakes(SecretStr(SECRET), warehouse_url, stream)


@pytest.fixture
def store(warehouse_url: str) -> WebhookEventStore:
    return WebhookEventStore(Warehouse.from_url(warehouse_url))


@pytest.fixture
async def client(intake: WebhookIntake) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(webhook_app(intake)) as client:
        yield client


async def post(
    client: httpx.AsyncClient, provider: str, payload: object, at: float | None = None
) -> httpx.Response:
    raw = body(payload)
    return await client.post(f"/webhooks/{provider}", content=raw, headers=headers(SECRET, raw, at))


def count(provider: str, outcome: str) -> float:
    labels = {"provider": provider, "outcome": outcome}
    return REGISTRY.get_sample_value("fks_webhook_events_total", labels) or 0.0


async def test_a_signed_binance_kline_is_stored_published_and_acknowledged(
    client: httpx.AsyncClient, store: WebhookEventStore, redis_client: redis.Redis
) -> None:
    accepted = count("binance", "accepted")

    response = await post(client, "binance", KLINE)

    assert response.status_code == 202
    event_id = "binance:BTCUSDT:1h:1720519200000:closed"
    assert response.json() == {"id": event_id, "duplicate": False, "published": True}
    stored = store.get(event_id)
    assert stored is not None and stored.payload == KLINE
    assert (stored.status, stored.published) == ("pending", True)
    [(_, fields)] = redis_client.xrange(STREAM)
    assert fields[b"id"] == event_id.encode()
    assert count("binance", "accepted") == accepted + 1


async def test_a_polygon_list_is_acknowledged_event_by_event(
    client: httpx.AsyncClient, store: WebhookEventStore, redis_client: redis.Redis
) -> None:
    later = {**POLYGON_DOCS_AM, "s": 1610144700000, "e": 1610144760000}

    response = await post(client, "polygon", [POLYGON_DOCS_AM, later, POLYGON_DOCS_AM])

    assert response.status_code == 202
    assert response.json() == {
        "events": [
            {"id": "polygon:AM:GTE:1610144640000", "duplicate": False, "published": True},
            {"id": "polygon:AM:GTE:1610144700000", "duplicate": False, "published": True},
            {"id": "polygon:AM:GTE:1610144640000", "duplicate": True, "published": True},
        ]
    }
    assert store.count() == 2
    assert redis_client.xlen(STREAM) == 2


async def test_a_generic_notice_is_stored(
    client: httpx.AsyncClient, store: WebhookEventStore
) -> None:
    response = await post(client, "generic", GENERIC)

    assert response.status_code == 202
    stored = store.get(response.json()["id"])
    assert stored is not None
    assert (stored.source, stored.provider, stored.symbol, stored.interval) == (
        "generic",
        "eodhd",
        "AAPL.US",
        "1d",
    )


async def test_a_replayed_request_is_acknowledged_once_and_stored_once(
    client: httpx.AsyncClient, store: WebhookEventStore, redis_client: redis.Redis
) -> None:
    raw = body(KLINE)
    signed = headers(SECRET, raw)

    first = await client.post("/webhooks/binance", content=raw, headers=signed)
    replay = await client.post("/webhooks/binance", content=raw, headers=signed)
    resigned = await post(client, "binance", KLINE)  # a sender's retry, signed again

    assert first.status_code == replay.status_code == resigned.status_code == 202
    assert replay.json() == {**first.json(), "duplicate": True}
    assert resigned.json() == replay.json()
    assert store.count() == 1
    assert redis_client.xlen(STREAM) == 1


@pytest.mark.parametrize(
    ("sign", "code"),
    [
        (lambda raw: {}, "missing_signature"),
        (
            lambda raw: {"X-FKS-Timestamp": headers(SECRET, raw)["X-FKS-Timestamp"]},
            "missing_signature",
        ),
        (lambda raw: headers("not-the-secret", raw), "invalid_signature"),
        (lambda raw: headers(SECRET, raw + b" "), "invalid_signature"),
        (lambda raw: headers(SECRET, raw, at=1_000_000_000), "stale_timestamp"),
        (lambda raw: {**headers(SECRET, raw), "X-FKS-Timestamp": "soon"}, "invalid_timestamp"),
    ],
)
async def test_an_unsigned_badly_signed_or_stale_request_is_refused_and_not_stored(
    client: httpx.AsyncClient,
    store: WebhookEventStore,
    sign: Callable[[bytes], dict[str, str]],
    code: str,
) -> None:
    raw = body(KLINE)
    refused = count("binance", code)

    response = await client.post("/webhooks/binance", content=raw, headers=sign(raw))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert SECRET not in response.text
    assert store.count() == 0
    assert count("binance", code) == refused + 1


@pytest.mark.parametrize(
    ("provider", "raw", "status", "code"),
    [
        ("binance", b'{"e": "kline",', 400, "malformed_json"),
        ("generic", b"\xff\xfe", 400, "malformed_json"),
        ("binance", body(POLYGON_DOCS_AM), 422, "invalid_event"),
        ("polygon", body([POLYGON_DOCS_AM, {**POLYGON_DOCS_AM, "ev": "T"}]), 422, "invalid_event"),
        ("generic", body({**GENERIC, "end": "yesterday"}), 422, "invalid_event"),
        ("binance", body([]), 422, "invalid_event"),
    ],
)
async def test_a_body_that_is_not_an_event_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
    store: WebhookEventStore,
    provider: str,
    raw: bytes,
    status: int,
    code: str,
) -> None:
    response = await client.post(f"/webhooks/{provider}", content=raw, headers=headers(SECRET, raw))

    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert store.count() == 0


async def test_an_invalid_field_is_named(client: httpx.AsyncClient) -> None:
    bad = {**KLINE, "k": {**KLINE["k"], "x": "yes"}}

    response = await post(client, "binance", bad)

    assert response.status_code == 422
    assert "k.x" in response.json()["error"]["message"]


async def test_an_unknown_provider_is_404(client: httpx.AsyncClient) -> None:
    unknown = count("unknown", "unknown_provider")

    response = await post(client, "kraken", KLINE)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_webhook_provider"
    assert count("unknown", "unknown_provider") == unknown + 1
    assert count("kraken", "unknown_provider") == 0  # path values never become labels


async def test_a_body_declared_over_1_mib_is_refused_before_it_is_read(
    client: httpx.AsyncClient, store: WebhookEventStore
) -> None:
    raw = b" " * (MAX_BODY_BYTES + 1)

    response = await client.post("/webhooks/binance", content=raw, headers=headers(SECRET, raw))

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    assert store.count() == 0


async def test_a_streamed_body_over_1_mib_is_refused_while_it_arrives(
    client: httpx.AsyncClient, store: WebhookEventStore
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 4 MiB offered, without a Content-Length
            sent += 1
            yield b" " * 65536

    response = await client.post(
        "/webhooks/binance", content=chunks(), headers=headers(SECRET, b"")
    )

    assert response.status_code == 413
    assert sent < 64
    assert store.count() == 0


async def test_a_body_of_exactly_1_mib_is_read(client: httpx.AsyncClient) -> None:
    padding = MAX_BODY_BYTES - len(body(GENERIC))
    raw = body(GENERIC) + b" " * padding

    response = await client.post("/webhooks/generic", content=raw, headers=headers(SECRET, raw))

    assert len(raw) == MAX_BODY_BYTES
    assert response.status_code == 202


async def test_without_a_secret_every_webhook_is_refused(
    intakes: Callable[..., WebhookIntake], warehouse_url: str
) -> None:
    intake = intakes(None, warehouse_url)
    async with client_of(webhook_app(intake)) as client:
        response = await post(client, "binance", KLINE)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "webhooks_disabled"
    assert "FKS_WEBHOOK_SECRET" in response.json()["error"]["message"]


async def test_with_redis_down_the_event_is_still_stored_and_acknowledged(
    intakes: Callable[..., WebhookIntake], warehouse_url: str, store: WebhookEventStore
) -> None:
    down = EventStream.from_url(f"redis://127.0.0.1:{free_port()}/0", maxlen=100)
    intake = intakes(SecretStr(SECRET), warehouse_url, down)
    async with client_of(webhook_app(intake)) as client:
        response = await post(client, "binance", KLINE)
        again = await post(client, "binance", KLINE)

    assert response.status_code == 202
    assert response.json()["published"] is False
    assert again.json()["duplicate"] is True
    [pending] = store.to_handle(cursor=0, limit=10)
    assert (pending.id, pending.status, pending.published) == (
        response.json()["id"],
        "pending",
        False,
    )


async def test_without_redis_events_are_stored_unpublished(
    intakes: Callable[..., WebhookIntake], warehouse_url: str, store: WebhookEventStore
) -> None:
    intake = intakes(SecretStr(SECRET), warehouse_url, stream=None)
    async with client_of(webhook_app(intake)) as client:
        response = await post(client, "generic", GENERIC)

    assert response.status_code == 202
    assert response.json()["published"] is False
    assert store.count() == 1


async def test_with_the_warehouse_down_nothing_is_acknowledged(
    intakes: Callable[..., WebhookIntake], caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql://fks:pa55word-in-url@127.0.0.1:{free_port()}/market"
    intake = intakes(SecretStr(SECRET), url)
    caplog.set_level(logging.DEBUG)
    async with client_of(webhook_app(intake)) as client:
        response = await post(client, "binance", KLINE)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"
    assert "pa55word" not in response.text
    assert "pa55word" not in caplog.text


async def test_the_secret_never_reaches_responses_or_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    responses = [
        await post(client, "binance", KLINE),
        await post(client, "binance", {"e": "kline"}),
        await client.post("/webhooks/binance", content=b"{}", headers=headers("x", b"{}")),
    ]

    assert all(SECRET not in r.text for r in responses)
    assert SECRET not in caplog.text


def test_the_intake_of_the_service_is_built_from_settings(tmp_path: object) -> None:
    settings = Settings.model_validate(
        {"FKS_WEBHOOK_SECRET": SECRET, "FKS_DATA_DIR": str(tmp_path), "REDIS_URL": None}
    )

    intake = intake_from_settings(settings)

    assert intake.warehouse_url == f"sqlite:///{tmp_path}/warehouse.sqlite"
    assert intake.stream is None
    assert SECRET not in repr(settings)


async def test_the_route_is_documented_with_examples_and_error_bodies(
    client: httpx.AsyncClient,
) -> None:
    document = (await client.get("/openapi.json")).json()

    operation = document["paths"]["/webhooks/{provider}"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    assert sorted(content["examples"]) == ["binance", "generic", "polygon"]
    assert content["examples"]["polygon"]["value"][0]["ev"] == "AM"
    assert "$defs" not in json.dumps(content["schema"])
    for status in ("400", "401", "404", "413", "422", "503"):
        schema = operation["responses"][status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
    assert "202" in operation["responses"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert parameters["provider"]["schema"]["enum"] == ["binance", "polygon", "generic"]
    assert {"x-fks-timestamp", "x-fks-signature"} <= set(parameters)


async def test_a_documented_example_is_accepted(
    client: httpx.AsyncClient, store: WebhookEventStore
) -> None:
    document = (await client.get("/openapi.json")).json()
    examples = document["paths"]["/webhooks/{provider}"]["post"]["requestBody"]["content"][
        "application/json"
    ]["examples"]

    for provider, example in examples.items():
        response = await post(client, provider, example["value"])
        assert response.status_code == 202, response.text

    assert store.count() == 3


async def test_the_docs_example_of_an_open_binance_kline_is_stored(
    client: httpx.AsyncClient, store: WebhookEventStore
) -> None:
    response = await post(client, "binance", BINANCE_DOCS_KLINE)

    stored = store.get(response.json()["id"])
    assert stored is not None and stored.closed is False
