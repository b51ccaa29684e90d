"""The app bench/webhook_intake.py serves with uvicorn: the webhook route and a trivial baseline.

    uvicorn --factory bench.webhook_app:create_app

The intake is the service's own (:func:`intake_from_settings`: ``FKS_WEBHOOK_SECRET``,
``FKS_WAREHOUSE_URL``, ``REDIS_URL``). ``POST /baseline`` reads the body and answers 202 with a
receipt-shaped body: the same server, framework and client with no signature, parsing, storage
or publication.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from fks_pipelines.api.errors import install_error_handlers
from fks_pipelines.api.services import intake_from_settings
from fks_pipelines.api.webhooks import EventReceipt, build_webhook_router
from fks_pipelines.settings import Settings


def create_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(build_webhook_router(intake_from_settings(Settings())))

    @app.post("/baseline", status_code=202)
    async def baseline(request: Request) -> EventReceipt:
        await request.body()
        return EventReceipt(id="baseline", duplicate=False, published=False)

    return app
