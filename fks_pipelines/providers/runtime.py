"""The runtime a provider client runs on: cache, rate limiter, circuit breaker, retry policy.

Built once per process and provider (:func:`get_runtime`), so every client of a provider in a
process shares one limiter, one breaker and one cache connection. Their state is shared with
other processes as well: through Redis when ``redis_url`` is set and Redis answers, else
(embedded mode) through files under ``cache_dir`` that every process of the machine opens; only
with neither is it kept in this process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from fks_pipelines.providers.breaker import CircuitBreaker
from fks_pipelines.providers.cache import (
    CacheBackend,
    DiskBackend,
    RedisBackend,
    ResultCache,
    TtlPolicy,
)
from fks_pipelines.providers.http import Timeouts
from fks_pipelines.providers.ratelimit import ProviderLimits, RateLimiter
from fks_pipelines.providers.state import (
    DISK_ERRORS,
    DiskState,
    FallbackState,
    LocalState,
    RedisState,
    SharedState,
    WarnOnce,
)

if TYPE_CHECKING:
    # redis takes ~0.05 s to import, and neither loading the code location nor the embedded mode
    # (no REDIS_URL) uses it: it is imported where a Redis client is made or used.
    import redis

    from fks_pipelines.providers.ratelimit import SharedLog

log = logging.getLogger(__name__)
_warn = WarnOnce(log)

SHARED_DIR = "shared"
"""Under ``cache_dir``: the embedded mode's limiter logs, pauses, quotas and circuits. Not a
cache: deleting it forgets how much of today's quotas is used."""


@dataclass(frozen=True)
class RuntimeConfig:
    """How the runtime behaves; every field has an environment variable (settings.py).

    Attributes:
        redis_url: Redis for the cache and the shared limiter/breaker state; ``None`` for the
            embedded mode (disk cache in ``cache_dir``, limiter and breaker state in files under
            ``cache_dir/shared``).
        cache_dir: Directory of the embedded disk cache and shared state; ``None`` disables
            caching, and keeps limits and breaker in-process, when there is no Redis either.
    """

    redis_url: str | None = None
    cache_dir: Path | None = None
    ttl: TtlPolicy = field(default_factory=TtlPolicy)
    timeouts: Timeouts = field(default_factory=Timeouts)
    max_attempts: int = 4
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    breaker_failures: int = 5
    breaker_reset_s: float = 30.0
    limiter_margin_s: float = 0.05
    limiter_max_wait_s: float = 300.0


@dataclass(frozen=True)
class ProviderRuntime:
    provider: str
    config: RuntimeConfig
    limiter: RateLimiter
    breaker: CircuitBreaker
    cache: ResultCache | None


def build_runtime(provider: str, limits: ProviderLimits, config: RuntimeConfig) -> ProviderRuntime:
    """A fresh runtime; prefer :func:`get_runtime`, which shares one per process.

    Cache and state are shared through Redis when it answers (kept in-process while it fails),
    else through files under ``cache_dir`` (likewise), else kept in-process without a cache.
    """
    client = _redis(config.redis_url) if config.redis_url else None
    state: SharedState
    shared: SharedLog | None
    backend: CacheBackend | None
    if client is not None:
        state = FallbackState(RedisState(client), LocalState())
        shared, backend = client, RedisBackend(client)
    elif config.cache_dir is not None:
        state, shared, backend = _embedded(config.cache_dir)
    else:
        state, shared, backend = LocalState(), None, None
    return ProviderRuntime(
        provider=provider,
        config=config,
        limiter=RateLimiter(
            provider,
            limits,
            state,
            shared=shared,
            margin_s=config.limiter_margin_s,
            max_wait_s=config.limiter_max_wait_s,
        ),
        breaker=CircuitBreaker(
            provider,
            state,
            failure_threshold=config.breaker_failures,
            reset_s=config.breaker_reset_s,
        ),
        cache=ResultCache(backend) if backend is not None else None,
    )


def _embedded(cache_dir: Path) -> tuple[SharedState, SharedLog | None, CacheBackend | None]:
    """State, rate-limit logs and cache in files under ``cache_dir``, shared by the processes
    of this machine; in-process and uncached when the files cannot be opened (a read-only or
    full disk must not fail runs)."""
    try:
        backend = DiskBackend(cache_dir)
        state = DiskState(cache_dir / SHARED_DIR / "state")
    except DISK_ERRORS as exc:
        _warn("disk", "Files under %s unusable (%s): caching off, state in-process", cache_dir, exc)
        return LocalState(), None, None
    return FallbackState(state, LocalState()), cache_dir / SHARED_DIR / "ratelimit", backend


@cache
def get_runtime(provider: str, limits: ProviderLimits, config: RuntimeConfig) -> ProviderRuntime:
    """The runtime of ``provider`` in this process."""
    return build_runtime(provider, limits, config)


def _redis(url: str) -> redis.Redis | None:
    """A connected client for ``url`` (one pool per URL and process), or ``None`` while Redis
    does not answer; a failure is not remembered, so a runtime built later can use it."""
    import redis  # see the imports at the top

    client = _client(url)
    try:
        client.ping()
    except redis.RedisError as exc:
        _warn(
            "redis",
            "Redis at REDIS_URL unreachable (%s): cache and limits of this runtime on disk "
            "(with a cache directory) or off and in-process",
            exc,
        )
        return None
    return client


@cache
def _client(url: str) -> redis.Redis:
    import redis  # see the imports at the top

    return redis.Redis.from_url(
        url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30
    )
