"""Operational routes: ``GET /health`` and ``GET /metrics``.

Both run their blocking work in the ``ops`` bulkhead's threads
(:mod:`fks_pipelines.api.bulkheads`), so that they answer while the data routes or the webhook
intake have every thread of theirs busy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import redis
from fastapi import APIRouter, Depends, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from fks_pipelines.api.bulkheads import Saturated
from fks_pipelines.api.prices import PriceDesk, get_prices
from fks_pipelines.api.schemas import (
    ComponentHealth,
    HealthResponse,
    PriceCacheHealth,
    ProviderHealth,
    WorkersHealth,
)
from fks_pipelines.api.services import WAREHOUSE_ERRORS, Services, get_services

PROBE_TIMEOUT_S = 2.0
"""Longest /health waits for one dependency: a health check must answer while one hangs."""
T = TypeVar("T")

router = APIRouter(tags=["operations"])


async def _within(services: Services, probe: Callable[[], T]) -> T:
    """``probe()`` in an ``ops`` thread, given up (TimeoutError) after
    :data:`PROBE_TIMEOUT_S`; a sync driver call cannot be interrupted, so the thread is left to
    finish on its own. Every ``ops`` thread busy counts as no answer in time."""
    try:
        return await services.bulkheads.ops.run(probe, timeout_s=PROBE_TIMEOUT_S)
    except Saturated:
        raise TimeoutError("every health probe thread is busy") from None


async def _redis(services: Services, prices: PriceDesk) -> ComponentHealth:
    if not services.redis_configured:
        return ComponentHealth(state="not_configured", detail="REDIS_URL is not set")
    try:
        shared = await _within(services, services.probe_redis)
    except (redis.RedisError, TimeoutError, OSError) as exc:
        prices.note_shared(reachable=False)
        return ComponentHealth(state="down", detail=f"no answer ({type(exc).__name__})")
    prices.note_shared(reachable=True)
    if not shared:
        return ComponentHealth(
            state="degraded",
            detail="answers, but the provider runtime started without it (cache and limits "
            "are per process): restart the service",
        )
    return ComponentHealth(state="ok")


async def _warehouse(services: Services) -> ComponentHealth:
    try:
        await _within(services, services.probe_warehouse)
    except (*WAREHOUSE_ERRORS, TimeoutError) as exc:
        return ComponentHealth(state="down", detail=f"no answer ({type(exc).__name__})")
    return ComponentHealth(state="ok", detail=services.warehouse().dialect)


def _circuits(services: Services) -> dict[str, ProviderHealth]:
    health = {}
    for provider in services.universe.providers:
        error = services.unconfigured.get(provider)
        if error is not None:
            health[provider] = ProviderHealth(
                configured=False,
                circuit="unknown",
                failures=0,
                retry_after_s=None,
                detail=error.reason,
            )
            continue
        circuit = services.clients[provider].circuit
        health[provider] = ProviderHealth(
            configured=True,
            circuit=circuit.state,
            failures=circuit.failures,
            retry_after_s=circuit.retry_after_s,
        )
    return health


@router.get(
    "/health",
    response_model=HealthResponse,
    summary="Liveness, and the state of Redis, the warehouse and each provider's circuit",
    description=(
        "200 whenever the service itself is up; `status` is `degraded` and `degraded` names "
        "what is not well: `redis` (down, or the provider runtime runs without it), "
        "`warehouse` (unreachable: OHLCV is then served from the providers), "
        "`provider:<id>` (circuit open or half-open: failover skips it). A provider without its "
        "key is `configured: false`, which is a setting, not a fault. Each dependency is given "
        f"{PROBE_TIMEOUT_S:g} s to answer."
    ),
)
async def health(
    services: Annotated[Services, Depends(get_services)],
    prices: Annotated[PriceDesk, Depends(get_prices)],
) -> HealthResponse:
    """``GET /health``: probes Redis, the warehouse and the circuits, each within its time."""
    redis_health = await _redis(services, prices)
    warehouse = await _warehouse(services)
    try:
        providers = await _within(services, lambda: _circuits(services))
    except TimeoutError:
        providers = {
            provider: ProviderHealth(
                configured=provider in services.clients,
                circuit="unknown",
                failures=0,
                retry_after_s=None,
                detail="circuit state did not answer in time",
            )
            for provider in services.universe.providers
        }
    degraded = [
        *(["redis"] if redis_health.state in ("down", "degraded") else []),
        *(["warehouse"] if warehouse.state != "ok" else []),
        *(f"provider:{p}" for p, h in providers.items() if h.circuit in ("open", "half_open")),
    ]
    return HealthResponse(
        status="degraded" if degraded else "ok",
        degraded=degraded,
        redis=redis_health,
        warehouse=warehouse,
        providers=providers,
        price_cache=_price_cache(prices),
        live_prices=prices.live,
        workers=_workers(services),
    )


def _workers(services: Services) -> dict[str, WorkersHealth]:
    workers = {
        bulkhead.name: WorkersHealth(
            threads=bulkhead.threads, busy=bulkhead.busy, waiting=bulkhead.waiting
        )
        for bulkhead in (services.bulkheads.data, services.bulkheads.intake, services.bulkheads.ops)
    }
    if services.webhook_intake is not None:
        workers["intake"].waiting_for_store = services.webhook_intake.pending
    return workers


def _price_cache(prices: PriceDesk) -> PriceCacheHealth:
    serving = prices.tier()
    if serving != "process":
        return PriceCacheHealth(serving=serving)
    if prices.shared_kind is None:
        detail = "no shared cache: prices are kept in this process"
    else:
        detail = (
            "the shared cache is unreachable: prices fetched upstream are kept in this "
            "process for FKS_CACHE_TTL_PRICE_S"
        )
    return PriceCacheHealth(serving="process", detail=detail)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    summary="Prometheus metrics",
    description=(
        "Prometheus text from prometheus-client's default registry: `fks_http_requests_total`, "
        "`fks_http_request_duration_seconds`, `fks_provider_requests_total`, "
        "`fks_provider_cache_hits_total`, `fks_provider_cache_misses_total`, "
        "`fks_provider_retries_total`, `fks_provider_limiter_wait_seconds_total`, "
        "`fks_provider_upstream_errors_total`, `fks_provider_circuit_open`, "
        "`fks_price_answers_total` (by source: stream or rest), and the metrics "
        "other parts of the service register (webhook events), plus the client's process "
        "metrics."
    ),
)
async def metrics(services: Annotated[Services, Depends(get_services)]) -> Response:
    """``GET /metrics``: the default registry in Prometheus' text format (collecting reads the
    circuits' shared state: in an ``ops`` thread)."""
    text = await services.bulkheads.ops.run(generate_latest, REGISTRY)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
