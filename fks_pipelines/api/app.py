"""The HTTP service: standardised market-data routes over the same core as the Dagster assets.

Start it with ``fks-api``: uvicorn on ``FKS_API_HOST:FKS_API_PORT`` with the limits on request
heads of :mod:`fks_pipelines.api.server` (``uvicorn fks_pipelines.api.app:app`` serves the same
app without them). Importing this module builds the app without any I/O: the settings are read
and the providers, Redis and the warehouse connected when the server starts it (the lifespan).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import anyio.to_thread
import uvicorn
from fastapi import APIRouter, FastAPI

from fks_pipelines.api import data, ops
from fks_pipelines.api.errors import UnexpectedErrorMiddleware, install_error_handlers
from fks_pipelines.api.metrics import PROVIDER_STATS, MetricsMiddleware
from fks_pipelines.api.prices import PriceDesk
from fks_pipelines.api.server import server_options
from fks_pipelines.api.services import Services
from fks_pipelines.api.webhooks import build_webhook_router
from fks_pipelines.settings import Settings

DESCRIPTION = """\
Latest prices and closed OHLCV bars of the universe's instruments, from the warehouse or the
market-data providers through the project's provider runtime (cache, shared rate limits, retries,
circuit breakers, failover), with the quality verdict of the asset checks on request.

Every error is `{"error": {"code": "...", "message": "..."}}` with a 4xx for a bad request
(unknown symbol or provider, bad interval or dates) and 502/503/504 for a provider that fails.
"""


def create_app(
    settings: Settings | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    freeze_gc: bool = False,
) -> FastAPI:
    """The FastAPI app; its services are built when it starts.

    Args:
        settings: The environment contract (base URLs, keys, Redis, warehouse, universe file);
            default: read from the environment at start-up.
        routers: Further routers to serve beside the data, ops and webhook routes; they reach
            the services with the :func:`~fks_pipelines.api.services.get_services` dependency.
        freeze_gc: Once started, move every object made so far out of the garbage collector's
            reach (``gc.freeze``): for a process that runs the service and nothing else (the
            module's :data:`app`), not for one that starts apps again and again (tests).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Building clients and connecting Redis and the warehouse block: not on the event loop.
        services = await anyio.to_thread.run_sync(Services.start, settings or Settings())
        app.state.services = services
        app.state.prices = PriceDesk(
            services,
            services.bulkheads.data,
            lambda provider, symbol: data.latest_price(services, symbol, provider),
            ttl_s=services.settings.cache_ttl_price_s,
        )
        PROVIDER_STATS.attach(services.clients)
        if freeze_gc:
            # A full collection walked every object of pandas, SQLAlchemy and the schemas the
            # imports made, 50-150 ms with the event loop stopped, every few seconds under load:
            # most of the cached price's p99. They live as long as the process; only what
            # requests make is left for the collector.
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            PROVIDER_STATS.detach(services.clients)
            await app.state.prices.aclose()
            services.close()

    app = FastAPI(
        title="fks_pipelines market data",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(UnexpectedErrorMiddleware)  # inside the metrics: a 500 is counted
    app.add_middleware(MetricsMiddleware)
    app.include_router(data.router)
    app.include_router(ops.router)
    app.include_router(build_webhook_router())
    for router in routers:
        app.include_router(router)
    return app


app = create_app(freeze_gc=True)


def main() -> None:
    """``fks-api``: serve :data:`app` with uvicorn on ``FKS_API_HOST:FKS_API_PORT``, with the
    limits on request heads of :func:`~fks_pipelines.api.server.server_options`."""
    uvicorn.run("fks_pipelines.api.app:app", **server_options(Settings()))
