"""The latest prices of ``GET /api/v1/data/price``: coalesced, read from the shared cache on the
event loop, and kept in process while the shared cache cannot be reached.

**Coalescing.** Requests for the same price (instrument and provider) that arrive while one is
being fetched wait for that fetch instead of starting their own: one cache read (or upstream
call) per price at a time in this process, however many ask. A waiter waits for one fetch, never
behind a queue of identical ones, and without holding a thread.

**A fetch** reads the provider cache first, on the event loop: the same key and codec as the
provider runtime's cache (:mod:`fks_pipelines.providers.cache`), one asynchronous ``GET`` on
Redis, so that a cache hit costs no worker thread (a thread hop per batch was most of a cached
price's latency under load). Anything else (a miss, the embedded disk cache, an entry that does
not decode) goes to the runtime in a data worker thread
(:meth:`~fks_pipelines.providers.base.ProviderClient.latest_price_result`, or the failover):
its cache with its per-key lock, limiter, breaker and upstream request.

**The process's own cache.** While the provider cache cannot be used (Redis down, or no cache at
all), every lookup missed it and went upstream at the rate limiter's pace: 12 answers/s for 100
upstream calls in the issue that asked for this. So each price fetched upstream is also kept
here for ``FKS_CACHE_TTL_PRICE_S``, and served from here while the shared cache is known to be
down: at most one upstream call per price and TTL, whatever the load. A failed ``GET`` (or
``/health``'s probe) says Redis is down; while it is, the ``GET`` is tried again only when a
kept price expires, and the first one that succeeds brings the shared cache back (every process
shares it).

Answers say where the price came from: ``cached`` (no upstream request for this answer) and
``cache`` (``redis``, ``disk``, ``process``, or null for an upstream answer); ``/health`` shows
which cache serves now (:meth:`PriceDesk.tier`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis
import redis.asyncio
from fastapi import Request, Response
from redis.backoff import NoBackoff
from redis.retry import Retry

from fks_pipelines.api.bulkheads import Bulkhead
from fks_pipelines.api.errors import ApiError
from fks_pipelines.api.schemas import PriceResponse
from fks_pipelines.api.services import Services
from fks_pipelines.providers.cache import QUOTES, DiskBackend, RedisBackend, cache_key
from fks_pipelines.providers.codec import CorruptEntry

log = logging.getLogger(__name__)

CacheTier = Literal["redis", "disk", "process"]
Key = tuple[str | None, str]
"""A price: (the provider asked, and its ticker) or (None, the canonical instrument)."""
MAX_ENTRIES = 10_000
"""Bound of the process's cache (the universe's prices number in the tens)."""
REDIS_TIMEOUT_S = 0.5
"""Longest the event loop's ``GET`` waits for Redis (connect, then answer): a Redis that does
not answer costs a price at most this, once per TTL while it is down."""


@dataclass(frozen=True)
class PriceAnswer:
    """An answer, rendered once for every request it serves."""

    price: PriceResponse
    body: bytes

    @classmethod
    def of(cls, price: PriceResponse) -> PriceAnswer:
        return cls(price, price.model_dump_json().encode())

    def response(self) -> Response:
        return Response(self.body, media_type="application/json")


@dataclass(frozen=True)
class _Entry:
    answer: PriceAnswer  # as the process's cache serves it: cached, cache="process"
    expires: float


@dataclass(frozen=True)
class _Failure:
    """A refusal, handed to every waiter of a fetch as a fresh :class:`ApiError`."""

    status: int
    code: str
    message: str
    headers: dict[str, str]

    def error(self) -> ApiError:
        return ApiError(self.status, self.code, self.message, self.headers)


class PriceDesk:
    """Serves latest prices (see the module).

    Args:
        services: The provider clients and the universe.
        bulkhead: Where fetches that block run (the data routes' threads).
        fetch: Fetches a price through the provider runtime in a worker thread:
            ``fetch(provider, symbol)`` as :func:`~fks_pipelines.api.data.latest_price` takes
            them; raises :class:`ApiError`.
        ttl_s: How long a price fetched upstream is served from the process's cache while the
            shared cache is down.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        services: Services,
        bulkhead: Bulkhead,
        fetch: Callable[[str | None, str], PriceResponse],
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = services
        self.bulkhead = bulkhead
        self.ttl_s = ttl_s
        self._fetch = fetch
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._flights: dict[Key, asyncio.Future[PriceAnswer | _Failure]] = {}
        self._shared_down = False
        self.shared_kind = _shared_kind(services)
        """The provider runtime's cache: in Redis, on disk (embedded mode), or none (fixed
        when the runtime is built)."""
        self._redis: redis.asyncio.Redis | None = None
        url = services.settings.redis_url
        if self.shared_kind == "redis" and url:
            self._redis = redis.asyncio.Redis.from_url(
                url,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )

    def tier(self) -> CacheTier:
        """Which cache serves prices now: the shared one, or this process's while it is down."""
        kind = self.shared_kind
        return "process" if kind is None or self._shared_down else kind

    def note_shared(self, reachable: bool) -> None:
        """What a probe of Redis found (``/health``): only a Redis-backed cache can go down."""
        if self.shared_kind == "redis":
            self._mark(down=not reachable)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def get(self, key: Key) -> PriceAnswer:
        """The price of ``key``: from the process's cache while the shared one is down, else
        fetched (coalesced with the fetch of the same price under way, if any).

        Raises:
            ApiError: The fetch failed (every waiter gets the same answer).
            Saturated: No data thread was free in time.
        """
        if self._shared_down or self.shared_kind is None:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._clock():
                return entry.answer
        flight = self._flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fly(key))
            self._flights[key] = flight
            flight.add_done_callback(lambda _: self._flights.pop(key, None))
        # A waiter that goes away (a client disconnects) must not cancel the others' fetch.
        outcome = await asyncio.shield(flight)
        if isinstance(outcome, _Failure):
            raise outcome.error()
        return outcome

    async def _fly(self, key: Key) -> PriceAnswer | _Failure:
        if self._redis is not None:
            hit = await self._read_shared(key)
            if hit is not None:
                return PriceAnswer.of(hit)
        try:
            price = await self.bulkhead.run(self._load, key)
        except ApiError as exc:
            return _Failure(exc.status, exc.code, exc.message, exc.headers)
        # Saturated and anything unexpected propagate to every waiter.
        if not price.cached:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            kept = price.model_copy(update={"cached": True, "cache": "process"})
            self._entries[key] = _Entry(PriceAnswer.of(kept), self._clock() + self.ttl_s)
        return PriceAnswer.of(price)

    async def _read_shared(self, key: Key) -> PriceResponse | None:
        """The price in the provider cache, read on the event loop; None on a miss (or an
        entry the runtime should deal with)."""
        assert self._redis is not None
        route = self._route(key)
        if route is None:
            return None
        provider, ticker, instrument = route
        try:
            data = await self._redis.get(cache_key(provider, "price", {"symbol": ticker}))
        except (redis.RedisError, OSError):
            self._mark(down=True)
            return None
        self._mark(down=False)
        if data is None:
            return None
        try:
            quote = QUOTES.decode(data)
        except CorruptEntry:
            return None  # the runtime drops and refetches it
        self.services.clients[provider].stats.cache_hits += 1
        return PriceResponse(
            symbol=instrument,
            provider=provider,
            provider_symbol=ticker,
            price=quote.price,
            ts=quote.ts.to_pydatetime(warn=False),
            cached=True,
            cache="redis",
        )

    def _route(self, key: Key) -> tuple[str, str, str] | None:
        """(provider, ticker, instrument) whose cache the runtime would read first: the
        provider asked, or the first configured one in the failover's priority order."""
        provider, symbol = key
        universe = self.services.universe
        if provider is not None:
            if provider not in self.services.clients:
                return None  # not configured: the runtime path gives the error
            return provider, symbol, universe.providers[provider].symbols[symbol]
        for candidate, ticker in universe.routes(symbol):
            if candidate in self.services.clients:
                return candidate, ticker, symbol
        return None

    def _load(self, key: Key) -> PriceResponse:
        """In a worker thread: the price through the provider runtime, with the cache that
        served it, if any."""
        provider, symbol = key
        price = self._fetch(provider, symbol)
        if not price.cached:
            return price
        client = self.services.clients.get(price.provider)
        cache = client.http.runtime.cache if client is not None else None
        kind: CacheTier = (
            "redis" if cache is not None and isinstance(cache.backend, RedisBackend) else "disk"
        )
        return price.model_copy(update={"cache": kind})

    def _mark(self, down: bool) -> None:
        if down and not self._shared_down:
            log.warning("shared price cache unreachable: prices served from the process's cache")
        elif not down and self._shared_down:
            log.warning("shared price cache reachable again: prices served from it")
        self._shared_down = down


async def get_prices(request: Request) -> PriceDesk:
    """FastAPI dependency: the price desk the app's lifespan built."""
    return request.app.state.prices


def _shared_kind(services: Services) -> Literal["redis", "disk"] | None:
    for client in services.clients.values():
        cache = client.http.runtime.cache
        if cache is not None and isinstance(cache.backend, RedisBackend):
            return "redis"
        if cache is not None and isinstance(cache.backend, DiskBackend):
            return "disk"
    return None
