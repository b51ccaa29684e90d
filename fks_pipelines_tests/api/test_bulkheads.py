"""Bulkheads: the data routes, the webhook intake and /health each have worker threads of their
own, bounded; a stalled warehouse slows the intake alone.

The regression tests run the service on a real socket (uvicorn, ``fks-api``'s protocol) with the
warehouse in the real PostgreSQL and the cache in the real Redis. Latencies are compared with an
unloaded run in the same test, never with a constant.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import redis
import sqlalchemy as sa
from fastapi import FastAPI

from fks_pipelines.api.app import create_app
from fks_pipelines.api.bulkheads import Bulkhead, Saturated
from fks_pipelines.settings import Settings
from fks_pipelines_tests.api.support import Fakes, services_of, uvicorn_server
from fks_pipelines_tests.webhooks.samples import closed_kline, headers

SECRET = "whsec-bulkhead-tests-77aa01"
PRICE = "/api/v1/data/price"
JULY_9 = 1720483200000
HOUR = 3_600_000
WEBHOOKS = 60  # as in the issue


# The Bulkhead itself.


@pytest.mark.anyio
async def test_a_bulkhead_runs_at_most_its_threads_at_once() -> None:
    bulkhead = Bulkhead("data", threads=2, wait_s=30)
    running, most = 0, 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    async with anyio.create_task_group() as tasks:
        for _ in range(6):
            tasks.start_soon(bulkhead.run, work)

    assert most == 2
    assert (bulkhead.busy, bulkhead.waiting) == (0, 0)


@contextmanager
def held(bulkhead: Bulkhead) -> Iterator[threading.Event]:
    """While the block runs, one call holds a thread of ``bulkhead`` (set the event to end it
    early)."""
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        started = threading.Event()

        def hold() -> None:
            started.set()
            release.wait(60)

        done = pool.submit(anyio.run, bulkhead.run, hold)
        started.wait(60)
        try:
            yield release
        finally:
            release.set()
            done.result(60)


@pytest.mark.anyio
async def test_a_call_waits_for_a_thread_at_most_wait_s() -> None:
    bulkhead = Bulkhead("data", threads=1, wait_s=0.2)
    with held(bulkhead) as release:
        started = time.monotonic()
        with pytest.raises(Saturated) as refused:
            await bulkhead.run(time.sleep, 0)
        waited = time.monotonic() - started
        assert not release.is_set()  # refused while the thread was still taken

    assert waited >= bulkhead.wait_s
    assert refused.value.retry_after == "1"
    assert "data" in str(refused.value)


@pytest.mark.anyio
async def test_beyond_max_waiting_a_call_is_refused_at_once() -> None:
    bulkhead = Bulkhead("intake", threads=1, wait_s=30, max_waiting=1)
    with held(bulkhead):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(bulkhead.run, time.sleep, 0)  # waits for the thread
            while bulkhead.waiting < 1:
                await anyio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(Saturated):
                await bulkhead.run(time.sleep, 0)
            refused_after = time.monotonic() - started
            tasks.cancel_scope.cancel()

    assert refused_after < bulkhead.wait_s / 10  # no waiting at all


@pytest.mark.anyio
async def test_a_call_given_up_frees_its_slot() -> None:
    bulkhead = Bulkhead("ops", threads=1, wait_s=30)
    release = threading.Event()

    with pytest.raises(TimeoutError):
        await bulkhead.run(release.wait, 60, timeout_s=0.1)
    assert bulkhead.busy == 0
    assert await bulkhead.run(lambda: "next") == "next"  # not held by the abandoned thread
    release.set()


# The service: a stalled warehouse and busy data threads.


@contextmanager
def table_locked(url: str, table: str = "webhook_events") -> Iterator[None]:
    """``LOCK TABLE <table>`` from another connection while the block runs."""
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            try:
                yield
            finally:
                conn.rollback()
    finally:
        engine.dispose()


def kline(n: int) -> bytes:
    return json.dumps(closed_kline("BTCUSDT", "1h", JULY_9 + n * HOUR)).encode()


def deliver(url: str, raw: bytes) -> tuple[httpx.Response, float]:
    """One signed webhook on a connection of its own; the answer and how long it took."""
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=120) as client:
        response = client.post("/webhooks/binance", content=raw, headers=headers(SECRET, raw))
    return response, time.monotonic() - started


def price_latencies(client: httpx.Client, count: int = 20) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.monotonic()
        response = client.get(PRICE, params={"symbol": "BTC-USD"})
        latencies.append(time.monotonic() - started)
        assert response.status_code == 200, response.text
        assert response.json()["cached"] is True
    return latencies


@pytest.fixture
def stalled_app(
    fakes: Fakes, tmp_path: Path, pg_warehouse_url: str, redis_url: str, redis_client: redis.Redis
) -> Callable[[float], tuple[FastAPI, Settings]]:
    def make(store_timeout_s: float) -> tuple[FastAPI, Settings]:
        settings: Settings = fakes.settings(
            tmp_path,
            REDIS_URL=redis_url,
            FKS_WAREHOUSE_URL=pg_warehouse_url,
            FKS_WEBHOOK_SECRET=SECRET,
            FKS_WEBHOOK_STORE_TIMEOUT_S=store_timeout_s,
            FKS_CACHE_TTL_PRICE_S=600,
        )
        return create_app(settings), settings

    return make


def wait_for(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.02)


def test_webhooks_waiting_on_a_locked_table_do_not_slow_the_price(
    stalled_app: Callable[[float], tuple[FastAPI, Settings]], pg_warehouse_url: str
) -> None:
    """The issue: 60 webhooks waiting on a table lock made a cached price take 29.4 s (one
    thread pool for everything). Here the lock is held while 60 webhooks wait and the price is
    timed, then released before the store gives up: every webhook is stored."""
    app, settings = stalled_app(30.0)
    with uvicorn_server(app, settings) as url, httpx.Client(base_url=url) as client:
        assert deliver(url, kline(-1))[0].status_code == 202  # the store is open
        client.get(PRICE, params={"symbol": "BTC-USD"})  # the price is cached
        unloaded = price_latencies(client)
        intake = services_of(app).webhook_intake
        assert intake is not None
        with ThreadPoolExecutor(WEBHOOKS) as pool:
            with table_locked(pg_warehouse_url):
                answers = [pool.submit(deliver, url, kline(n)) for n in range(WEBHOOKS)]
                wait_for(lambda: intake.pending == WEBHOOKS)
                loaded = price_latencies(client)
                health = client.get("/health").json()
                waiting = [answer for answer in answers if not answer.done()]
            results = [answer.result(timeout=120) for answer in answers]

    assert len(waiting) == WEBHOOKS  # every webhook was still waiting while the price was timed
    assert health["workers"]["intake"]["waiting_for_store"] == WEBHOOKS
    assert health["workers"]["data"]["busy"] == 0
    assert statistics.median(loaded) < 5 * statistics.median(unloaded)
    assert max(loaded) < 20 * statistics.median(unloaded)
    assert [response.status_code for response, _ in results] == [202] * WEBHOOKS


def test_a_lock_that_outlasts_the_store_timeout_is_a_503_with_retry_after(
    stalled_app: Callable[[float], tuple[FastAPI, Settings]], pg_warehouse_url: str
) -> None:
    app, settings = stalled_app(1.0)
    with uvicorn_server(app, settings) as url, httpx.Client(base_url=url) as client:
        assert deliver(url, kline(-1))[0].status_code == 202
        client.get(PRICE, params={"symbol": "BTC-USD"})
        unloaded = price_latencies(client)
        intake = services_of(app).webhook_intake
        assert intake is not None
        with ThreadPoolExecutor(WEBHOOKS) as pool, table_locked(pg_warehouse_url):
            answers: list[Future[tuple[httpx.Response, float]]] = [
                pool.submit(deliver, url, kline(n)) for n in range(WEBHOOKS)
            ]
            loaded = price_latencies(client)
            results = [answer.result(timeout=120) for answer in answers]
        after = deliver(url, kline(WEBHOOKS))[0]

    assert statistics.median(loaded) < 5 * statistics.median(unloaded)
    for response, _ in results:
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_unavailable"
        assert response.headers["Retry-After"] == "1"
    # Answered within the intake's bound (each batch gives up after the store's timeout), not
    # after the lock: the sender's own timeout is longer.
    assert max(elapsed for _, elapsed in results) < 2 * intake.wait_s
    assert after.status_code == 202


def test_health_answers_and_prices_are_refused_in_time_while_the_data_threads_are_busy(
    fakes: Fakes, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    settings: Settings = fakes.settings(
        tmp_path,
        REDIS_URL=redis_url,
        FKS_API_DATA_THREADS=1,
        FKS_API_THREAD_WAIT_S=0.2,
        FKS_HTTP_READ_TIMEOUT_S=30,
    )
    fakes.binance.latency_s = 3.0  # the one data thread is held by a slow upstream
    app = create_app(settings)
    with uvicorn_server(app, settings) as url, ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, f"{url}{PRICE}", params={"symbol": "ETH-USD"}, timeout=60)
        wait_for(lambda: services_of(app).bulkheads.data.busy == 1)
        health = httpx.get(f"{url}/health", timeout=60)
        refused = httpx.get(f"{url}{PRICE}", params={"symbol": "SOL-USD"}, timeout=60)
        still_busy = not slow.done()
        served = slow.result(timeout=60)

    assert still_busy  # both answers came while the data thread was held
    assert health.status_code == 200
    assert health.json()["workers"]["data"] == {
        "threads": 1,
        "busy": 1,
        "waiting": 0,
        "waiting_for_store": None,
    }
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert refused.headers["Retry-After"] == "1"
    assert served.status_code == 200


def test_a_locked_ohlcv_table_gives_bars_from_the_provider_after_the_read_timeout(
    fakes: Fakes, tmp_path: Path, pg_warehouse_url: str
) -> None:
    """A read of the data routes waits at most FKS_API_WAREHOUSE_TIMEOUT_S; it waited for as
    long as the lock lasted (here: for ever, since the lock waits for the answer)."""
    settings: Settings = fakes.settings(
        tmp_path, FKS_WAREHOUSE_URL=pg_warehouse_url, FKS_API_WAREHOUSE_TIMEOUT_S=1.0
    )
    window = {"symbol": "BTC-USD", "interval": "1h", "start": "2024-01-05", "end": "2024-01-06"}
    with uvicorn_server(create_app(settings), settings) as url:
        assert httpx.get(f"{url}/health").json()["warehouse"]["state"] == "ok"
        with table_locked(pg_warehouse_url, "ohlcv"):
            started = time.monotonic()
            response = httpx.get(f"{url}/api/v1/data/ohlcv", params=window, timeout=60)
            elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert (response.json()["source"], len(response.json()["candles"])) == ("provider", 24)
    assert elapsed < 10 * settings.api_warehouse_timeout_s
