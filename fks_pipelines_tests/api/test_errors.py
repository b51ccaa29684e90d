"""Every refusal of the service has one JSON shape, FastAPI's own included."""

from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI, Query

from fks_pipelines.api.errors import ApiError, install_error_handlers

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/thing")
    def thing(count: Annotated[int, Query()]) -> dict[str, int]:
        if count < 0:
            raise ApiError(400, "negative_count", "count must not be negative")
        return {"count": count}

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


async def test_an_api_error_keeps_its_status_code_and_message(client: httpx.AsyncClient) -> None:
    response = await client.get("/thing", params={"count": -1})

    assert response.status_code == 400
    assert response.json() == {
        "error": {"code": "negative_count", "message": "count must not be negative"}
    }


async def test_a_badly_typed_parameter_is_a_422_in_the_same_shape(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/thing", params={"count": "many"})

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["message"].startswith("query.count: ")


async def test_a_missing_parameter_names_it(client: httpx.AsyncClient) -> None:
    response = await client.get("/thing")

    assert response.status_code == 422
    assert "query.count" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [("GET", "/nowhere", 404, "not_found"), ("POST", "/thing", 405, "method_not_allowed")],
)
async def test_routing_refusals_are_json_errors(
    client: httpx.AsyncClient, method: str, path: str, status: int, code: str
) -> None:
    response = await client.request(method, path)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
