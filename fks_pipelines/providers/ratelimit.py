"""Rate limits per provider: sliding windows shared across processes, pauses, quotas.

- **Sliding windows** (pyrate-limiter): never more than ``limit`` units in any window of
  ``period_s``. With Redis the log lives in one sorted set per provider and unit and is checked
  and appended by one Lua script, so every process sharing the Redis shares the limit; without
  Redis but with a data directory it lives in one SQLite file per provider and unit, checked and
  appended under a file lock, so every process of the machine shares it; with neither it is in
  this process. Each window is widened by a small margin: the limit is counted when a request
  leaves, the provider counts it when it arrives, and the two delays differ.
- **Pauses**: when a provider says "slow down" (``Retry-After``, a used-weight header near its
  ceiling) every process waits until the pause ends before acquiring.
- **Quotas** (daily/monthly calls or credits): counted per UTC day or month; a request that
  would exceed one fails at once with :class:`QuotaExhausted` instead of being sent.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pyrate_limiter import (
    InMemoryBucket,
    Limiter,
    Rate,
    RateItem,
    RedisBucket,
    SingleBucketFactory,
    SQLiteBucket,
)
from pyrate_limiter.buckets.redis_bucket import LuaScript

from fks_pipelines.providers.errors import QuotaExhausted, SlotTimeout
from fks_pipelines.providers.state import DISK_ERRORS, SharedState, WarnOnce, key

if TYPE_CHECKING:
    # redis takes ~0.05 s to import, and neither loading the code location nor the embedded mode
    # (no REDIS_URL) uses it: it is imported where a Redis client is made or used.
    import redis

    SharedLog = redis.Redis | Path
    """Where the sliding-window logs are shared: a Redis server, or a directory of SQLite
    files."""

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]
_WAKE_BUFFER_MS = 5
_JITTER_S = 0.01
_PERIOD_ADJECTIVE = {"day": "daily", "month": "monthly"}
_LEAK_EVERY = 50  # acquisitions between trims of a shared log


@dataclass(frozen=True)
class Window:
    """At most ``limit`` units in any ``period_s`` seconds."""

    limit: int
    period_s: float

    @classmethod
    def per_second(cls, rps: float) -> Window:
        """The strictest window honouring ``rps`` requests per second.

        2/s -> 2 per 1 s (never 3 in a second); 0.5/s -> 1 per 2 s; 0.083/s -> 1 per 12.05 s.
        """
        if rps <= 0:
            raise ValueError(f"requests per second must be positive, got {rps}")
        if rps >= 1:
            return cls(limit=math.floor(rps), period_s=1.0)
        return cls(limit=1, period_s=1.0 / rps)

    def rate(self, margin_s: float) -> Rate:
        return Rate(self.limit, math.ceil((self.period_s + margin_s) * 1000))


@dataclass(frozen=True)
class Quota:
    """A budget of ``limit`` units (calls or credits) per UTC ``period``."""

    name: str
    limit: int
    period: Literal["day", "month"]

    def bucket(self, now: datetime) -> str:
        return now.strftime("%Y-%m-%d" if self.period == "day" else "%Y-%m")

    def seconds_left(self, now: datetime) -> float:
        if self.period == "day":
            end = datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + 86400
        else:
            year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
            end = datetime(year, month, 1, tzinfo=UTC).timestamp()
        return max(1.0, end - now.timestamp())


@dataclass(frozen=True)
class ProviderLimits:
    """Everything that limits one provider.

    Attributes:
        requests: Windows counting requests (e.g. 10 per second).
        weight: Windows counting the provider's own cost unit (Binance weight per minute).
        quotas: Daily or monthly budgets.
    """

    requests: tuple[Window, ...]
    weight: tuple[Window, ...] = ()
    quotas: tuple[Quota, ...] = field(default=())


class RateLimiter:
    """Blocks until a request may go out under every window, pause and quota of a provider."""

    def __init__(
        self,
        provider: str,
        limits: ProviderLimits,
        state: SharedState,
        *,
        shared: SharedLog | None = None,
        margin_s: float = 0.05,
        max_wait_s: float = 300.0,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.provider = provider
        self.limits = limits
        self._state = state
        self._max_wait_s = max_wait_s
        self._sleep = sleep
        self._pause = key(provider, "pause_until")
        warn = WarnOnce(log)
        self._limiters = [
            _Limiters(provider, name, windows, margin_s, shared, warn)
            for name, windows in (("requests", limits.requests), ("weight", limits.weight))
            if windows
        ]

    def acquire(self, cost: int = 1) -> float:
        """Wait for a slot for one request costing ``cost``; returns the seconds waited.

        Raises:
            RateLimited: The wait would exceed ``max_wait_s``.
        """
        started = time.monotonic()
        self._wait_for_pause(started)
        for limiters in self._limiters:
            weight = 1 if limiters.unit == "requests" else cost
            remaining = max(self._max_wait_s - (time.monotonic() - started), 0.001)
            if not limiters.acquire(self.provider, weight, remaining):
                raise SlotTimeout(
                    self.provider, f"no request slot within {self._max_wait_s:.0f} s (not sent)"
                )
        return time.monotonic() - started

    def pause(self, seconds: float) -> None:
        """Hold every process's requests to this provider for ``seconds`` from now."""
        self._state.raise_float(self._pause, time.time() + seconds, seconds + 1)

    def reserve(self, cost: int, now: datetime | None = None) -> None:
        """Count ``cost`` against every quota, or raise :class:`QuotaExhausted` untouched."""
        now = now or datetime.now(UTC)
        taken: list[tuple[str, Quota]] = []
        for quota in self.limits.quotas:
            name = key(self.provider, "quota", quota.name, quota.bucket(now))
            used = self._state.incr(name, cost, quota.seconds_left(now) + 3600)
            taken.append((name, quota))
            if used > quota.limit:
                for taken_name, taken_quota in taken:
                    self._state.incr(taken_name, -cost, taken_quota.seconds_left(now) + 3600)
                raise QuotaExhausted(
                    self.provider,
                    f"{_PERIOD_ADJECTIVE[quota.period]} {quota.name} quota of {quota.limit} "
                    "used up "
                    f"({used - cost} used); resets in {quota.seconds_left(now) / 3600:.1f} h",
                )

    def refund(self, cost: int, now: datetime | None = None) -> None:
        """Give back what :meth:`reserve` took for a request that was not sent."""
        now = now or datetime.now(UTC)
        for quota in self.limits.quotas:
            name = key(self.provider, "quota", quota.name, quota.bucket(now))
            self._state.incr(name, -cost, quota.seconds_left(now) + 3600)

    def quota_usage(self, now: datetime | None = None) -> dict[str, int]:
        """Units used so far per quota in the current period (for metadata)."""
        now = now or datetime.now(UTC)
        return {
            f"quota_{q.period}_{q.name}_used": int(
                self._state.get_float(key(self.provider, "quota", q.name, q.bucket(now))) or 0
            )
            for q in self.limits.quotas
        }

    def _wait_for_pause(self, started: float) -> None:
        while (until := self._state.get_float(self._pause)) is not None:
            remaining = until - time.time()
            if remaining <= 0:
                return
            if time.monotonic() - started + remaining > self._max_wait_s:
                raise SlotTimeout(
                    self.provider,
                    f"paused by the provider for {remaining:.0f} s more (not sent)",
                    retry_after=remaining,
                )
            self._sleep(remaining)


