"""API keys reach the provider and nowhere else: not errors, logs, Redis keys or metadata."""

import logging
import traceback
from collections.abc import Iterator
from typing import Literal

import pytest
import redis

from fks_pipelines.providers.errors import ProviderError, Unauthorized, Unavailable
from fks_pipelines.providers.http import Timeouts
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import (
    HOUR,
    KLINES,
    TICKER,
    PretendKeyedClient,
    Sleeps,
    day,
    runtime,
)

SECRET = "sk-live-7Q2mZ9xK4pW1"
KEY_IN = ["header", "query"]
KeyIn = Literal["header", "query"]


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


def pretend(server_url: str, key_in: KeyIn, **config: object) -> PretendKeyedClient:
    settings = {"max_attempts": 2, "timeouts": Timeouts(connect=1, read=0.2), **config}
    rt = runtime(PretendKeyedClient.LIMITS, provider=PretendKeyedClient.name, **settings)
    return PretendKeyedClient(server_url, SECRET, runtime=rt, key_in=key_in, sleep=Sleeps())


@pytest.mark.parametrize("key_in", KEY_IN)
def test_the_key_reaches_the_provider(server: FakeBinance, key_in: KeyIn) -> None:
    with pretend(server.url, key_in) as client:
        client.latest_price("BTCUSDT")
    [request] = server.requests_to(TICKER)
    sent = request.headers.get("x-api-key") if key_in == "header" else request.query["apikey"]
    assert sent == SECRET


def everything_about(error: BaseException) -> str:
    return "".join(
        [str(error), repr(error), *map(str, error.args), *traceback.format_exception(error)]
    )


def failures(server: FakeBinance) -> Iterator[tuple[str, type[ProviderError]]]:
    """Drive the server into each way of failing; yields a name and the error to expect."""
    server.scripted.append(Response.json({"message": "Invalid API key."}, status=401))
    yield "401", Unauthorized
    server.scripted.extend([Response(status=500, body=b"oops")] * 2)
    yield "500", Unavailable
    slow = Response.json([])
    slow.delay_s = 0.5
    server.scripted.extend([slow, slow])
    yield "timeout", Unavailable


@pytest.mark.parametrize("key_in", KEY_IN)
def test_the_key_never_appears_in_errors(server: FakeBinance, key_in: KeyIn) -> None:
    with pretend(server.url, key_in, breaker_failures=100) as client:
        for name, expected in failures(server):
            with pytest.raises(expected) as caught:
                client.fetch_ohlcv("BTCUSDT", HOUR, *day())
            assert SECRET not in everything_about(caught.value), name
    with FakeBinance() as stopped:
        closed_url = stopped.url
    with pretend(closed_url, key_in) as client, pytest.raises(Unavailable) as caught:
        client.latest_price("BTCUSDT")
    assert SECRET not in everything_about(caught.value)


@pytest.mark.parametrize("key_in", ["header", "query"])
def test_the_key_never_appears_in_logs(
    server: FakeBinance, key_in: KeyIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pretend(server.url, key_in, breaker_failures=100) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.latest_price("BTCUSDT")
        for _, expected in failures(server):
            with pytest.raises(expected):
                client.fetch_ohlcv("BTCUSDT", HOUR, *day(1))

    assert len(caplog.records) > 10  # debug logging of the whole stack was on
    leaks = [f"{r.name}: {r.getMessage()}" for r in caplog.records if SECRET in r.getMessage()]
    assert leaks == []


@pytest.mark.parametrize("key_in", KEY_IN)
def test_the_key_never_appears_in_redis_or_metadata(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis, key_in: KeyIn
) -> None:
    with pretend(server.url, key_in, redis_url=redis_url, breaker_failures=2) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.latest_price("BTCUSDT")
        server.failing_symbols.add("ETHUSDT")
        for offset in range(2):
            with pytest.raises(Unavailable):
                client.fetch_ohlcv("ETHUSDT", HOUR, *day(offset))
        metadata = client.metadata()

    assert metadata["circuit"] == "open"
    assert metadata["quota_day_calls_used"] == 6
    assert SECRET not in repr(metadata)
    names = [name.decode() for name in redis_client.scan_iter("*")]
    assert any(":ohlcv:" in name for name in names)
    assert any(":breaker:" in name for name in names)
    assert any(":quota:" in name for name in names)
    assert [name for name in names if SECRET in name] == []
    for name in names:
        if redis_client.type(name) == b"string":
            assert SECRET.encode() not in redis_client.get(name), name
        elif redis_client.type(name) == b"zset":
            members = redis_client.zrange(name, 0, -1)
            assert not any(SECRET.encode() in m for m in members), name
    assert len(server.requests_to(KLINES)) == 1 + 2 * 2
