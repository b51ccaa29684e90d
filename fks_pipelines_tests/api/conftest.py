"""The HTTP service against the six providers' local wire-format servers, real Redis and a real
warehouse (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI

from fks_pipelines.api.app import create_app
from fks_pipelines.settings import Settings
from fks_pipelines_tests.api.support import Fakes, served


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    with ExitStack() as stack:
        yield Fakes.start(stack)


@pytest.fixture
def settings(fakes: Fakes, tmp_path: Path, redis_url: str, redis_client: redis.Redis) -> Settings:
    """Every provider on its local server, the cache and limits in real Redis (emptied), the
    warehouse in a fresh SQLite file."""
    return fakes.settings(tmp_path, REDIS_URL=redis_url)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with served(app) as client:
        yield client