class _Limiters:
    """One unit's limiter, shared (Redis or files) when configured, with its in-process stand-in
    for while the shared log cannot be used."""

    def __init__(
        self,
        provider: str,
        unit: str,
        windows: Sequence[Window],
        margin_s: float,
        shared: SharedLog | None,
        warn: WarnOnce,
    ) -> None:
        self.unit = unit
        self._build = lambda target: _limiter(provider, unit, windows, margin_s, target)
        self._target = shared
        # Built on first use, so that a log that cannot be opened degrades like one that fails
        # later, and a later acquisition retries it.
        self._shared: Limiter | None = None
        self._local = self._build(None)
        self._acquired = 0
        self._warn = warn
        # What the shared log raises when it cannot be used, and what a restarted Redis raises
        # for pyrate-limiter's script, which it loads only once. Nothing when nothing is shared.
        self._errors: tuple[type[Exception], ...] = ()
        self._script_lost: tuple[type[Exception], ...] = ()
        self._topic, self._store = "", ""
        if isinstance(shared, Path):
            self._errors = DISK_ERRORS
            self._topic, self._store = "disk", f"rate-limit log in {shared}"
        elif shared is not None:
            import redis  # loaded with the client already; see the imports at the top

            self._errors = (redis.RedisError,)
            self._script_lost = (redis.exceptions.NoScriptError,)
            self._topic, self._store = "redis", "Redis"

    def acquire(self, provider: str, weight: int, timeout_s: float) -> bool:
        if self._target is None:
            return _try(self._local, provider, weight, timeout_s)
        try:
            acquired = self._acquire_shared(provider, weight, timeout_s)
        except self._errors as exc:
            self._unavailable(exc)
            return _try(self._local, provider, weight, timeout_s)
        self._acquired += 1
        if self._acquired % _LEAK_EVERY == 0:
            self._leak()
        return acquired

    def _acquire_shared(self, provider: str, weight: int, timeout_s: float) -> bool:
        if self._shared is None:
            self._shared = self._build(self._target)
        try:
            return _try(self._shared, provider, weight, timeout_s)
        except self._script_lost:
            self._shared = self._build(self._target)
            return _try(self._shared, provider, weight, timeout_s)

    def _leak(self) -> None:
        """Trim entries older than the longest window from the shared log. Done here, not by
        pyrate-limiter's leak thread: that thread dies on the first Redis error and the log
        would then grow without end."""
        assert self._shared is not None  # an acquisition through it came first
        bucket = self._shared.bucket_factory.get(None)  # type: ignore[arg-type]
        try:
            bucket.leak(int(time.time() * 1000))
        except self._errors as exc:
            self._unavailable(exc)  # the next trim takes what this one left

    def _unavailable(self, exc: Exception) -> None:
        self._warn(self._topic, "%s unavailable, rate limits held in-process: %s", self._store, exc)


