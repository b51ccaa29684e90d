"""Scratch state shared by the benchmarks: a Redis database they own and flush."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

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
