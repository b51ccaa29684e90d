"""One error shape for every route: ``{"error": {"code": ..., "message": ...}}``.

Routes raise :class:`ApiError` with a stable, machine-readable ``code`` and a one-line message
for people. FastAPI's own refusals (a missing or badly typed query parameter, an unknown path, a
wrong method, with its ``Allow`` header) are turned into the same shape by
:func:`install_error_handlers`, so a client never has to parse two formats; so are the server's
own refusals of a request it cannot parse (:mod:`fks_pipelines.api.server`).

A bug answers 500 ``internal_error`` through :class:`UnexpectedErrorMiddleware`, which keeps the
connection open: Starlette's outermost handler re-raises after answering, and uvicorn then
closes the connection, so the sender's next request on it was reset.
"""

from __future__ import annotations

import http
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from fks_pipelines.api.bulkheads import Saturated

log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """What every 4xx and 5xx answer holds (for the OpenAPI document)."""

    error: ErrorDetail


class ApiError(Exception):
    """A refusal with its HTTP status, e.g. ``ApiError(404, "unknown_symbol", "...")``.

    ``headers`` go out with the answer (e.g. ``Retry-After`` on a 503).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message))
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Answer :class:`ApiError`, validation failures, Starlette's HTTP errors and unexpected
    exceptions (500) as JSON errors."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(Saturated)
    async def _saturated(_: Request, exc: Saturated) -> JSONResponse:
        return overloaded(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _summary(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's 405 carries the route's methods in ``Allow`` (RFC 9110 requires it).
        return error_response(
            exc.status_code, _status_code_name(exc.status_code), str(exc.detail), exc.headers
        )

    # A bug still answers in the one shape, and says nothing about its cause: the exception may
    # hold what a client must not see. Only what UnexpectedErrorMiddleware does not wrap (other
    # middleware) gets here; Starlette logs the traceback after this answer.
    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return internal_error()


def overloaded(exc: Saturated) -> JSONResponse:
    """503 ``overloaded``: a bulkhead had no worker thread in time; come back later."""
    return error_response(503, "overloaded", str(exc), {"Retry-After": exc.retry_after})


def internal_error() -> JSONResponse:
    return error_response(500, "internal_error", "internal error; see the service's log")


class UnexpectedErrorMiddleware:
    """Answers an exception no handler took with the JSON 500 and logs its traceback, without
    re-raising it: the server then keeps the connection for the sender's next request (pure
    ASGI, so that nothing is buffered). An exception after the answer has started is re-raised:
    the connection cannot carry on from half an answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            if started:
                raise
            log.exception("answering 500 to %s %s", scope.get("method"), scope.get("path"))
            await internal_error()(scope, receive, send)


def _summary(exc: RequestValidationError) -> str:
    """``query.start: Input should be a valid datetime; ...`` (the first three problems)."""
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}" if where else error.get("msg", ""))
    return "; ".join(parts) or "invalid request"


def _status_code_name(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "http_error"
