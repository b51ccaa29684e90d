"""Bulkheads: each kind of blocking work of the service gets worker threads of its own.

The routes are ``async``; what blocks (Redis, the providers, the warehouse) runs in worker
threads. With one shared pool (Starlette's 40 threads), a stalled dependency of one route held
every thread and starved the others: 60 webhooks waiting on a locked table made a cached price
take 29 s. Now each kind of work borrows from its own :class:`Bulkhead`:

- ``data``: the data routes (provider calls, warehouse reads);
- ``intake``: verifying and parsing webhooks (storing them waits without a thread, see
  :mod:`fks_pipelines.webhooks.intake`);
- ``ops``: ``/health`` probes and ``/metrics``.

A bulkhead runs at most ``threads`` calls at once. A call waits at most ``wait_s`` for a thread,
and at most ``max_waiting`` calls wait at once (:data:`MAX_WAITING`: a bound on what waiting
requests hold, e.g. webhook bodies, well above a burst's concurrency); beyond either bound it is
refused with :class:`Saturated`, which the routes answer 503 with ``Retry-After``: a caller
told to come back is better than one held until its own timeout, and the queue cannot grow
without end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
import anyio.to_thread

from fks_pipelines.settings import Settings

T = TypeVar("T")

OPS_THREADS = 4
"""Threads for /health and /metrics: a handful of probes, each bounded by its own timeout."""
MAX_WAITING = 1024
"""Default bound of the calls waiting for a thread of one bulkhead."""


class Saturated(Exception):
    """A bulkhead had no thread for a call within its bounds; nothing was run."""

    def __init__(self, bulkhead: str, retry_after_s: float) -> None:
        super().__init__(
            f"the service's {bulkhead} workers are all busy; retry in {retry_after_s:.0f} s"
        )
        self.bulkhead = bulkhead
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The ``Retry-After`` header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(self.retry_after_s)))


class Bulkhead:
    """At most ``threads`` blocking calls at once, with a bounded queue (see the module).

    Args:
        name: What the threads are for, named in refusals (``data``, ``intake``, ``ops``).
        threads: Calls running at once.
        wait_s: Longest a call waits for a thread.
        max_waiting: Most calls waiting at once.
    """

    def __init__(
        self, name: str, threads: int, wait_s: float, max_waiting: int = MAX_WAITING
    ) -> None:
        if threads < 1:
            raise ValueError(f"a bulkhead needs at least one thread, got {threads}")
        self.name = name
        self.threads = threads
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self._slots = anyio.Semaphore(threads)
        # The thread itself is borrowed from anyio's worker threads through a limiter of the
        # same size, which a holder of a slot never waits for: the default limiter is shared
        # by everything else that runs in a thread (Starlette's sync code).
        self._threads = anyio.CapacityLimiter(threads)
        self._waiting = 0

    @property
    def busy(self) -> int:
        """Calls running now."""
        return self.threads - self._slots.value

    @property
    def waiting(self) -> int:
        """Calls waiting for a thread now."""
        return self._waiting

    async def run(self, func: Callable[..., T], *args: object, timeout_s: float | None = None) -> T:
        """``func(*args)`` in a thread of this bulkhead.

        Args:
            timeout_s: Give up on the call after this long (TimeoutError): the thread is left
                to finish on its own (a blocking driver call cannot be interrupted), and its
                slot is freed for the next call.

        Raises:
            Saturated: No thread within ``wait_s``, or ``max_waiting`` calls waiting already.
        """
        await self._acquire()
        try:
            if timeout_s is None:
                return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)
            with anyio.fail_after(timeout_s):
                return await anyio.to_thread.run_sync(
                    func, *args, limiter=self._threads, abandon_on_cancel=True
                )
        finally:
            self._slots.release()

    async def _acquire(self) -> None:
        try:
            self._slots.acquire_nowait()
            return
        except anyio.WouldBlock:
            pass
        if self._waiting >= self.max_waiting:
            raise Saturated(self.name, self.wait_s)
        self._waiting += 1
        try:
            with anyio.move_on_after(self.wait_s):
                await self._slots.acquire()
                return
        finally:
            self._waiting -= 1
        raise Saturated(self.name, self.wait_s)


@dataclass(frozen=True)
class Bulkheads:
    """The service's bulkheads, one per kind of work (see the module)."""

    data: Bulkhead
    intake: Bulkhead
    ops: Bulkhead

    @classmethod
    def from_settings(cls, settings: Settings) -> Bulkheads:
        return cls(
            data=Bulkhead("data", settings.api_data_threads, settings.api_thread_wait_s),
            intake=Bulkhead("intake", settings.api_intake_threads, settings.api_thread_wait_s),
            ops=Bulkhead("ops", OPS_THREADS, settings.api_thread_wait_s),
        )
