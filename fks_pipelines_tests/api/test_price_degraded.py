"""The price route with Redis down: coalesced, served from the process's own cache at one
upstream call per price and TTL, and back on Redis once it answers again.

The service runs on a real socket (uvicorn, ``fks-api``'s protocol) against a ``redis-server``
of the test's own, which the tests stop and start again (never the shared one at
``REDIS_URL``). Rates and latencies are compared with Redis up in the same test.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from fks_pipelines.api.app import create_app
from fks_pipelines.settings import Settings
from fks_pipelines_tests.api.support import Fakes, uvicorn_server
from fks_pipelines_tests.services import LocalRedis

PRICE = "/api/v1/data/price"
TICKER = "/fapi/v1/ticker/price"
TTL_S = 1.0
RPS = 5  # Binance's limit in these tests: what every request paid with Redis down before
CLIENTS = 16
SECONDS = 3.0


@pytest.fixture
def settings(fakes: Fakes, tmp_path: Path, local_redis: LocalRedis) -> Settings:
    return fakes.settings(
        tmp_path,
        REDIS_URL=local_redis.url,
        FKS_BINANCE_RPS=RPS,
        FKS_CACHE_TTL_PRICE_S=TTL_S,
        FKS_HTTP_READ_TIMEOUT_S=30,
    )


@dataclass
class Load:
    statuses: list[int] = field(default_factory=list)
    caches: list[str | None] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.statuses) / self.seconds


def hammer(url: str, symbol: str = "BTC-USD") -> Load:
    """:data:`CLIENTS` clients asking for the price as fast as answered for :data:`SECONDS`."""
    load = Load()
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def client() -> None:
        with httpx.Client(base_url=url, timeout=60) as http:
            while (started := time.monotonic()) < stop:
                response = http.get(PRICE, params={"symbol": symbol})
                elapsed = time.monotonic() - started
                with lock:
                    load.statuses.append(response.status_code)
                    load.latencies.append(elapsed)
                    if response.status_code == 200:
                        load.caches.append(response.json()["cache"])

    began = time.monotonic()
    with ThreadPoolExecutor(CLIENTS) as pool:
        for done in [pool.submit(client) for _ in range(CLIENTS)]:
            done.result()
    load.seconds = time.monotonic() - began
    return load


def wait_for_cache(url: str, cache: str) -> None:
    """Until the answers say ``cache`` (a few TTLs at most)."""
    deadline = time.monotonic() + 60
    while httpx.get(f"{url}{PRICE}", params={"symbol": "BTC-USD"}).json()["cache"] != cache:
        assert time.monotonic() < deadline, f"prices never came from {cache}"
        time.sleep(TTL_S / 4)


def test_with_redis_down_prices_come_from_the_process_at_one_upstream_call_per_ttl(
    settings: Settings, fakes: Fakes, local_redis: LocalRedis
) -> None:
    """The issue: with Redis down every request went upstream at the limiter's pace (12
    answers/s, 100 upstream calls for 122 answers, client timeouts)."""
    with uvicorn_server(create_app(settings), settings) as url:
        httpx.get(f"{url}{PRICE}", params={"symbol": "BTC-USD"})
        up = hammer(url)
        local_redis.stop_process()
        wait_for_cache(url, "process")
        calls = len(fakes.binance.requests_to(TICKER))
        down = hammer(url)
        upstream = len(fakes.binance.requests_to(TICKER)) - calls
        health = httpx.get(f"{url}/health").json()
        local_redis.launch()
        wait_for_cache(url, "redis")
        recovered = httpx.get(f"{url}/health").json()

    assert set(down.statuses) == {200}
    assert down.caches.count("process") > len(down.caches) / 2  # the rest shared a fetch
    # One upstream call per TTL at most (the ideal), where every answer was one before.
    assert upstream <= SECONDS / TTL_S + 2
    # Throughput and latency within a small factor of Redis up.
    assert down.rate > up.rate / 3
    assert statistics.median(down.latencies) < 3 * statistics.median(up.latencies)
    assert set(up.caches) <= {"redis", None}
    assert health["price_cache"]["serving"] == "process"
    assert "unreachable" in health["price_cache"]["detail"]
    assert health["redis"]["state"] == "down"
    assert recovered["price_cache"] == {"serving": "redis", "detail": None}


def test_identical_requests_share_one_upstream_call_with_redis_down(
    settings: Settings, fakes: Fakes, local_redis: LocalRedis
) -> None:
    """No request waits behind a queue of identical ones: the 20 share one upstream call (at the
    limiter's 5/s, 20 calls in a row would take 4 s)."""
    fakes.binance.latency_s = 0.3
    with uvicorn_server(create_app(settings), settings) as url:
        local_redis.stop_process()
        alone = httpx.get(f"{url}{PRICE}", params={"symbol": "ETH-USD"}, timeout=60)
        calls = len(fakes.binance.requests_to(TICKER))
        with ThreadPoolExecutor(20) as pool:
            answers = list(
                pool.map(
                    lambda _: httpx.get(f"{url}{PRICE}", params={"symbol": "SOL-USD"}, timeout=60),
                    range(20),
                )
            )

    assert alone.status_code == 200
    assert [response.status_code for response in answers] == [200] * 20
    assert len(fakes.binance.requests_to(TICKER)) - calls == 1
    assert {response.json()["price"] for response in answers} == {answers[0].json()["price"]}


def test_identical_requests_share_one_fetch_with_redis_up(settings: Settings, fakes: Fakes) -> None:
    fakes.binance.latency_s = 0.3
    with uvicorn_server(create_app(settings), settings) as url, ThreadPoolExecutor(20) as pool:
        answers = list(
            pool.map(
                lambda _: httpx.get(f"{url}{PRICE}", params={"symbol": "SOL-USD"}, timeout=60),
                range(20),
            )
        )
        again = httpx.get(f"{url}{PRICE}", params={"symbol": "SOL-USD"})

    assert [answer.status_code for answer in answers] == [200] * 20
    assert len(fakes.binance.requests_to(TICKER)) == 1
    assert (again.json()["cached"], again.json()["cache"]) == (True, "redis")
