"""Prometheus metrics of the HTTP service, in prometheus-client's default registry.

- ``fks_http_requests_total{route, method, status}`` and
  ``fks_http_request_duration_seconds{route, method}``: every answer, by route template
  (``/api/v1/data/price``, not the query string; ``unmatched`` for unknown paths);
- ``fks_provider_*{provider}``: the provider runtime's own accounting of the service's clients
  (:class:`~fks_pipelines.providers.http.RequestStats`), read when scraped: upstream requests,
  cache hits and misses, retries, seconds waited in the rate limiter, upstream errors; and
  ``fks_provider_circuit_open{provider}`` (1 while open or half-open);
- ``fks_price_answers_total{source}``: prices ``/api/v1/data/price`` answered, by source:
  ``stream`` (fks-stream's live Binance price) or ``rest`` (the provider's REST API, through the
  caches).

Other parts of the service (the webhook intake) register their metrics in the same registry.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fks_pipelines.providers.base import ProviderClient

HTTP_REQUESTS = Counter(
    "fks_http_requests",
    "HTTP requests answered by the service, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_DURATION = Histogram(
    "fks_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template and method.",
    ["route", "method"],
)
PRICE_ANSWERS = Counter(
    "fks_price_answers",
    "Latest prices answered, by source: stream (fks-stream's live price) or rest (the "
    "provider's REST API, through the caches).",
    ["source"],
)

_STATS: tuple[tuple[str, str, str], ...] = (
    ("requests", "fks_provider_requests", "Requests sent upstream."),
    ("cache_hits", "fks_provider_cache_hits", "Answers served from the provider cache."),
    ("cache_misses", "fks_provider_cache_misses", "Lookups the provider cache could not serve."),
    ("retries", "fks_provider_retries", "Upstream requests retried."),
    (
        "limiter_wait_s",
        "fks_provider_limiter_wait_seconds",
        "Seconds requests waited for a rate-limit slot.",
    ),
    ("errors", "fks_provider_upstream_errors", "Upstream errors (error answers, timeouts)."),
)


class ProviderStatsCollector(Collector):
    """Reads the accounting of the provider clients of every running app when scraped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[int, Mapping[str, ProviderClient]] = {}

    def attach(self, clients: Mapping[str, ProviderClient]) -> None:
        with self._lock:
            self._clients[id(clients)] = clients

    def detach(self, clients: Mapping[str, ProviderClient]) -> None:
        with self._lock:
            self._clients.pop(id(clients), None)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            apps = list(self._clients.values())
        families: dict[str, Any] = {
            field: CounterMetricFamily(name, text, labels=["provider"])
            for field, name, text in _STATS
        }
        circuit = GaugeMetricFamily(
            "fks_provider_circuit_open",
            "1 while the provider's circuit is open or half-open, as every process sees it.",
            labels=["provider"],
        )
        totals: dict[str, dict[str, float]] = {}
        states: dict[str, int] = {}
        for clients in apps:
            for provider, client in clients.items():
                stats = client.stats
                sums = totals.setdefault(provider, dict.fromkeys(families, 0.0))
                for field in families:
                    sums[field] += getattr(stats, field)
                is_open = int(client.circuit.state != "closed")
                states[provider] = max(states.get(provider, 0), is_open)
        for provider, sums in sorted(totals.items()):
            for field, family in families.items():
                family.add_metric([provider], sums[field])
            circuit.add_metric([provider], states[provider])
        yield from families.values()
        yield circuit


PROVIDER_STATS = ProviderStatsCollector()
REGISTRY.register(PROVIDER_STATS)


class MetricsMiddleware:
    """Counts and times every HTTP answer (pure ASGI: no per-request task or body buffering)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_and_note(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The router puts the matched route in the scope; its template keeps the label set
            # small whatever the clients send.
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)
