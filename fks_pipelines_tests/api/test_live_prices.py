"""GET /api/v1/data/price from fks-stream's live prices in real Redis while they are fresh, and
the REST path whenever they are not (stale, missing, undecodable, Redis down)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest
import redis
from fastapi import FastAPI

from fks_pipelines.api.app import create_app
from fks_pipelines.realtime.prices import LivePrices
from fks_pipelines_tests.api.support import Fakes, served
from fks_pipelines_tests.api.test_ops import samples
from fks_pipelines_tests.devserver import free_port
from fks_pipelines_tests.services import LocalRedis

pytestmark = pytest.mark.anyio

PRICE = "/api/v1/data/price"
TICKER = "/fapi/v1/ticker/price"
BINANCE = {"symbol": "BTCUSDT", "provider": "binance"}
STREAMED = 44210.12345678901


def ago(seconds: float) -> pd.Timestamp:
    """An event time ``seconds`` before now, to the ms as Binance stamps it."""
    return (pd.Timestamp.now(tz="UTC") - pd.Timedelta(seconds=seconds)).floor("ms")


def stream(client: redis.Redis, age_s: float, symbol: str = "BTCUSDT") -> pd.Timestamp:
    """What fks-stream does: the live price of ``symbol``, stamped ``age_s`` ago."""
    event_time = ago(age_s)
    assert LivePrices(client).put(symbol, STREAMED, event_time)
    return event_time


@pytest.mark.parametrize("params", [BINANCE, {"symbol": "BTC-USD"}], ids=["binance", "canonical"])
async def test_a_fresh_stream_price_answers_without_a_rest_request(
    api: httpx.AsyncClient, fakes: Fakes, redis_client: redis.Redis, params: dict[str, str]
) -> None:
    event_time = stream(redis_client, age_s=1.5)

    response = await api.get(PRICE, params=params)

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "symbol": "BTC-USD",
        "provider": "binance",
        "provider_symbol": "BTCUSDT",
        "price": STREAMED,
        "ts": body["ts"],
        "source": "stream",
        "age_s": body["age_s"],
        "cached": True,
        "cache": "redis",
    }
    assert pd.Timestamp(body["ts"]) == event_time
    assert 1.5 <= body["age_s"] < 5.0  # within FKS_STREAM_PRICE_MAX_AGE_S, or it is REST's
    assert fakes.requests() == 0


@pytest.mark.parametrize("age_s", [60.0, -60.0], ids=["stale", "stamped-ahead"])
async def test_a_price_outside_the_max_age_is_answered_from_rest(
    api: httpx.AsyncClient, fakes: Fakes, redis_client: redis.Redis, age_s: float
) -> None:
    stream(redis_client, age_s=age_s)
    fakes.binance.now_ms = ago(10).value // 1_000_000  # the REST quote's time

    response = await api.get(PRICE, params=BINANCE)

    assert response.status_code == 200
    body = response.json()
    assert (body["source"], body["cached"], body["cache"]) == ("rest", False, None)
    assert body["price"] != STREAMED
    assert pd.Timestamp(body["ts"]).value // 1_000_000 == fakes.binance.now_ms
    assert 10 <= body["age_s"] < 20
    assert len(fakes.binance.requests_to(TICKER)) == 1


async def test_the_max_age_comes_from_the_setting(
    fakes: Fakes, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    stream(redis_client, age_s=2.0)
    settings = fakes.settings(tmp_path, REDIS_URL=redis_url, FKS_STREAM_PRICE_MAX_AGE_S=1)
    async with served(create_app(settings)) as api:
        response = await api.get(PRICE, params=BINANCE)
        health = (await api.get("/health")).json()

    assert response.json()["source"] == "rest"
    assert health["live_prices"]["state"] == "rest"
    assert "FKS_STREAM_PRICE_MAX_AGE_S: 1" in health["live_prices"]["detail"]


async def test_without_a_live_entry_the_price_comes_from_rest(
    api: httpx.AsyncClient, fakes: Fakes, redis_client: redis.Redis
) -> None:
    stream(redis_client, age_s=0, symbol="ETHUSDT")

    response = await api.get(PRICE, params={"symbol": "BTC-USD"})
    health = (await api.get("/health")).json()

    assert (response.json()["source"], response.json()["provider"]) == ("rest", "binance")
    assert response.json()["age_s"] == 0.0  # the fake's quote is stamped in 2030
    assert len(fakes.binance.requests_to(TICKER)) == 1
    assert health["live_prices"] == {
        "state": "rest",
        "detail": "no live price of BTCUSDT (is fks-stream running?)",
    }


async def test_other_providers_never_read_live_prices(
    api: httpx.AsyncClient, fakes: Fakes, redis_client: redis.Redis
) -> None:
    stream(redis_client, age_s=0)
    assert LivePrices(redis_client, provider="polygon").put("X:BTCUSD", STREAMED, ago(0))

    response = await api.get(PRICE, params={"symbol": "BTC-USD", "provider": "polygon"})
    health = (await api.get("/health")).json()

    body = response.json()
    assert (body["provider"], body["source"], body["cached"]) == ("polygon", "rest", False)
    assert len(fakes.polygon.requests) == 1
    assert health["live_prices"] == {"state": "unused", "detail": None}


async def test_an_instrument_whose_first_provider_is_not_binance_is_served_from_rest(
    fakes: Fakes, tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    stream(redis_client, age_s=0)
    universe = tmp_path / "universe.yaml"
    universe.write_text(
        "instruments: {BTC-USD: {asset_class: crypto}}\n"
        "priority: [polygon, binance]\n"
        "providers:\n"
        "  binance: {start_date: 2024-01-01, intervals: [1h], symbols: {BTCUSDT: BTC-USD}}\n"
        "  polygon: {start_date: 2024-01-01, intervals: [1h], symbols: {X:BTCUSD: BTC-USD}}\n"
    )
    settings = fakes.settings(tmp_path, REDIS_URL=redis_url, FKS_UNIVERSE_FILE=universe)
    async with served(create_app(settings)) as api:
        response = await api.get(PRICE, params={"symbol": "BTC-USD"})

    assert (response.json()["provider"], response.json()["source"]) == ("polygon", "rest")
    assert fakes.binance.requests == []


async def test_with_redis_stopped_the_price_comes_from_rest(
    fakes: Fakes, tmp_path: Path, local_redis: LocalRedis
) -> None:
    settings = fakes.settings(tmp_path, REDIS_URL=local_redis.url)
    with redis.Redis.from_url(local_redis.url) as client:
        stream(client, age_s=0)
    async with served(create_app(settings)) as api:
        streamed = await api.get(PRICE, params=BINANCE)
        local_redis.stop_process()
        first = await api.get(PRICE, params=BINANCE)
        second = await api.get(PRICE, params=BINANCE)
        health = (await api.get("/health")).json()

    assert streamed.json()["source"] == "stream"
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["source"], second.json()["source"]) == ("rest", "rest")
    assert second.json()["cache"] == "process"
    assert len(fakes.binance.requests_to(TICKER)) == 1
    assert health["live_prices"] == {"state": "rest", "detail": "Redis is unreachable"}


@pytest.mark.parametrize("unreachable", [False, True], ids=["unset", "unreachable"])
async def test_without_redis_at_start_live_prices_are_off(
    fakes: Fakes, tmp_path: Path, unreachable: bool
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0" if unreachable else None  # nothing listens
    async with served(create_app(fakes.settings(tmp_path, REDIS_URL=url))) as api:
        response = await api.get(PRICE, params=BINANCE)
        health = (await api.get("/health")).json()

    assert (response.status_code, response.json()["source"]) == (200, "rest")
    assert health["live_prices"]["state"] == "off"


@pytest.mark.parametrize(
    "fields",
    [
        {"price": "a lot", "event_ms": "now"},
        {"price": "1.5", "event_ms": "soon"},
        {"price": "nan", "event_ms": "now"},
        {"price": "1.5", "event_ms": str(10**30)},  # beyond any timestamp
        None,  # a string, not a hash
    ],
    ids=["price", "event-time", "nan", "out-of-range", "wrong-type"],
)
async def test_an_entry_that_does_not_decode_falls_back_to_rest(
    api: httpx.AsyncClient,
    fakes: Fakes,
    redis_client: redis.Redis,
    fields: dict[str, str] | None,
) -> None:
    key = "fks:v1:binance:live:BTCUSDT"
    now_ms = str(ago(0).value // 1_000_000)
    if fields is None:
        redis_client.set(key, "44210.1")
    else:
        redis_client.hset(key, mapping={k: now_ms if v == "now" else v for k, v in fields.items()})

    response = await api.get(PRICE, params=BINANCE)
    again = await api.get(PRICE, params=BINANCE)
    health = (await api.get("/health")).json()

    assert response.status_code == 200
    assert response.json()["source"] == "rest"
    assert (again.json()["source"], again.json()["cache"]) == ("rest", "redis")  # Redis is up
    assert health["redis"]["state"] == "ok"
    assert health["live_prices"] == {
        "state": "rest",
        "detail": "the live price of BTCUSDT does not decode",
    }


async def test_a_stream_answer_does_not_wait_for_a_rest_fetch_in_flight(
    api: httpx.AsyncClient, fakes: Fakes, redis_client: redis.Redis
) -> None:
    fakes.binance.latency_s = 1.5  # under the read timeout (2 s)
    stream(redis_client, age_s=60)
    slow = asyncio.ensure_future(api.get(PRICE, params=BINANCE))
    deadline = time.monotonic() + 5
    while not fakes.binance.requests_to(TICKER):
        assert time.monotonic() < deadline, "the REST fetch never started"
        await asyncio.sleep(0.01)
    stream(redis_client, age_s=0)

    fast = await api.get(PRICE, params=BINANCE)
    answered_first = not slow.done()  # the REST fetch is still held by the fake's latency
    rest = await slow

    assert fast.json()["source"] == "stream"
    assert answered_first
    assert rest.json()["source"] == "rest"
    assert len(fakes.binance.requests_to(TICKER)) == 1


async def test_answers_are_counted_by_source_and_health_shows_the_stream(
    app: FastAPI, api: httpx.AsyncClient, redis_client: redis.Redis
) -> None:
    before = samples((await api.get("/metrics")).text)
    health_before = (await api.get("/health")).json()
    await api.get(PRICE, params={"symbol": "ETH-USD"})
    stream(redis_client, age_s=0)
    await api.get(PRICE, params=BINANCE)
    await api.get(PRICE, params={"symbol": "BTC-USD"})
    after = samples((await api.get("/metrics")).text)
    health = (await api.get("/health")).json()

    def grew(source: str) -> float:
        key = ("fks_price_answers_total", (("source", source),))
        return after[key] - before.get(key, 0.0)

    assert (grew("stream"), grew("rest")) == (2, 1)
    assert health_before["live_prices"] == {"state": "unused", "detail": None}
    assert health["live_prices"] == {"state": "stream", "detail": None}
