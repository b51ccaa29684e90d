"""GET /health, GET /metrics, the OpenAPI document, and keys kept out of answers and logs."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from prometheus_client import REGISTRY, Counter
from prometheus_client.parser import text_string_to_metric_families

from fks_pipelines.api.app import create_app
from fks_pipelines.api.services import Services, get_services
from fks_pipelines_tests.api.support import KEYS, Fakes, served, services_of
from fks_pipelines_tests.fakes.server import Response

pytestmark = pytest.mark.anyio


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_health_is_ok_with_every_dependency_up(api: httpx.AsyncClient) -> None:
    response = await api.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["degraded"]) == ("ok", [])
    assert body["redis"] == {"state": "ok", "detail": None}
    assert body["warehouse"] == {"state": "ok", "detail": "sqlite"}
    assert list(body["providers"]) == [
        "binance",
        "polygon",
        "coingecko",
        "coinmarketcap",
        "alpha_vantage",
        "eodhd",
    ]
    assert body["providers"]["binance"] == {
        "configured": True,
        "circuit": "closed",
        "failures": 0,
        "retry_after_s": None,
        "detail": None,
    }


async def test_health_names_what_is_degraded_and_stays_200(
    fakes: Fakes, tmp_path: Path, redis_url: str
) -> None:
    settings = fakes.settings(
        tmp_path,
        REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0",
        FKS_WAREHOUSE_URL=f"postgresql://nobody@127.0.0.1:{closed_port()}/none",
        EODHD_API_KEY=None,
    )
    app = create_app(settings)
    async with served(app) as api:
        services_of(app).clients["binance"].http.runtime.breaker.record_failure(open_for_s=60)
        response = await api.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["degraded"] == ["redis", "warehouse", "provider:binance"]
    assert body["redis"] == {"state": "down", "detail": "no answer (ConnectionError)"}
    assert body["warehouse"]["state"] == "down"
    assert body["providers"]["binance"]["circuit"] == "open"
    assert 55 < body["providers"]["binance"]["retry_after_s"] <= 60
    assert body["providers"]["eodhd"] == {
        "configured": False,
        "circuit": "unknown",
        "failures": 0,
        "retry_after_s": None,
        "detail": "no API key: set the environment variable EODHD_API_KEY",
    }
    assert "nobody" not in response.text


async def test_health_without_redis_says_not_configured(fakes: Fakes, tmp_path: Path) -> None:
    async with served(create_app(fakes.settings(tmp_path, REDIS_URL=None))) as api:
        body = (await api.get("/health")).json()

    assert body["redis"] == {"state": "not_configured", "detail": "REDIS_URL is not set"}
    assert body["status"] == "ok"


async def test_a_warehouse_down_still_serves_bars_from_the_providers(
    fakes: Fakes, tmp_path: Path
) -> None:
    settings = fakes.settings(
        tmp_path, FKS_WAREHOUSE_URL=f"postgresql://nobody@127.0.0.1:{closed_port()}/none"
    )
    async with served(create_app(settings)) as api:
        response = await api.get(
            "/api/v1/data/ohlcv",
            params={
                "symbol": "BTC-USD",
                "interval": "1h",
                "start": "2024-01-05",
                "end": "2024-01-06",
                "validate": "true",
            },
        )

    assert response.status_code == 200
    assert response.json()["source"] == "provider"
    assert len(response.json()["candles"]) == 24


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_metrics_count_requests_by_route_and_the_runtime_by_provider(
    api: httpx.AsyncClient,
) -> None:
    before = samples((await api.get("/metrics")).text)
    await api.get("/api/v1/data/price", params={"symbol": "BTC-USD"})
    await api.get("/api/v1/data/price", params={"symbol": "BTC-USD"})
    await api.get("/api/v1/data/price", params={"symbol": "NOPE"})
    await api.get("/no/such/path")

    response = await api.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = samples(response.text)

    def grew(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    price = {"route": "/api/v1/data/price", "method": "GET"}
    assert grew("fks_http_requests_total", **price, status="200") == 2
    assert grew("fks_http_requests_total", **price, status="404") == 1
    assert grew("fks_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert grew("fks_http_request_duration_seconds_count", **price) == 3
    binance = {"provider": "binance"}
    assert after[("fks_provider_requests_total", (("provider", "binance"),))] == 1
    assert grew("fks_provider_cache_hits_total", **binance) == 1
    assert grew("fks_provider_cache_misses_total", **binance) == 1
    assert after[("fks_provider_upstream_errors_total", (("provider", "binance"),))] == 0
    assert ("fks_provider_limiter_wait_seconds_total", (("provider", "binance"),)) in after
    assert after[("fks_provider_circuit_open", (("provider", "binance"),))] == 0


async def test_metrics_of_other_parts_of_the_service_are_exposed_too(
    api: httpx.AsyncClient,
) -> None:
    events = Counter("fks_test_events", "A metric another router registers.", registry=None)
    REGISTRY.register(events)
    try:
        events.inc()
        text = (await api.get("/metrics")).text
    finally:
        REGISTRY.unregister(events)

    assert "fks_test_events_total 1.0" in text


async def test_an_extra_router_is_served_with_the_services(fakes: Fakes, tmp_path: Path) -> None:
    router = APIRouter()

    @router.get("/extra")
    def extra(services: Annotated[Services, Depends(get_services)]) -> dict[str, str]:
        return {"first": services.universe.priority[0]}

    async with served(create_app(fakes.settings(tmp_path), routers=[router])) as api:
        response = await api.get("/extra")

    assert response.json() == {"first": "binance"}


def test_every_route_documents_its_answers(app: FastAPI) -> None:
    spec = app.openapi()
    error_body = {"$ref": "#/components/schemas/ErrorBody"}

    for path in ("/api/v1/data/price", "/api/v1/data/ohlcv"):
        operation = spec["paths"][path]["get"]
        assert operation["summary"] and operation["description"]
        responses = operation["responses"]
        assert "$ref" in responses["200"]["content"]["application/json"]["schema"]
        for status in ("404", "422", "502", "503", "504", "500"):
            assert responses[status]["content"]["application/json"]["schema"] == error_body
    assert spec["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_keys_never_reach_answers_or_logs(
    fakes: Fakes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fakes.polygon.api_key = "another key"  # every polygon request is now refused (401)
    fakes.eodhd.failing_symbols.add("AAPL.US")
    fakes.alpha_vantage.scripted.append(Response.json({"Note": "Thank you for using..."}))
    app = create_app(fakes.settings(tmp_path))
    texts = []
    async with served(app) as api:
        for params in (
            {"symbol": "AAPL"},
            {"symbol": "AAPL", "provider": "polygon"},
            {"symbol": "AAPL", "provider": "eodhd"},
            {"symbol": "AAPL", "provider": "alpha_vantage"},
            {"symbol": "bitcoin", "provider": "coingecko"},
            {"symbol": "1", "provider": "coinmarketcap"},
        ):
            response = await api.get("/api/v1/data/price", params=params)
            texts.append(f"{response.status_code} {response.headers} {response.text}")
        for path in ("/health", "/metrics", "/openapi.json"):
            texts.append((await api.get(path)).text)
    texts.append(caplog.text)
    texts.append(repr(services_of(app).settings))

    assert any("polygon: " in text and "401" in text for text in texts)
    for key in KEYS.values():
        assert all(key not in text for text in texts), key
