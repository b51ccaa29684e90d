"""``POST /webhooks/{provider}``: signed market-data events in, 202 once stored durably.

The route reads the raw body itself (the signature covers its exact bytes), refusing more than
:data:`MAX_BODY_BYTES` both from ``Content-Length`` up front and while the body streams in (a
chunked body has no length). The intake (:mod:`fks_pipelines.webhooks.intake`) does the rest in
a worker thread, since the warehouse and Redis clients block. Every outcome is counted in
``fks_webhook_events_total{provider,outcome}`` in the default Prometheus registry (accepted and
duplicate per event, refusals per request; a provider not served is counted as ``unknown``).
"""

from __future__ import annotations

import copy
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from prometheus_client import Counter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from fks_pipelines.api.errors import ApiError, ErrorBody
from fks_pipelines.warehouse.webhook_events import Receipt
from fks_pipelines.webhooks import signing
from fks_pipelines.webhooks.events import EXAMPLES, SHAPES, SOURCES, EventError
from fks_pipelines.webhooks.intake import IntakeDisabled, WebhookIntake
from fks_pipelines.webhooks.writer import StorageUnavailable

MAX_BODY_BYTES = 1 << 20

WEBHOOK_EVENTS = Counter(
    "fks_webhook_events",
    "Webhook events (accepted, duplicate) and refused webhook requests, by route and outcome.",
    ["provider", "outcome"],
)


class EventReceipt(BaseModel):
    """One stored event."""

    id: str = Field(description="The event's id (the stored twin's, for a re-delivery).")
    duplicate: bool = Field(description="Stored before: acknowledged, not processed again.")
    published: bool = Field(description="In the Redis stream (else the sensor publishes it).")


class BatchReceipt(BaseModel):
    """The events of a JSON-list body, in order."""

    events: list[EventReceipt]


def build_webhook_router(intake: WebhookIntake | None = None) -> APIRouter:
    """The webhook route; mount it on an app with the JSON error handlers.

    Args:
        intake: The intake to serve; by default the one the app's services built at start-up
            (:class:`~fks_pipelines.api.services.Services`), as :func:`create_app` mounts it.
    """
    router = APIRouter(tags=["webhooks"])

    @router.post(
        "/webhooks/{provider}",
        status_code=202,
        response_model=EventReceipt | BatchReceipt,
        summary="Receive signed market-data events",
        description=_DESCRIPTION,
        responses={
            202: {"description": "Stored (or stored before: `duplicate`)."},
            400: {"model": ErrorBody, "description": "The body is not JSON."},
            401: {"model": ErrorBody, "description": "Missing, bad or stale signature."},
            404: {"model": ErrorBody, "description": "No webhook for this provider."},
            413: {"model": ErrorBody, "description": "The body is over 1 MiB."},
            422: {"model": ErrorBody, "description": "Not an event of this provider's shape."},
            503: {
                "model": ErrorBody,
                "description": "No webhook secret configured, or the store is down: retry.",
            },
        },
        openapi_extra={"requestBody": _REQUEST_BODY},
    )
    async def receive(
        provider: Annotated[
            str,
            Path(
                description="Which shape the body has.",
                json_schema_extra={"enum": list(SOURCES)},
            ),
        ],
        request: Request,
        x_fks_timestamp: Annotated[
            str | None, Header(description="Unix time of signing, in seconds.")
        ] = None,
        x_fks_signature: Annotated[
            str | None,
            Header(description="sha256=<hex HMAC-SHA256 of '<timestamp>.<raw body>'>."),
        ] = None,
    ) -> EventReceipt | BatchReceipt:
        if provider not in SOURCES:
            WEBHOOK_EVENTS.labels("unknown", "unknown_provider").inc()
            raise ApiError(
                404,
                "unknown_webhook_provider",
                f"no webhook for {provider[:40]!r}; known: {', '.join(SOURCES)}",
            )
        try:
            _check_length(request.headers.get("content-length"))
            serving = intake if intake is not None else _app_intake(request)
            timestamp = serving.check_timestamp(x_fks_timestamp)
            body = await _read_body(request)
            ack = await run_in_threadpool(
                serving.receive, provider, timestamp, x_fks_signature, body
            )
        except ApiError as exc:
            WEBHOOK_EVENTS.labels(provider, exc.code).inc()
            raise
        except IntakeDisabled as exc:
            raise _refused(provider, 503, "webhooks_disabled", str(exc)) from None
        except signing.SignatureError as exc:
            raise _refused(provider, 401, exc.code, exc.message) from None
        except EventError as exc:
            if exc.kind == "malformed":
                raise _refused(provider, 400, "malformed_json", exc.message) from None
            raise _refused(provider, 422, "invalid_event", exc.message) from None
        except StorageUnavailable as exc:
            raise _refused(provider, 503, "storage_unavailable", str(exc)) from None
        for receipt in ack.receipts:
            WEBHOOK_EVENTS.labels(provider, "duplicate" if receipt.duplicate else "accepted").inc()
        receipts = [_receipt(r) for r in ack.receipts]
        return BatchReceipt(events=receipts) if ack.batch else receipts[0]

    return router


def _app_intake(request: Request) -> WebhookIntake:
    intake: WebhookIntake | None = request.app.state.services.webhook_intake
    if intake is None:
        raise IntakeDisabled("the service was started without a webhook intake")
    return intake


def _refused(provider: str, status: int, code: str, message: str) -> ApiError:
    WEBHOOK_EVENTS.labels(provider, code).inc()
    return ApiError(status, code, message)


def _receipt(receipt: Receipt) -> EventReceipt:
    return EventReceipt(id=receipt.id, duplicate=receipt.duplicate, published=receipt.published)


def _too_large() -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is over {MAX_BODY_BYTES} bytes (1 MiB)")


def _check_length(value: str | None) -> None:
    if value is None:
        return
    if not value.isascii() or not value.isdigit():
        raise ApiError(400, "invalid_content_length", "Content-Length is not a number")
    if int(value) > MAX_BODY_BYTES:
        raise _too_large()


async def _read_body(request: Request) -> bytes:
    """The body, refused as soon as more than :data:`MAX_BODY_BYTES` have arrived."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references replaced by the definitions themselves: a
    request body given through ``openapi_extra`` cannot add to the document's components."""
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(definitions[ref.removeprefix("#/$defs/")]))
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(schema)


def _request_body() -> dict[str, Any]:
    shapes = [_inline(SHAPES[source].model_json_schema()) for source in SOURCES]
    examples = {
        source: {"summary": f"POST /webhooks/{source}", "value": EXAMPLES[source]}
        for source in SOURCES
    }
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"anyOf": [*shapes, {"type": "array", "items": {"anyOf": shapes}}]},
                "examples": examples,
            }
        },
    }


_REQUEST_BODY = _request_body()

_DESCRIPTION = """\
One event, or a JSON list of events, of the provider's shape: `binance` takes Binance kline
stream events, `polygon` Polygon `AM` (minute aggregate) events, `generic` our own
`{"event": "ohlcv.updated", "provider", "symbol", "interval", "start", "end"}` notice.

Sign every request: `X-FKS-Timestamp` is the unix time in seconds, `X-FKS-Signature` is
`sha256=` and the hex HMAC-SHA256 of `<timestamp>.<raw body>` keyed with `FKS_WEBHOOK_SECRET`.
A timestamp more than 300 s away from the server's clock is refused.

202 once the events are stored: `{"id", "duplicate", "published"}` for one event,
`{"events": [...]}` for a list. A re-delivered event (same id or same payload) answers
`duplicate: true` with the stored id and is not processed again.
"""
