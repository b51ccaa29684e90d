"""The webhook route through a real socket: uvicorn on loopback (``fks-api``'s protocol), a real
client, refusals on a kept connection, and properties over whatever a sender might sign."""

import json
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from hypothesis import HealthCheck, event, given, settings
from pydantic import SecretStr

from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import WebhookEventStore
from fks_pipelines.webhooks.events import EventError, parse_events
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines.webhooks.stream import STREAM, EventStream
from fks_pipelines_tests.api.rawhttp import ConnectionClosed, RawConnection, RawResponse
from fks_pipelines_tests.api.test_webhooks import SECRET, free_port, webhook_app
from fks_pipelines_tests.api.uvicorn_server import serve
from fks_pipelines_tests.webhooks.samples import GENERIC, POLYGON_DOCS_AM, closed_kline, headers
from fks_pipelines_tests.webhooks.strategies import YEAR_9999_MS, signed_bodies


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


def signed(raw: bytes) -> dict[str, str]:
    return headers(SECRET, raw, time.time())


def kline_with(**changes: object) -> dict[str, object]:
    event = closed_kline("ETHUSDT", "1h", 1720483200000)
    return {**event, "k": {**event["k"], **changes}}


# The refusals: an OverflowError (500, connection reset) for the times, a 503
# storage_unavailable ("retry", for ever) for 1e400.
REFUSED = [
    ("binance", json.dumps(kline_with(T=YEAR_9999_MS)).encode(), "k.T"),
    (
        "generic",
        json.dumps({**GENERIC, "start": "0001-01-01T00:00:00+01:00"}).encode(),
        "start",
    ),
    ("generic", json.dumps({**GENERIC, "end": "9999-12-31T23:00:00-05:00"}).encode(), "end"),
    ("binance", json.dumps(kline_with(q="X")).replace('"X"', "1e400").encode(), "k.q"),
    ("polygon", json.dumps([{**POLYGON_DOCS_AM, "o": "X"}]).replace('"X"', "1e400").encode(), "o"),
]


def test_out_of_range_events_are_a_422_naming_the_field_on_a_kept_connection(
    server: str, warehouse_url: str
) -> None:
    with RawConnection(server) as conn:
        refusals = [
            (field, conn.request("POST", f"/webhooks/{route}", signed(raw), raw))
            for route, raw, field in REFUSED
        ]
        valid = json.dumps(closed_kline("ETHUSDT", "1h", 1720483200000)).encode()
        stored = conn.request("POST", "/webhooks/binance", signed(valid), valid)

    for field, response in refusals:
        assert response.status == 422, response.body
        assert response.json()["error"]["code"] == "invalid_event"
        assert f"{field}: " in response.json()["error"]["message"]
        assert response.headers.get("connection") != "close"
    assert stored.status == 202
    assert WebhookEventStore(Warehouse.from_url(warehouse_url)).count() == 1


@pytest.fixture
def down_server(intakes_down: WebhookIntake) -> Iterator[str]:
    with serve(webhook_app(intakes_down)) as url:
        yield url


@pytest.fixture
def intakes_down() -> Iterator[WebhookIntake]:
    """An intake whose warehouse does not answer (a closed port)."""
    intake = WebhookIntake(SecretStr(SECRET), f"postgresql://nobody@127.0.0.1:{free_port()}/none")
    yield intake
    intake.close()


def expected(route: str, raw: bytes) -> str:
    """``event`` when the intake parses ``raw`` into events, else ``refused`` (the share of
    each: ``--hypothesis-show-statistics``)."""
    try:
        parse_events(route, raw)
    except EventError:
        event("refused")
        return "refused"
    event("event")
    return "event"


def post_and_check_kept(url: str, route: str, raw: bytes) -> RawResponse:
    """Post ``raw``, then check the server kept the connection for a next request."""
    with RawConnection(url) as conn:
        response = conn.request("POST", f"/webhooks/{route}", signed(raw), raw)
        try:
            after = conn.request("POST", "/webhooks/none", signed(b"{}"), b"{}")
        except ConnectionClosed as exc:
            pytest.fail(f"the connection was closed after a {response.status}: {exc}")
    assert after.status == 404
    return response


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=signed_bodies)
def test_every_signed_body_is_stored_or_refused_by_a_4xx(
    server: str, case: tuple[str, bytes]
) -> None:
    """With the warehouse up, a signed body is a 202 (an event) or a 4xx (not one): never a
    5xx, and the connection stays usable either way."""
    route, raw = case

    response = post_and_check_kept(server, route, raw)

    if expected(route, raw) == "event":
        assert response.status == 202, response.body
    else:
        assert response.status in (400, 422), response.body
        assert response.json()["error"]["message"]


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=signed_bodies)
def test_a_503_means_the_warehouse_is_down(down_server: str, case: tuple[str, bytes]) -> None:
    """The same bodies with the warehouse down: the events are a 503 "retry" (nothing was
    stored), and what is not an event is still the sender's 4xx."""
    route, raw = case

    response = post_and_check_kept(down_server, route, raw)

    if expected(route, raw) == "event":
        assert response.status == 503, response.body
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert int(response.headers["retry-after"]) >= 1
    else:
        assert response.status in (400, 422), response.body
