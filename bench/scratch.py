"""Scratch state shared by the benchmarks: a Redis database they own and flush, and a warehouse
they create and delete."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import redis
import sqlalchemy as sa

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/14"


@contextmanager
def scratch_redis(url: str) -> Iterator[redis.Redis]:
    """A client of the database at ``url``, flushed on entry and on exit.

    Refuses database 0, the default of ``REDIS_URL`` in development: a benchmark must not wipe
    a cache someone uses.
    """
    client = redis.Redis.from_url(url)
    if not client.connection_pool.connection_kwargs.get("db"):
        raise SystemExit(f"{url} selects Redis database 0; pass a scratch database")
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@contextmanager
def scratch_warehouse(kind: str, postgres_url: str | None, schema: str) -> Iterator[str]:
    """A fresh warehouse URL of ``kind``: a SQLite file in a temporary directory, or on
    PostgreSQL the schema ``schema`` (created empty, dropped afterwards)."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="fks-bench-") as directory:
            yield f"sqlite:///{directory}/warehouse.sqlite"
        return
    assert postgres_url is not None
    admin = sa.create_engine(postgres_url, poolclass=sa.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = sa.make_url(postgres_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
