"""``POST /webhooks/{provider}``: signed market-data events in, 202 once stored durably.

The route reads the raw body itself (the signature covers its exact bytes), refusing more than
:data:`MAX_BODY_BYTES` both from ``Content-Length`` up front and while the body streams in (a
chunked body has no length). The intake (:mod:`fks_pipelines.webhooks.intake`) verifies and
parses it in one of the intake's own worker threads (the ``intake`` bulkhead, see
:mod:`fks_pipelines.api.bulkheads`), then the route waits for the writer thread to store it
without holding a thread: a stalled warehouse holds the intake's requests, never the threads of
the data routes or of ``/health``. Every outcome is counted in
``fks_webhook_events_total{provider,outcome}`` in the default Prometheus registry (accepted and
duplicate per event, refusals per request; a provider not served is counted as ``unknown``).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request
from prometheus_client import Counter
from pydantic import BaseModel, Field

from fks_pipelines.api.bulkheads import Bulkhead, Saturated
from fks_pipelines.api.errors import ApiError, ErrorBody
from fks_pipelines.warehouse.webhook_events import Receipt
from fks_pipelines.webhooks import signing
from fks_pipelines.webhooks.events import EXAMPLES, SHAPES, SOURCES, EventError, WebhookEvent
from fks_pipelines.webhooks.intake import IntakeDisabled, WebhookIntake
from fks_pipelines.webhooks.writer import EventRejected, StorageUnavailable

MAX_BODY_BYTES = 1 << 20
INTAKE_THREADS = 8
"""Threads of the intake's own bulkhead when the router is given an intake (not the app's)."""

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


def build_webhook_router(
    intake: WebhookIntake | None = None, bulkhead: Bulkhead | None = None
) -> APIRouter:
    """The webhook route; mount it on an app with the JSON error handlers.

    Args:
        intake: The intake to serve; by default the one the app's services built at start-up
            (:class:`~fks_pipelines.api.services.Services`), as :func:`create_app` mounts it.
        bulkhead: The worker threads that verify and parse; by default the services' ``intake``
            bulkhead, or one of :data:`INTAKE_THREADS` of the router's own with ``intake``.
    """
    router = APIRouter(tags=["webhooks"])
    if bulkhead is None and intake is not None:
        bulkhead = Bulkhead("intake", INTAKE_THREADS, wait_s=5.0)

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
            422: {
                "model": ErrorBody,
                "description": "Not an event of this provider's shape, or a field out of range "
                "(times in the years 2000-2100, finite numbers).",
            },
            503: {
                "model": ErrorBody,
                "description": "No webhook secret configured (webhooks_disabled), the store is "
                "down or did not answer in time (storage_unavailable), or the intake is "
                "saturated (overloaded): retry after Retry-After.",
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
            serving = intake if intake is not None else _app_intake(request)
            workers = bulkhead if bulkhead is not None else _app_bulkhead(request)
            retry = {"Retry-After": str(serving.retry_after_s)}
            _check_length(request.headers.get("content-length"))
            timestamp = serving.check_timestamp(x_fks_timestamp)
            body = await _read_body(request)
            if serving.saturated:
                raise ApiError(  # counted below, as every ApiError
                    503,
                    "overloaded",
                    f"{serving.max_pending} webhook requests are waiting for the store already",
                    retry,
                )
            delivery = await workers.run(serving.accept, provider, timestamp, x_fks_signature, body)
            stored = await _stored(serving, delivery.events)
        except ApiError as exc:
            WEBHOOK_EVENTS.labels(provider, exc.code).inc()
            raise
        except Saturated as exc:
            headers = {"Retry-After": exc.retry_after}
            raise _refused(provider, 503, "overloaded", str(exc), headers) from None
        except IntakeDisabled as exc:
            raise _refused(provider, 503, "webhooks_disabled", str(exc)) from None
        except signing.SignatureError as exc:
            raise _refused(provider, 401, exc.code, exc.message) from None
        except EventError as exc:
            if exc.kind == "malformed":
                raise _refused(provider, 400, "malformed_json", exc.message) from None
            raise _refused(provider, 422, "invalid_event", exc.message) from None
        except EventRejected as exc:
            raise _refused(provider, 422, "invalid_event", str(exc)) from None
        except StorageUnavailable as exc:
            raise _refused(provider, 503, "storage_unavailable", str(exc), retry) from None
        for receipt in stored:
            WEBHOOK_EVENTS.labels(provider, "duplicate" if receipt.duplicate else "accepted").inc()
        receipts = [_receipt(r) for r in stored]
        return BatchReceipt(events=receipts) if delivery.batch else receipts[0]

    return router


async def _stored(intake: WebhookIntake, events: Sequence[WebhookEvent]) -> list[Receipt]:
    """The receipts of ``events`` once the writer stored them, waited for without a thread;
    given up after the intake's ``wait_s`` (events still queued are then dropped)."""
    done = intake.submit(events)
    try:
        return await asyncio.wait_for(asyncio.wrap_future(done), intake.wait_s)
    except TimeoutError:
        raise StorageUnavailable(
            f"the event store did not answer within {intake.wait_s:.0f} s"
        ) from None


def _app_intake(request: Request) -> WebhookIntake:
    intake: WebhookIntake | None = request.app.state.services.webhook_intake
    if intake is None:
        raise ApiError(503, "webhooks_disabled", "the service was started without a webhook intake")
    return intake


def _app_bulkhead(request: Request) -> Bulkhead:
    return request.app.state.services.bulkheads.intake


def _refused(
    provider: str, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> ApiError:
    WEBHOOK_EVENTS.labels(provider, code).inc()
    return ApiError(status, code, message, headers)


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
