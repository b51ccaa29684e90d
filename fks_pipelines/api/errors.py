"""One error shape for every route: ``{"error": {"code": ..., "message": ...}}``.

Routes raise :class:`ApiError` with a stable, machine-readable ``code`` and a one-line message
for people. FastAPI's own refusals (a missing or badly typed query parameter, an unknown path, a
wrong method) are turned into the same shape by :func:`install_error_handlers`, so a client never
has to parse two formats.
"""

from __future__ import annotations

import http
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException


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

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _summary(exc))

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, _status_code_name(exc.status_code), str(exc.detail))

    # A bug still answers in the one shape, and says nothing about its cause: the exception may
    # hold what a client must not see. Starlette logs the traceback after this answer.
    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal_error", "internal error; see the service's log")


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