def _try(limiter: Limiter, provider: str, weight: int, timeout_s: float) -> bool:
    """Take ``weight`` units within ``timeout_s``, polling without blocking.

    pyrate-limiter's blocking mode retries with the item's first timestamp pushed forward by
    the time it slept, not with the clock: in a Redis log shared with other processes those
    shifted entries sit beside real ones, the window count goes wrong, and the shared limiter
    over-admitted (3 requests in 15 ms at 2/s, seen with three processes). Each attempt here is a
    fresh item stamped now; between attempts it sleeps until the bucket's next free slot, with a
    little jitter so that waiting processes do not retry in the same millisecond.
    """
    deadline = time.monotonic() + timeout_s
    while not limiter.try_acquire(provider, weight, blocking=False):
        wait_s = _next_slot_s(limiter, provider, weight)
        remaining = deadline - time.monotonic()
        if wait_s is None or wait_s > remaining:
            return False
        time.sleep(wait_s + random.uniform(0, _JITTER_S))
    return True


def _next_slot_s(limiter: Limiter, provider: str, weight: int) -> float | None:
    """Seconds until ``weight`` units may fit, or None when they never can."""
    factory = limiter.bucket_factory
    item = factory.wrap_item(provider, weight)
    waiting_ms = factory.get(item).waiting(item)  # type: ignore[arg-type]
    if waiting_ms == -1:
        return None
    return max(int(waiting_ms), 0) / 1000 + _WAKE_BUFFER_MS / 1000


def _limiter(
    provider: str,
    name: str,
    windows: Sequence[Window],
    margin_s: float,
    shared: SharedLog | None,
) -> Limiter:
    rates = sorted((w.rate(margin_s) for w in windows), key=lambda r: r.interval)
    if shared is None:
        return Limiter(InMemoryBucket(rates))
    if isinstance(shared, Path):
        shared.mkdir(parents=True, exist_ok=True)
        bucket: SQLiteBucket | RedisBucket = _FileBucket.init_from_file(
            rates, table=name, db_path=str(shared / f"{provider}-{name}.sqlite"), use_file_lock=True
        )
    else:
        bucket = _RedisLogBucket.init(rates, shared, key(provider, "ratelimit", name))
    return Limiter(SingleBucketFactory(bucket, schedule_leak=False))


_UNBOUNDED_COUNT = "redis.call('ZCOUNT', bucket, window_start, '+inf')"


class _RedisLogBucket(RedisBucket):
    """pyrate-limiter's Redis log, counting every entry from the window's start on.

    pyrate's script counts a window as ``ZCOUNT window_start now``, ``now`` being the stamp the
    client put on the item before sending the script. A process descheduled between stamping
    and the script then misses the entries other processes logged meanwhile with later stamps,
    and is admitted beside them: 11 requests within 14 ms against 10 per second, and gaps of
    150-190 ms under one per 200 ms, on 2 loaded cores. Counting up to ``+inf`` includes those
    entries (as the SQLite log does); a late stamp can then only make a process wait a few ms
    longer, never let it in early.
    """

    SCRIPT = LuaScript.PUT_ITEM.replace(
        "redis.call('ZCOUNT', bucket, window_start, now)", _UNBOUNDED_COUNT
    )

    @classmethod
    def init(  # type: ignore[override]
        cls, rates: list[Rate], client: redis.Redis, bucket_key: str
    ) -> _RedisLogBucket:
        if _UNBOUNDED_COUNT not in cls.SCRIPT:
            raise RuntimeError("pyrate-limiter's Redis script changed: review _RedisLogBucket")
        return cls(rates, client, bucket_key, client.script_load(cls.SCRIPT))


class _FileBucket(SQLiteBucket):
    """pyrate-limiter's SQLite log, each item stamped once the file lock is held.

    ``SQLiteBucket`` counts and inserts under its file lock, but the limiter stamps the item
    before that, and filelock polls a contended lock every 50 ms: a process that waited for the
    lock would log its request up to that long before it leaves, and the next one could then
    leave early. Handing the file lock to the limiter instead (``Limiter(bucket)``) does not work
    with the non-blocking attempts of :func:`_try`: its combined lock calls
    ``FileLock.acquire(False)``, which filelock rejects (a bool is no timeout).
    """

    def put(self, item: RateItem) -> bool:
        with self.lock:  # a file lock is reentrant within a thread: SQLiteBucket.put takes it too
            item.timestamp = self.now()
            return super().put(item)
