"""Rate limits per provider: sliding windows shared across processes, pauses, quotas.

- **Sliding windows** (pyrate-limiter): never more than ``limit`` units in any window of
  ``period_s``. With Redis the log lives in one sorted set per provider and is checked and
  appended by one Lua script, so every process sharing the Redis shares the limit; without Redis
  it is in this process. Each window is widened by a small margin: the limit is counted when a
  request leaves, the provider counts it when it arrives, and the two delays differ.
- **Pauses**: when a provider says "slow down" (``Retry-After``, a used-weight header near its
  ceiling) every process waits until the pause ends before acquiring.
- **Quotas** (daily/monthly calls or credits): counted per UTC day or month; a request that
  would exceed one fails at once with :class:`QuotaExhausted` instead of being sent.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import redis
from pyrate_limiter import InMemoryBucket, Limiter, Rate, RedisBucket, SingleBucketFactory

from fks_pipelines.providers.errors import QuotaExhausted, SlotTimeout
from fks_pipelines.providers.state import SharedState, WarnOnce, key

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]
_WAKE_BUFFER_MS = 5
_PERIOD_ADJECTIVE = {"day": "daily", "month": "monthly"}
_LEAK_EVERY = 50  # acquisitions between trims of the Redis log


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
        client: redis.Redis | None = None,
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
        self._limiters = [
            _Limiters(provider, name, windows, margin_s, client)
            for name, windows in (("requests", limits.requests), ("weight", limits.weight))
            if windows
        ]
        self._warn = WarnOnce(log)

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
            try:
                acquired = limiters.acquire(self.provider, weight, remaining)
            except redis.RedisError as exc:
                self._warn("redis", "Redis unavailable, rate limits held in-process: %s", exc)
                acquired = limiters.acquire_locally(self.provider, weight, remaining)
            if not acquired:
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
    """One unit's limiter, shared (Redis) when configured, with its in-process stand-in."""

    def __init__(
        self, provider: str, unit: str, windows: Sequence[Window], margin_s: float, client: Any
    ) -> None:
        self.unit = unit
        self._build = lambda target: _limiter(provider, unit, windows, margin_s, target)
        self.shared = self._build(client)
        self.local = self._build(None)
        self._client = client
        self._acquired = 0

    def acquire(self, provider: str, weight: int, timeout_s: float) -> bool:
        try:
            acquired = _try(self.shared, provider, weight, timeout_s)
        except redis.exceptions.NoScriptError:
            # A restarted Redis forgot pyrate-limiter's script, which it loads only once.
            self.shared = self._build(self._client)
            acquired = _try(self.shared, provider, weight, timeout_s)
        self._acquired += 1
        if self._client is not None and self._acquired % _LEAK_EVERY == 0:
            self._leak()
        return acquired

    def _leak(self) -> None:
        """Trim entries older than the longest window from the Redis log. Done here, not by
        pyrate-limiter's leak thread: that thread dies on the first Redis error and the log
        would then grow without end."""
        bucket = self.shared.bucket_factory.get(None)  # type: ignore[arg-type]
        bucket.leak(int(time.time() * 1000))

    def acquire_locally(self, provider: str, weight: int, timeout_s: float) -> bool:
        return _try(self.local, provider, weight, timeout_s)


def _try(limiter: Limiter, provider: str, weight: int, timeout_s: float) -> bool:
    try:
        return bool(limiter.try_acquire(provider, weight, True, timeout_s))
    except TimeoutError:
        return False


def _limiter(
    provider: str,
    name: str,
    windows: Sequence[Window],
    margin_s: float,
    client: redis.Redis | None,
) -> Limiter:
    rates = sorted((w.rate(margin_s) for w in windows), key=lambda r: r.interval)
    # The windows already carry a margin; pyrate's own 50 ms wake-up buffer would stack on it.
    if client is None:
        return Limiter(InMemoryBucket(rates), buffer_ms=_WAKE_BUFFER_MS)
    bucket = RedisBucket.init(rates, client, key(provider, "ratelimit", name))
    return Limiter(SingleBucketFactory(bucket, schedule_leak=False), buffer_ms=_WAKE_BUFFER_MS)
