"""Failover between providers for one canonical instrument.

Providers are tried in a configured priority order among those that list the instrument in the
universe. A provider is skipped when its circuit is open, when it cannot serve the request (no
key, an interval it does not offer) or when it fails; a window it answers with no bars counts as
incomplete and the next provider is tried. Every attempt is reported, so callers can say which
provider served what and why the others did not.

The circuit is the provider runtime's own: its breaker refuses a request that would go out
(``CircuitOpen``, before anything is sent), so what the provider cache still holds is served even
while the circuit is open, and a cache hit costs no read of the breaker's state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.quote import Quote
from fks_pipelines.market.universe import Universe
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.errors import CircuitOpen, ProviderError

T = TypeVar("T")
Outcome = Literal["served", "circuit_open", "unavailable", "failed", "incomplete"]
ClientFactory = Callable[[], AbstractContextManager[ProviderClient]]
"""Gives a provider's client for one use: a fresh client (closed after the use) or a long-lived
one in ``contextlib.nullcontext`` (left open); raises :class:`ProviderError` when it cannot."""


@dataclass(frozen=True)
class Attempt:
    """One provider's turn. ``error`` is what its request raised, when it was asked and failed
    (not when it could not be asked: no client, e.g. a missing key)."""

    provider: str
    symbol: str
    outcome: Outcome
    detail: str = ""
    error: Exception | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Served(Generic[T]):
    """What a provider served, and every attempt made to get it."""

    value: T
    provider: str
    symbol: str
    attempts: tuple[Attempt, ...]


@dataclass
class NoProviderServed(Exception):
    """Every provider of the instrument was skipped or failed."""

    instrument: str
    attempts: list[Attempt] = field(default_factory=list)

    def __str__(self) -> str:
        tried = "; ".join(f"{a.provider}: {a.outcome} {a.detail}".strip() for a in self.attempts)
        return f"no provider served {self.instrument} ({tried or 'no provider lists it'})"


class FailoverManager:
    """Serves canonical instruments from the first provider in ``priority`` that can.

    Args:
        universe: Which provider tickers map to which canonical instrument.
        clients: A :data:`ClientFactory` per provider id; called when the provider's turn comes
            (a provider whose key is missing then fails with its own clear error, and is
            skipped).
        priority: Provider ids, most preferred first; providers not listed are not used.
    """

    def __init__(
        self,
        universe: Universe,
        clients: Mapping[str, ClientFactory],
        priority: Sequence[str],
    ) -> None:
        self.universe = universe
        self.clients = clients
        self.priority = tuple(priority)

    def routes(self, instrument: str) -> list[tuple[str, str]]:
        """``(provider, provider ticker)`` pairs for ``instrument``, in priority order."""
        routes = []
        for provider in self.priority:
            spec = self.universe.providers.get(provider)
            if spec is None or provider not in self.clients:
                continue
            routes += [
                (provider, s) for s, canonical in spec.symbols.items() if canonical == instrument
            ]
        return routes

    def latest_price(self, instrument: str) -> Served[Quote]:
        return self.serve(instrument, lambda client, symbol: client.latest_price(symbol))

    def fetch_ohlcv(
        self, instrument: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> Served[pd.DataFrame]:
        """The first non-empty window of closed bars among the instrument's providers."""
        return self.serve(
            instrument,
            lambda client, symbol: client.fetch_ohlcv(symbol, interval, start, end),
            lambda frame: not frame.empty,
        )

    def serve(
        self,
        instrument: str,
        fetch: Callable[[ProviderClient, str], T],
        complete: Callable[[T], bool] | None = None,
    ) -> Served[T]:
        """``fetch(client, provider ticker)`` from the first provider that serves ``instrument``.

        Args:
            instrument: A canonical instrument.
            fetch: The operation, e.g. ``lambda client, symbol: client.latest_price(symbol)``.
            complete: Whether a value is complete; an incomplete one is passed over.

        Raises:
            NoProviderServed: Every provider was skipped, failed or incomplete; its attempts
                say why.
        """
        attempts: list[Attempt] = []
        for provider, symbol in self.routes(instrument):
            try:
                opened = self.clients[provider]()
            except ProviderError as exc:
                attempts.append(Attempt(provider, symbol, "unavailable", exc.reason))
                continue
            with opened as client:
                try:
                    value = fetch(client, symbol)
                except ValueError as exc:  # an interval this provider does not offer
                    attempts.append(Attempt(provider, symbol, "unavailable", str(exc), exc))
                    continue
                except CircuitOpen as exc:
                    attempts.append(Attempt(provider, symbol, "circuit_open", exc.reason, exc))
                    continue
                except ProviderError as exc:
                    attempts.append(Attempt(provider, symbol, "failed", str(exc), exc))
                    continue
            if complete is not None and not complete(value):
                attempts.append(Attempt(provider, symbol, "incomplete", "no bars"))
                continue
            attempts.append(Attempt(provider, symbol, "served"))
            return Served(value, provider, symbol, tuple(attempts))
        raise NoProviderServed(instrument, attempts)
