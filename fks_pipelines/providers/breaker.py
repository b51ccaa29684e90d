"""A circuit breaker per provider, its state shared through :class:`.state.SharedState`.

closed -> open after ``failure_threshold`` consecutive failed calls -> after ``reset_s`` one
caller (across all processes) probes while the others keep failing fast -> the probe's success
closes the circuit, its failure opens it again. A ban (Binance 418) opens it until the ban ends.

Written here rather than taken from pybreaker: its Redis storage shares counters but not the
half-open probe (every process would probe at once), and it cannot open until a given time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from fks_pipelines.providers.errors import CircuitOpen
from fks_pipelines.providers.state import SharedState, key

_STATE_TTL_S = 7 * 86400


@dataclass(frozen=True)
class BreakerState:
    """What callers (failover) and metadata see."""

    state: Literal["closed", "open", "half_open"]
    failures: int
    retry_after_s: float | None


class CircuitBreaker:
    def __init__(
        self,
        provider: str,
        state: SharedState,
        *,
        failure_threshold: int = 5,
        reset_s: float = 30.0,
        probe_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self._state = state
        self._threshold = failure_threshold
        self._reset_s = reset_s
        self._probe_timeout_s = probe_timeout_s
        self._clock = clock
        self._failures = key(provider, "breaker", "failures")
        self._open_until = key(provider, "breaker", "open_until")
        self._probe = key(provider, "breaker", "probe")

    def snapshot(self) -> BreakerState:
        failures = int(self._state.get_float(self._failures) or 0)
        open_until = self._state.get_float(self._open_until)
        if open_until is None:
            return BreakerState("closed", failures, None)
        remaining = open_until - self._clock()
        if remaining > 0:
            return BreakerState("open", failures, remaining)
        return BreakerState("half_open", failures, None)

    def before_call(self) -> None:
        """Raise :class:`CircuitOpen` unless a call may go out now."""
        open_until = self._state.get_float(self._open_until)
        if open_until is None:
            return
        remaining = open_until - self._clock()
        if remaining > 0:
            raise CircuitOpen(
                self.provider, f"circuit open for {remaining:.1f} s more", retry_after=remaining
            )
        if not self._state.add(self._probe, self._probe_timeout_s):
            raise CircuitOpen(
                self.provider, "circuit half-open and another caller is probing", retry_after=1.0
            )

    def record_success(self) -> None:
        self._state.delete(self._failures, self._open_until, self._probe)

    def record_failure(self, *, open_for_s: float | None = None) -> None:
        """Count a failed call; open the circuit at the threshold, after a failed probe, or for
        ``open_for_s`` when the provider said how long to stay away."""
        failures = self._state.incr(self._failures, 1, _STATE_TTL_S)
        probing = self._state.get_float(self._open_until) is not None
        if open_for_s is None and failures < self._threshold and not probing:
            return
        until = self._clock() + (open_for_s if open_for_s is not None else self._reset_s)
        self._state.raise_float(self._open_until, until, _STATE_TTL_S)
        self._state.delete(self._probe)
