"""The provider cache: parsed frames by request, in Redis or in a local disk cache.

Keys are ``fks:v1:<provider>:<endpoint>:<sha256 of the normalised request>``; the request holds
only what selects the data (never credentials). Values are Arrow IPC for frames, JSON for
quotes (:mod:`.codec`).

Concurrent identical misses make one upstream call: the first caller takes a lock named after
the key (a Redis lock across processes, a diskcache lock across local processes), the others wait
for it and then read what it stored. A cache that is down or an entry that does not decode is
logged once and bypassed: the data is fetched upstream and the run goes on. An entry written in an
earlier format of the codec (:class:`~.codec.OutdatedEntry`, e.g. after a deploy that added
columns) is an ordinary miss: dropped, refetched and replaced, logged at DEBUG only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

import diskcache
import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.providers.codec import (
    CorruptEntry,
    OutdatedEntry,
    decode_frame,
    decode_quote,
    encode_frame,
    encode_quote,
)
from fks_pipelines.providers.state import WarnOnce, key

if TYPE_CHECKING:
    # redis takes ~0.05 s to import, and neither loading the code location nor the embedded mode
    # (no REDIS_URL) uses it: it is imported where a Redis client is made or used.
    import redis

log = logging.getLogger(__name__)

_LOCK_TTL_S = 120.0  # longest an upstream fetch may hold a key's lock
T = TypeVar("T")


def cache_key(provider: str, endpoint: str, request: Mapping[str, object]) -> str:
    digest = hashlib.sha256(
        json.dumps(request, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()
    return key(provider, endpoint, digest)


class CacheBackend(ABC):
    """Bytes by key with a TTL, plus a lock per key for single flight.

    Backend failures raise one of :attr:`errors`, except when releasing a lock: a lock that
    cannot be released expires on its own.
    """

    errors: tuple[type[Exception], ...] = (OSError,)
    """What this backend raises when it cannot be used (the cache is then bypassed)."""

    @abstractmethod
    def get(self, name: str) -> bytes | None: ...

    @abstractmethod
    def set(self, name: str, value: bytes, ttl_s: float) -> None: ...

    @abstractmethod
    def delete(self, name: str) -> None: ...

    @abstractmethod
    def lock(self, name: str) -> AbstractContextManager[None]: ...


class RedisBackend(CacheBackend):
    def __init__(self, client: redis.Redis) -> None:
        import redis  # loaded with the client already; see the imports at the top

        self.errors = (redis.RedisError, OSError)
        self.client = client

    def get(self, name: str) -> bytes | None:
        return self.client.get(name)

    def set(self, name: str, value: bytes, ttl_s: float) -> None:
        self.client.set(name, value, px=max(1, int(ttl_s * 1000)))

    def delete(self, name: str) -> None:
        self.client.delete(name)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        import redis  # see __init__

        lock = self.client.lock(
            f"{name}:lock", timeout=_LOCK_TTL_S, blocking_timeout=_LOCK_TTL_S, sleep=0.01
        )
        if not lock.acquire():
            raise redis.exceptions.LockError(f"waited {_LOCK_TTL_S:.0f} s for {name}")
        try:
            yield
        finally:
            with suppress(redis.RedisError):
                lock.release()


class DiskBackend(CacheBackend):
    """diskcache (SQLite files): shared by the processes of one machine, e.g. ``dagster dev``."""

    errors = (diskcache.Timeout, OSError)

    def __init__(self, directory: Path) -> None:
        self.cache = diskcache.Cache(str(directory))

    def get(self, name: str) -> bytes | None:
        return self.cache.get(name)

    def set(self, name: str, value: bytes, ttl_s: float) -> None:
        self.cache.set(name, value, expire=ttl_s)

    def delete(self, name: str) -> None:
        self.cache.delete(name)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        lock = diskcache.Lock(self.cache, f"{name}:lock", expire=_LOCK_TTL_S)
        lock.acquire()
        try:
            yield
        finally:
            with suppress(*self.errors):
                lock.release()


@dataclass(frozen=True)
class TtlPolicy:
    """How long cached data stays, by what it is.

    Attributes:
        closed_s: A window whose bars have all closed is immutable: kept long.
        open_s: Upper bound for a window reaching past the last closed bar; such a window is
            also dropped when its next bar closes, since that bar then belongs in it.
        price_s: A latest price.
        late_data_grace_s: A closed window missing bars and ended less than this ago may still
            be filled in by the provider: it gets the short TTL.
    """

    closed_s: float = 7 * 86400.0
    open_s: float = 60.0
    price_s: float = 2.0
    late_data_grace_s: float = 86400.0

    def window(
        self,
        interval: Interval,
        start: pd.Timestamp,
        end: pd.Timestamp,
        rows: int,
        now: pd.Timestamp,
    ) -> float:
        open_bar = now.floor(interval.offset)
        if end > open_bar:
            next_close = open_bar + interval.offset
            return max(1.0, min(self.open_s, (next_close - now).total_seconds()))
        complete = rows >= interval.bars_between(start, end)
        if not complete and (now - end).total_seconds() < self.late_data_grace_s:
            return self.open_s
        return self.closed_s


@dataclass(frozen=True)
class Codec(Generic[T]):
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T]  # raises CorruptEntry


FRAMES: Codec[pd.DataFrame] = Codec(encode_frame, decode_frame)
QUOTES: Codec[Quote] = Codec(encode_quote, decode_quote)


@dataclass(frozen=True)
class CacheResult(Generic[T]):
    value: T
    hit: bool


class ResultCache:
    """Provider results cached by request, with single flight and a tolerant failure mode."""

    def __init__(self, backend: CacheBackend) -> None:
        self.backend = backend
        self._warn = WarnOnce(log)
        # Threads of one process queue on a local lock of the key first, so that only one per
        # process waits on the shared lock. One lock per key, not a fixed set shared by hash:
        # a load may read another key (Alpha Vantage's daily window reads the cached history),
        # and two keys on one lock then deadlocked the thread on itself, by the luck of the
        # process's string hashing. A lock lives while a thread holds it or waits for it.
        self._locks: weakref.WeakValueDictionary[str, threading.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._locks_guard = threading.Lock()

    def get_or_load(
        self,
        name: str,
        codec: Codec[T],
        load: Callable[[], T],
        ttl: Callable[[T], float],
    ) -> CacheResult[T]:
        """The cached value at ``name``, or ``load()`` stored for ``ttl(value)`` seconds.

        Errors of ``load()`` propagate untouched; errors of the cache only bypass it.
        """
        try:
            cached = self._read(name, codec)
        except self.backend.errors as exc:
            self._warn("backend", "cache unavailable, fetching upstream: %s", exc)
            return CacheResult(load(), hit=False)
        if cached is not None:
            return CacheResult(cached, hit=True)
        with self._local_lock(name), ExitStack() as held:
            try:
                held.enter_context(self.backend.lock(name))
                cached = self._read(name, codec)
            except self.backend.errors as exc:
                self._warn("backend", "cache unavailable, fetching upstream: %s", exc)
                return CacheResult(load(), hit=False)
            if cached is not None:
                return CacheResult(cached, hit=True)
            value = load()
            try:
                self.backend.set(name, codec.encode(value), ttl(value))
            except self.backend.errors as exc:
                self._warn("backend", "cache unavailable, not storing: %s", exc)
            return CacheResult(value, hit=False)

    def _local_lock(self, name: str) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(name)
            if lock is None:
                lock = self._locks[name] = threading.Lock()
            return lock

    def _read(self, name: str, codec: Codec[T]) -> T | None:
        data = self.backend.get(name)
        if data is None:
            return None
        try:
            return codec.decode(data)
        except OutdatedEntry as exc:
            log.debug("cache entry %s is outdated, treated as a miss: %s", name, exc)
            self.backend.delete(name)
            return None
        except CorruptEntry as exc:
            self._warn("corrupt", "dropping a corrupt cache entry %s: %s", name, exc)
            self.backend.delete(name)
            return None
