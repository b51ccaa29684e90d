"""Shared fixtures: real PostgreSQL and Redis (see :mod:`fks_pipelines_tests.services`)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from fks_pipelines.providers.runtime import get_runtime
from fks_pipelines_tests.services import (
    NO_LOCAL_ENV,
    LocalRedis,
    PostgresServer,
    RedisServer,
    ServiceUnavailable,
    find_postgres,
    find_redis,
    unavailable,
)


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server of this session; skips (or fails) every test using it if none."""
    try:
        server = find_postgres()
    except ServiceUnavailable as exc:
        reason = str(exc)
    else:
        reason = None
    if reason is not None:
        unavailable(reason)  # outside the except block, so the report is not a chained traceback
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(_postgres_server: PostgresServer) -> Iterator[str]:
    """URL of the real PostgreSQL server, its connections confined to a schema of their own.

    The schema is unique to this pytest process (one per xdist worker), so parallel workers and
    other sessions on a shared server never see each other's tables. It is dropped at the end.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    schema = f"fks_test_{worker}_{os.getpid()}"
    admin = sa.create_engine(_postgres_server.url, poolclass=sa.NullPool)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = _postgres_server.url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as conn:
            # A connection leaked idle-in-transaction would otherwise block the drop forever.
            conn.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture
def pg_warehouse_url(postgres_url: str) -> str:
    """``postgres_url`` with the warehouse tables (if created yet) emptied."""
    engine = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            # A connection of an earlier test leaked idle-in-transaction would hold the TRUNCATE
            # forever: fail this test instead, naming the lock.
            conn.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
            for table in ("ohlcv", "ohlcv_consolidated", "ohlcv_quality", "webhook_events"):
                if conn.execute(sa.text(f"SELECT to_regclass('{table}')")).scalar() is not None:
                    conn.execute(sa.text(f"TRUNCATE {table} RESTART IDENTITY"))
    finally:
        engine.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty warehouse database: a fresh SQLite file, or the real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    # Looked up lazily so that the SQLite half runs even where PostgreSQL is unavailable.
    return str(request.getfixturevalue("pg_warehouse_url"))


@pytest.fixture(scope="session")
def _redis_server() -> Iterator[RedisServer]:
    """The Redis server of this session; skips (or fails) every test using it if none."""
    try:
        server = find_redis()
    except ServiceUnavailable as exc:
        reason = str(exc)
    else:
        reason = None
    if reason is not None:
        unavailable(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(_redis_server: RedisServer) -> str:
    """URL of the real Redis server and database the tests may use (``REDIS_URL`` or a local
    throwaway server). Request :func:`redis_client` as well to start from an empty database."""
    return _redis_server.url


@pytest.fixture
def local_redis() -> Iterator[LocalRedis]:
    """A ``redis-server`` of this test's own, to stop and start again (never the shared one at
    ``REDIS_URL``); skipped only where local servers are turned off by ``NO_LOCAL_ENV``."""
    if os.environ.get(NO_LOCAL_ENV) == "1":
        pytest.skip(f"local servers disabled by {NO_LOCAL_ENV}=1")
    try:
        server = LocalRedis.start()
    except ServiceUnavailable as exc:
        reason = f"needs a local redis-server to stop and restart: {exc}"
    else:
        reason = None
    if reason is not None:
        unavailable(reason)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the database named by ``redis_url``, emptied (FLUSHDB) before the test.

    The tests own that database: whatever it holds is deleted. While the test runs it holds an
    exclusive lock on a file named after the URL, so that tests of parallel pytest-xdist workers
    sharing one external Redis database never flush each other's keys mid-test.
    """
    digest = hashlib.sha256(redis_url.encode()).hexdigest()[:16]
    lock_path = Path(tempfile.gettempdir()) / f"fks-test-redis-{digest}.lock"
    with lock_path.open("a") as lock:
        _lock_within(lock, lock_path, REDIS_LOCK_WAIT_S)
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=2, socket_timeout=5)
        try:
            client.flushdb()
            yield client
        finally:
            client.close()
            fcntl.flock(lock, fcntl.LOCK_UN)


REDIS_LOCK_WAIT_S = 120.0
"""Longest a test waits for another test holding its Redis database (a test takes seconds)."""


def _lock_within(lock: Any, path: Path, wait_s: float) -> None:
    """Take the exclusive lock on ``lock`` within ``wait_s``, else fail the test naming it: a
    process that hung while holding it (a stray test run on the same database) must not stall
    this run forever."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"another process has held {path} for {wait_s:.0f} s: a test run on the "
                    "same Redis database is stuck (see `fuser` on the file)"
                )
            time.sleep(0.05)


@pytest.fixture(params=["redis", "files"])
def shared(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Runtime settings under which processes share limits, pauses, quotas and circuits: real
    Redis (its database emptied), or files in a fresh data directory (embedded mode)."""
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {"cache_dir": tmp_path / "cache"}


@pytest.fixture(autouse=True)
def _fresh_provider_runtimes() -> Iterator[None]:
    """Provider runtimes (limiter, breaker) are per process; give every test its own."""
    get_runtime.cache_clear()
    yield
    get_runtime.cache_clear()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, the loop uvicorn serves the API on."""
    return "asyncio"
