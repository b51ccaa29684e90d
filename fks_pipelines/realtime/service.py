"""``fks-stream``: the stream bridge as a service, with ``/health`` and ``/metrics``.

Subscribes to the kline streams of every Binance symbol and interval of the universe at
``FKS_BINANCE_WS_URL``, stores closed klines through the webhook intake into the warehouse's
``webhook_events`` (so the ``webhook_events`` sensor refreshes their partitions) and keeps live
prices in Redis for ``/api/v1/data/price``. ``/health`` answers 200 while at least one
connection is open (``status`` says ``ok`` or ``degraded``) and 503 when none is; ``/metrics``
is Prometheus's text format. SIGTERM or SIGINT stop it after storing what is queued.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import urlsplit

import pandas as pd
import redis
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.clients import build_client
from fks_pipelines.realtime.binance import connection_urls
from fks_pipelines.realtime.bridge import StreamBridge
from fks_pipelines.realtime.prices import PROVIDER, LivePrices
from fks_pipelines.settings import Settings
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import WebhookEventStore
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines.webhooks.stream import EventStream

log = logging.getLogger(__name__)


def streams(settings: Settings) -> dict[str, list[tuple[str, Interval]]]:
    """The combined-stream URLs for the universe's Binance symbols and intervals, with the
    (symbol, interval) streams each carries."""
    universe = settings.universe.providers.get(PROVIDER)
    if universe is None:
        return {}
    intervals = [Interval.parse(name) for name in universe.intervals]
    return connection_urls(settings.binance_ws_url, universe.symbols, intervals)


def build_bridge(settings: Settings) -> tuple[StreamBridge, Callable[[], None]]:
    """The bridge these settings describe, and what closes what it holds open (call it after
    the bridge stopped)."""
    stream = (
        EventStream.from_url(settings.redis_url, settings.webhook_stream_maxlen)
        if settings.redis_url
        else None
    )
    # No secret: the bridge hands parsed events to the intake's writer, never a signed body.
    intake = WebhookIntake(
        None,
        settings.resolved_warehouse_url,
        stream,
        store_timeout_s=settings.webhook_store_timeout_s,
    )
    client = build_client(PROVIDER, settings.provider_options(PROVIDER), settings.runtime_config())
    live_client = redis.Redis.from_url(settings.redis_url) if settings.redis_url else None
    lookback = timedelta(hours=settings.stream_gap_lookback_h)

    def checkpoints() -> dict[tuple[str, str], pd.Timestamp]:
        store = WebhookEventStore(Warehouse.from_url(settings.resolved_warehouse_url))
        try:
            since = pd.Timestamp.now(tz="UTC") - lookback
            stored = store.latest_closed(PROVIDER, since.to_pydatetime(warn=False))
        finally:
            store.warehouse.engine.dispose()
        return {stream: pd.Timestamp(opened) for stream, opened in stored.items()}

    bridge = StreamBridge(
        streams(settings),
        intake,
        client,
        LivePrices(live_client) if live_client is not None else None,
        checkpoints,
    )

    def close() -> None:
        intake.close()
        client.close()
        if live_client is not None:
            live_client.close()

    return bridge, close


def health_app(bridge: StreamBridge) -> Starlette:
    """``/health`` and ``/metrics`` of a running bridge."""

    async def health(_: Request) -> JSONResponse:
        body = bridge.health()
        return JSONResponse(body, status_code=503 if body["status"] == "down" else 200)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/health", health), Route("/metrics", metrics)])


async def serve(settings: Settings) -> None:
    """Run the bridge and its HTTP side until SIGTERM/SIGINT."""
    bridge, close = build_bridge(settings)
    if not bridge.connections:
        log.warning("the universe lists no Binance symbols: fks-stream has nothing to listen to")
    server = uvicorn.Server(
        uvicorn.Config(
            health_app(bridge),
            host=settings.stream_host,
            port=settings.stream_port,
            log_level="warning",
            lifespan="off",
        )
    )
    running = asyncio.create_task(bridge.run(), name="bridge")
    # A bridge that ended (a bug) takes the HTTP side down with it: the process exits with its
    # error and compose restarts it, rather than answering /health with nothing behind it.
    running.add_done_callback(lambda _: setattr(server, "should_exit", True))
    log.info(
        "fks-stream: %d connections to %s, /health on %s:%d",
        len(bridge.connections),
        urlsplit(settings.binance_ws_url).hostname,  # never credentials a proxy URL may hold
        settings.stream_host,
        settings.stream_port,
    )
    # uvicorn's handlers end serve() on SIGTERM/SIGINT, then raise the signal again to the
    # handlers found before: those ignore it, so the bridge can store what is queued.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        await server.serve()
    finally:
        bridge.stop()
        await running
        await asyncio.to_thread(close)


def main() -> None:
    """``fks-stream``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(Settings()))
