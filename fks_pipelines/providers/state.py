"""Small shared state for the provider runtime: in Redis, in files, or in-process.

The circuit breaker, server-requested pauses and quotas keep a few numbers per provider. With
Redis every process that uses the same Redis sees the same numbers, atomically; without Redis
but with a data directory (embedded mode) every process of the machine sees them through SQLite
files (diskcache); with neither they live in this process. Either way the operations are the
same.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import diskcache

if TYPE_CHECKING:
    # redis takes ~0.05 s to import, and neither loading the code location nor the embedded mode
    # (no REDIS_URL) uses it: it is imported where a Redis client is made or used.
    import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "fks:v1"
DISK_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, diskcache.Timeout, OSError)
"""What shared state in files raises when it cannot be used (filelock's Timeout is an OSError)."""
_DISK_TIMEOUT_S = 5.0  # longest wait for another process's write, as Redis's socket timeout


def key(provider: str, *parts: str) -> str:
    """A namespaced key: ``fks:v1:<provider>:<part>:...``."""
    return ":".join((KEY_PREFIX, provider, *parts))


class SharedState(ABC):
    """Atomic counters, timestamps and flags with expiries."""

    errors: tuple[type[Exception], ...] = ()
    """What this store raises when it cannot be used (:class:`FallbackState` falls back)."""
    label: ClassVar[str] = "shared state"
    """How warnings name this store."""

    @abstractmethod
    def get_float(self, name: str) -> float | None: ...

    @abstractmethod
    def raise_float(self, name: str, value: float, ttl_s: float) -> float:
        """Set ``name`` to ``max(current, value)``; returns the value now stored."""

    @abstractmethod
    def incr(self, name: str, amount: int, ttl_s: float) -> int:
        """Add ``amount``; a new counter expires after ``ttl_s``. Returns the new value."""

    @abstractmethod
    def add(self, name: str, ttl_s: float) -> bool:
        """Create the flag ``name`` if absent (set-if-not-exists); True when this call made it."""

    @abstractmethod
    def delete(self, *names: str) -> None: ...


_RAISE_FLOAT = """
local current = tonumber(redis.call('GET', KEYS[1]))
local value = tonumber(ARGV[1])
if current and current >= value then return tostring(current) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""

_INCR = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
"""


class RedisState(SharedState):
    """State in Redis, shared by every process using the same server."""

    label = "Redis"

    def __init__(self, client: redis.Redis) -> None:
        import redis  # loaded with the client already; see the imports at the top

        self.errors = (redis.RedisError,)
        self.client = client
        self._raise_float = client.register_script(_RAISE_FLOAT)
        self._incr = client.register_script(_INCR)

    def get_float(self, name: str) -> float | None:
        value = self.client.get(name)
        return float(value) if value is not None else None

    def raise_float(self, name: str, value: float, ttl_s: float) -> float:
        return float(self._raise_float(keys=[name], args=[repr(value), _ms(ttl_s)]))

    def incr(self, name: str, amount: int, ttl_s: float) -> int:
        return int(self._incr(keys=[name], args=[amount, _ms(ttl_s)]))

    def add(self, name: str, ttl_s: float) -> bool:
        return bool(self.client.set(name, b"1", nx=True, px=_ms(ttl_s)))

    def delete(self, *names: str) -> None:
        self.client.delete(*names)


class DiskState(SharedState):
    """State in SQLite files (diskcache) under ``directory``, shared by the processes of one
    machine, e.g. the runs of ``dagster dev`` in embedded mode.

    Every read-modify-write runs in one ``transact()`` (``BEGIN IMMEDIATE``), which SQLite keeps
    atomic across processes as Redis does a Lua script.
    """

    errors = DISK_ERRORS
    label = "shared state files"

    def __init__(self, directory: Path) -> None:
        # No eviction by size: a quota or an open circuit must never make room for something
        # else. Expired entries are still culled as new ones are written.
        self.cache = diskcache.Cache(
            str(directory), eviction_policy="none", timeout=_DISK_TIMEOUT_S
        )

    def get_float(self, name: str) -> float | None:
        value = self.cache.get(name)
        return float(value) if value is not None else None

    def raise_float(self, name: str, value: float, ttl_s: float) -> float:
        with self.cache.transact():
            current = self.cache.get(name)
            if current is not None and current >= value:
                return float(current)
            self.cache.set(name, value, expire=ttl_s)
            return value

    def incr(self, name: str, amount: int, ttl_s: float) -> int:
        # As the Redis script: a counter that is new (or had expired) gets the expiry.
        with self.cache.transact():
            value = self.cache.incr(name, amount)
            if self.cache.get(name, expire_time=True)[1] is None:
                self.cache.touch(name, ttl_s)
            return int(value)

    def add(self, name: str, ttl_s: float) -> bool:
        return bool(self.cache.add(name, 1, expire=ttl_s))

    def delete(self, *names: str) -> None:
        with self.cache.transact():
            for name in names:
                self.cache.delete(name)


class LocalState(SharedState):
    """State in this process (embedded mode, no Redis)."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[float, float]] = {}  # name -> (value, expires at)
        self._lock = threading.Lock()

    def _live(self, name: str) -> float | None:
        entry = self._values.get(name)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self._values[name]
            return None
        return entry[0]

    def get_float(self, name: str) -> float | None:
        with self._lock:
            return self._live(name)

    def raise_float(self, name: str, value: float, ttl_s: float) -> float:
        with self._lock:
            current = self._live(name)
            if current is not None and current >= value:
                return current
            self._values[name] = (value, time.monotonic() + ttl_s)
            return value

    def incr(self, name: str, amount: int, ttl_s: float) -> int:
        with self._lock:
            current = self._live(name)
            if current is None:
                self._values[name] = (amount, time.monotonic() + ttl_s)
                return amount
            expires = self._values[name][1]
            self._values[name] = (current + amount, expires)
            return int(current + amount)

    def add(self, name: str, ttl_s: float) -> bool:
        with self._lock:
            if self._live(name) is not None:
                return False
            self._values[name] = (1.0, time.monotonic() + ttl_s)
            return True

    def delete(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self._values.pop(name, None)


class FallbackState(SharedState):
    """Shared state (Redis or files) that falls back to this process's state while the shared
    store fails, so that an outage degrades sharing between processes instead of failing runs."""

    def __init__(self, primary: SharedState, fallback: SharedState) -> None:
        self._primary = primary
        self._fallback = fallback
        self._warn = WarnOnce(log)

    def _call(self, method: str, *args: object) -> Any:
        try:
            return getattr(self._primary, method)(*args)
        except self._primary.errors as exc:
            self._warn(
                self._primary.label,
                "%s unavailable, provider state kept in-process: %s",
                self._primary.label,
                exc,
            )
            return getattr(self._fallback, method)(*args)

    def get_float(self, name: str) -> float | None:
        return self._call("get_float", name)

    def raise_float(self, name: str, value: float, ttl_s: float) -> float:
        return self._call("raise_float", name, value, ttl_s)

    def incr(self, name: str, amount: int, ttl_s: float) -> int:
        return self._call("incr", name, amount, ttl_s)

    def add(self, name: str, ttl_s: float) -> bool:
        return self._call("add", name, ttl_s)

    def delete(self, *names: str) -> None:
        self._call("delete", *names)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class WarnOnce:
    """Log a warning the first time a condition is seen, then only at debug level."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, topic: str, message: str, *args: object) -> None:
        with self._lock:
            first = topic not in self._seen
            self._seen.add(topic)
        (self._logger.warning if first else self._logger.debug)(message, *args)
