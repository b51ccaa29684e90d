"""A Redis that stops and comes back mid-run: a throwaway ``redis-server`` of the test's own.

These tests stop and restart the server, so they never use the shared one at ``REDIS_URL``
(fixture ``local_redis`` of the root conftest).
"""

import logging
from collections.abc import Iterator

import pytest
import redis

from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.providers.support import HOUR, KLINES, day, runtime
from fks_pipelines_tests.services import LocalRedis

REQUESTS_LOG = "fks:v1:binance:ratelimit:requests"


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


def test_a_redis_that_goes_away_degrades_to_upstream_fetches(
    server: FakeBinance, local_redis: LocalRedis, caplog: pytest.LogCaptureFixture
) -> None:
    with BinanceClient(server.url, runtime=runtime(redis_url=local_redis.url)) as client:
        first = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        assert len(server.requests_to(KLINES)) == 1

        local_redis.stop_process()
        with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.cache"):
            during = [client.fetch_ohlcv("BTCUSDT", HOUR, *day()) for _ in range(2)]

        assert len(server.requests_to(KLINES)) == 3
        assert all(frame.equals(first) for frame in during)
        cache_warnings = [r for r in caplog.records if r.name == "fks_pipelines.providers.cache"]
        assert len(cache_warnings) == 1
        assert "cache unavailable" in cache_warnings[0].getMessage()

        local_redis.launch()  # empty: no persistence
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        assert len(server.requests_to(KLINES)) == 4
        assert client.stats.cache_hits == 2


def test_shared_limits_resume_after_redis_restarts(
    server: FakeBinance, local_redis: LocalRedis
) -> None:
    check = redis.Redis.from_url(local_redis.url)
    with BinanceClient(server.url, runtime=runtime(redis_url=local_redis.url)) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day(0))
        assert check.zcard(REQUESTS_LOG) == 1

        local_redis.stop_process()
        local_redis.launch()
        client.fetch_ohlcv("BTCUSDT", HOUR, *day(1))

        assert check.zcard(REQUESTS_LOG) == 1
    check.close()


def test_a_runtime_built_after_redis_is_back_uses_it(
    server: FakeBinance, local_redis: LocalRedis
) -> None:
    port = local_redis.port
    local_redis.stop_process()
    down = runtime(redis_url=f"redis://127.0.0.1:{port}/0")
    assert down.cache is None
    local_redis.launch()

    with BinanceClient(
        server.url, runtime=runtime(redis_url=f"redis://127.0.0.1:{port}/0")
    ) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())

    assert len(server.requests_to(KLINES)) == 1
