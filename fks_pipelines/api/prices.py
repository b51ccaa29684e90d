"""The latest prices of ``GET /api/v1/data/price``: from the stream while its price is fresh, else
coalesced, read from the shared cache on the event loop, and kept in process while the shared
cache cannot be reached.

**The stream.** A price that resolves to Binance (``provider=binance``, or a canonical instrument
whose first configured provider in the failover's priority is Binance) is answered from the live
price fks-stream keeps in Redis (:mod:`fks_pipelines.realtime.prices`) while its event time is
within ``FKS_STREAM_PRICE_MAX_AGE_S`` of now: one asynchronous ``HMGET`` on the event loop for
the requests asking at the same time (coalesced like fetches, but never behind one), no worker
thread, no upstream request.
A missing, stale or undecodable entry, or Redis down, falls through to the REST path below; the
answer's ``source`` says which (``stream`` or ``rest``), ``age_s`` how old its price is.

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

Answers say where the price came from: ``source``, ``cached`` (no upstream request for this
answer) and ``cache`` (``redis``, ``disk``, ``process``, or null for an upstream answer; ``redis``
for a stream answer, read from there); ``/health`` shows which cache serves now
(:meth:`PriceDesk.tier`) and what the latest Binance price came from (:attr:`PriceDesk.live`).
Answers are counted by source in ``fks_price_answers_total``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import redis
import redis.asyncio
from fastapi import Request, Response
from redis.backoff import NoBackoff
from redis.retry import Retry

from fks_pipelines.api.bulkheads import Bulkhead
from fks_pipelines.api.errors import ApiError
from fks_pipelines.api.metrics import PRICE_ANSWERS
from fks_pipelines.api.schemas import LivePricesHealth, PriceResponse
from fks_pipelines.api.services import Services
from fks_pipelines.providers.cache import QUOTES, DiskBackend, RedisBackend, cache_key
from fks_pipelines.providers.codec import CorruptEntry
from fks_pipelines.realtime.prices import FIELDS, PROVIDER, decode, live_key

log = logging.getLogger(__name__)

CacheTier = Literal["redis", "disk", "process"]
Key = tuple[str | None, str]
"""A price: (the provider asked, and its ticker) or (None, the canonical instrument)."""
MAX_ENTRIES = 10_000
"""Bound of the process's cache (the universe's prices number in the tens)."""
REDIS_TIMEOUT_S = 0.5
"""Longest the event loop's ``GET`` (or ``HMGET``) waits for Redis (connect, then answer): a
Redis that does not answer costs a price at most this, once per TTL while it is down."""
_STREAM_ANSWERS = PRICE_ANSWERS.labels("stream")
_REST_ANSWERS = PRICE_ANSWERS.labels("rest")
_STREAMING = LivePricesHealth(state="stream")


def seconds_since(ts: datetime) -> float:
    """Seconds from ``ts`` (aware) to now, 0 when ``ts`` is ahead of this machine's clock."""
    return max(0.0, time.time() - ts.timestamp())


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
    price: PriceResponse  # as the process's cache serves it: cached, cache="process"
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
        self._live_flights: dict[Key, asyncio.Future[PriceAnswer | None]] = {}
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
        self.max_age_s = services.settings.stream_price_max_age_s
        self.live = (
            LivePricesHealth(state="unused")
            if self._redis is not None
            else LivePricesHealth(
                state="off", detail="no Redis when the service started (REDIS_URL unset or down)"
            )
        )
        """What the latest Binance price came from, and why not the stream (``/health``)."""
        self._undecodable: set[str] = set()  # live entries already warned about

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
        """The price of ``key``: the stream's while fresh, else through the REST path (see
        :meth:`_rest`).

        Raises:
            ApiError: The fetch failed (every waiter gets the same answer).
            Saturated: No data thread was free in time.
        """
        streamed = await self._live(key)
        if streamed is not None:
            _STREAM_ANSWERS.inc()
            return streamed
        answer = await self._rest(key)
        _REST_ANSWERS.inc()
        return answer

    async def _rest(self, key: Key) -> PriceAnswer:
        """From the process's cache while the shared one is down, else fetched (coalesced with
        the fetch of the same price under way, if any)."""
        if self._shared_down or self.shared_kind is None:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > self._clock():
                # Rendered per answer: its age grows while it is kept.
                aged = entry.price.model_copy(update={"age_s": seconds_since(entry.price.ts)})
                return PriceAnswer.of(aged)
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
            self._entries[key] = _Entry(kept, self._clock() + self.ttl_s)
        return PriceAnswer.of(price)

    async def _live(self, key: Key) -> PriceAnswer | None:
        """The stream's answer for ``key`` if it has a fresh one: read once (and rendered once)
        for all the requests asking at the same time, as fetches are coalesced; a read per
        request halved the throughput of cached prices (bench/api_price). Never behind a REST
        fetch: the two are separate flights."""
        if self._redis is None:
            return None
        flight = self._live_flights.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._fly_live(key))
            self._live_flights[key] = flight
            flight.add_done_callback(lambda _: self._live_flights.pop(key, None))
        return await asyncio.shield(flight)

    async def _fly_live(self, key: Key) -> PriceAnswer | None:
        price = await self._read_live(key)
        return PriceAnswer.of(price) if price is not None else None

    async def _read_live(self, key: Key) -> PriceResponse | None:
        """The live price of a ``key`` that resolves to Binance while it is fresh, read on the
        event loop; None for another provider or when the REST path must answer."""
        if self._redis is None:
            return None
        route = self._route(key)
        if route is None or route[0] != PROVIDER:
            return None
        _, ticker, instrument = route
        if self._shared_down:
            # Not tried: each request would wait for the timeout; the REST path's GET finds
            # out when Redis is back.
            self._fall_back("Redis is unreachable")
            return None
        try:
            stored = await self._redis.hmget(live_key(ticker), FIELDS)
            live = decode(ticker, stored)
        except (redis.ResponseError, ValueError):  # not a hash, or not numbers
            self._undecodable_entry(ticker)
            return None
        except (redis.RedisError, OSError):
            self._mark(down=True)
            self._fall_back("Redis is unreachable")
            return None
        if live is None:
            self._fall_back(f"no live price of {ticker} (is fks-stream running?)")
            return None
        if not math.isfinite(live.price):
            self._undecodable_entry(ticker)
            return None
        lag_s = time.time() - live.event_time.timestamp()
        # A price stamped that far ahead of this clock is no more trusted than a stale one.
        if abs(lag_s) > self.max_age_s:
            self._fall_back(
                f"the live price of {ticker} is {lag_s:.1f} s old "
                f"(FKS_STREAM_PRICE_MAX_AGE_S: {self.max_age_s:g})"
            )
            return None
        self.live = _STREAMING
        return PriceResponse(
            symbol=instrument,
            provider=PROVIDER,
            provider_symbol=ticker,
            price=live.price,
            ts=live.event_time.to_pydatetime(),
            source="stream",
            age_s=max(0.0, lag_s),
            cached=True,
            cache="redis",
        )

    def _undecodable_entry(self, ticker: str) -> None:
        if ticker not in self._undecodable:
            self._undecodable.add(ticker)
            log.warning("live price of %s in Redis does not decode: answering from REST", ticker)
        self._fall_back(f"the live price of {ticker} does not decode")

    def _fall_back(self, why: str) -> None:
        self.live = LivePricesHealth(state="rest", detail=why)

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
        ts = quote.ts.to_pydatetime(warn=False)
        return PriceResponse(
            symbol=instrument,
            provider=provider,
            provider_symbol=ticker,
            price=quote.price,
            ts=ts,
            source="rest",
            age_s=seconds_since(ts),
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
