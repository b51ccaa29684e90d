"""What the HTTP service runs on, built once per process from the settings (the app's lifespan).

The same core as the Dagster code location: one long-lived client per provider on the provider
runtime (cache, limiter, breaker shared through Redis with every run and backfill), the failover
manager in the universe's priority order, and the warehouse. A client is built once because
building one costs an HTTP connection pool and a TLS context (about 20 ms): far more than a
cached answer.

The data routes read the warehouse through an engine of their own whose statements may take at
most ``FKS_API_WAREHOUSE_TIMEOUT_S`` on PostgreSQL (a locked table fails the read, and the bars
come from the providers): a stalled warehouse cannot hold the data routes' threads.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import pandas as pd
import redis
import sqlalchemy as sa
from fastapi import Request

from fks_pipelines.api.bulkheads import Bulkheads
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Universe
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.cache import RedisBackend
from fks_pipelines.providers.clients import build_client
from fks_pipelines.providers.errors import ProviderError
from fks_pipelines.providers.failover import ClientFactory, FailoverManager
from fks_pipelines.providers.state import WarnOnce
from fks_pipelines.settings import Settings
from fks_pipelines.warehouse.store import Warehouse, WarehouseError
from fks_pipelines.webhooks.intake import WebhookIntake
from fks_pipelines.webhooks.stream import EventStream

log = logging.getLogger(__name__)

WAREHOUSE_ERRORS = (sa.exc.SQLAlchemyError, WarehouseError, OSError)
_REDIS_PROBE_TIMEOUT_S = 1.0


@dataclass
class Services:
    """The service's dependencies.

    Attributes:
        settings: The environment contract the services were built from.
        universe: Instruments, provider tickers and the failover priority.
        clients: One long-lived client per provider of the universe that could be built.
        unconfigured: Providers that could not be built (a key not set), with the reason.
        failover: Serves canonical instruments in the universe's priority order.
        bulkheads: The worker threads of each kind of blocking work (data routes, webhook
            intake, health), each bounded on its own.
    """

    settings: Settings
    universe: Universe
    clients: dict[str, ProviderClient]
    unconfigured: dict[str, ProviderError]
    failover: FailoverManager = field(init=False)
    bulkheads: Bulkheads = field(init=False)
    webhook_intake: WebhookIntake | None = field(default=None, repr=False)
    _redis: redis.Redis | None = field(default=None, repr=False)
    _reader: Warehouse | None = field(default=None, repr=False)
    _reader_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _warn: WarnOnce = field(default_factory=lambda: WarnOnce(log), repr=False)

    def __post_init__(self) -> None:
        self.failover = FailoverManager(
            self.universe,
            {provider: self._lender(provider) for provider in self.universe.providers},
            self.universe.priority,
        )
        self.bulkheads = Bulkheads.from_settings(self.settings)

    @classmethod
    def start(cls, settings: Settings) -> Services:
        """Load the universe, build the provider clients and connect the warehouse.

        Provider requests wait at most ``FKS_API_LIMITER_WAIT_S`` for a rate-limit slot: a
        caller is told to come back (503 with Retry-After) rather than held for minutes.

        Raises:
            UniverseError: The universe file is missing or invalid.
        """
        config = replace(settings.runtime_config(), limiter_max_wait_s=settings.api_limiter_wait_s)
        clients: dict[str, ProviderClient] = {}
        unconfigured: dict[str, ProviderError] = {}
        for provider in settings.universe.providers:
            try:
                clients[provider] = build_client(
                    provider, settings.provider_options(provider), config
                )
            except ProviderError as exc:
                log.info("%s is not served: %s", provider, exc)
                unconfigured[provider] = exc
        services = cls(settings, settings.universe, clients, unconfigured)
        services.webhook_intake = intake_from_settings(settings)
        if settings.redis_url:
            services._redis = redis.Redis.from_url(
                settings.redis_url,
                socket_connect_timeout=_REDIS_PROBE_TIMEOUT_S,
                socket_timeout=_REDIS_PROBE_TIMEOUT_S,
            )
        try:
            services.warehouse()
        except WAREHOUSE_ERRORS as exc:
            services.warehouse_unavailable(exc)
        return services

    def client(self, provider: str) -> ProviderClient:
        """The long-lived client of ``provider``.

        Raises:
            ProviderError: The provider could not be built (e.g. ``MissingCredentials``).
        """
        error = self.unconfigured.get(provider)
        if error is not None:
            raise error.with_traceback(None)
        return self.clients[provider]

    def _lender(self, provider: str) -> ClientFactory:
        def lend() -> AbstractContextManager[ProviderClient]:
            return nullcontext(self.client(provider))  # long-lived: the failover leaves it open

        return lend

    def warehouse(self) -> Warehouse:
        """The warehouse (connected and its tables created on first success).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: The database does not answer.
        """
        return Warehouse.from_url(self.settings.resolved_warehouse_url)

    def warehouse_unavailable(self, exc: BaseException) -> None:
        """Log, once, that the warehouse failed; the service goes on from the providers."""
        # The driver's first line says why (refused, unknown host); SQLAlchemy adds the SQL.
        text = str(getattr(exc, "orig", None) or exc)
        reason = text.splitlines()[0] if text else ""
        self._warn(
            "warehouse",
            "warehouse unavailable (%s: %s): serving from the providers",
            type(exc).__name__,
            reason,
        )

    def stored_ohlcv(
        self,
        provider: str,
        interval: Interval,
        symbol: str,
        start: pd.Timestamp,
        end: pd.Timestamp,
    ) -> pd.DataFrame | None:
        """Stored bars of one provider ticker in ``[start, end)``; None when the warehouse
        cannot be read."""
        try:
            return self.reader().read_ohlcv(provider, interval.name, [symbol], start, end)
        except WAREHOUSE_ERRORS as exc:
            self.warehouse_unavailable(exc)
            return None

    def reader(self) -> Warehouse:
        """The warehouse for the data routes' reads: on PostgreSQL an engine of its own whose
        statements time out after ``FKS_API_WAREHOUSE_TIMEOUT_S``.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: The database does not answer.
        """
        warehouse = self.warehouse()  # the tables exist
        if warehouse.dialect != "postgresql":
            return warehouse  # SQLite's readers are never blocked by its writer (WAL)
        with self._reader_lock:
            if self._reader is None:
                engine = sa.create_engine(warehouse.engine.url, pool_pre_ping=True)
                limit = max(1, round(self.settings.api_warehouse_timeout_s * 1000))
                self._reader = Warehouse(engine, statement_timeout_ms=limit)
            return self._reader

    def probe_warehouse(self) -> None:
        """One round trip to the warehouse; raises what the database raised."""
        with self.warehouse().engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    @property
    def redis_configured(self) -> bool:
        return self._redis is not None

    def probe_redis(self) -> bool:
        """Whether Redis answers a PING (raises ``redis.RedisError`` when it does not); False
        when it answers but the provider runtime started without it."""
        if self._redis is None:
            raise RuntimeError("REDIS_URL is not set")
        self._redis.ping()
        return all(
            client.http.runtime.cache is not None
            and isinstance(client.http.runtime.cache.backend, RedisBackend)
            for client in self.clients.values()
        )

    def close(self) -> None:
        if self.webhook_intake is not None:
            self.webhook_intake.close()
        for client in self.clients.values():
            client.close()
        if self._redis is not None:
            self._redis.close()
        if self._reader is not None:
            self._reader.engine.dispose()


def intake_from_settings(settings: Settings) -> WebhookIntake:
    """The webhook intake the service runs: secret, warehouse and Redis stream from ``settings``
    (nothing is connected until the first event)."""
    stream = (
        EventStream.from_url(settings.redis_url, settings.webhook_stream_maxlen)
        if settings.redis_url
        else None
    )
    return WebhookIntake(
        settings.webhook_secret,
        settings.resolved_warehouse_url,
        stream,
        store_timeout_s=settings.webhook_store_timeout_s,
    )


async def get_services(request: Request) -> Services:
    """FastAPI dependency: the services the app's lifespan built (``async``: a plain lookup,
    which FastAPI would otherwise send through its thread pool)."""
    return request.app.state.services
