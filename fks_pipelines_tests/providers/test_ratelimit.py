"""Rate limits measured where the provider counts them: at the local server, on arrival."""

import math
import threading
import time
from collections.abc import Iterator

import pandas as pd
import pytest
import redis

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.binance import BinanceClient, klines_weight
from fks_pipelines.providers.errors import QuotaExhausted, RateLimited
from fks_pipelines.providers.ratelimit import ProviderLimits, Quota, Window
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import (
    DAY,
    HOUR,
    KLINES,
    day,
    fetch_days,
    max_in_window,
    run_children,
    runtime,
)

TWO_PER_SECOND = ProviderLimits(requests=(Window.per_second(2),))
MINUTE = Interval.parse("1m")


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


@pytest.mark.parametrize(
    ("rps", "limit", "period_s"),
    [(10, 10, 1.0), (2, 2, 1.0), (2.5, 2, 1.0), (0.5, 1, 2.0), (0.083, 1, 1 / 0.083)],
)
def test_window_per_second(rps: float, limit: int, period_s: float) -> None:
    window = Window.per_second(rps)
    assert window.limit == limit
    assert window.period_s == pytest.approx(period_s)


def test_window_of_one_request_per_twelve_seconds() -> None:
    assert Window.per_second(0.083).period_s == pytest.approx(12.05, abs=0.01)


@pytest.mark.parametrize("rps", [0, -1])
def test_window_per_second_must_be_positive(rps: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        Window.per_second(rps)


def arrivals(server: FakeBinance) -> list[float]:
    return [r.received_at for r in server.requests_to(KLINES)]


def test_two_per_second_never_lets_three_through_in_a_second(server: FakeBinance) -> None:
    rt = runtime(TWO_PER_SECOND, max_attempts=1)
    start = threading.Barrier(3)
    errors: list[BaseException] = []

    def fetch(offsets: tuple[int, ...]) -> None:
        try:
            with BinanceClient(server.url, runtime=rt) as client:
                start.wait(timeout=10)
                for offset in offsets:
                    client.fetch_ohlcv("BTCUSDT", HOUR, *day(offset))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch, args=((2 * k, 2 * k + 1),)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    assert len(arrivals(server)) == 6
    assert max_in_window(arrivals(server), 1.0) == 2


def test_two_per_second_shared_by_several_processes_through_redis(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    results = run_children(
        fetch_days,
        [(server.url, redis_url, TWO_PER_SECOND, (2 * k, 2 * k + 1)) for k in range(3)],
    )

    assert sum(r["requests"] for r in results) == 6
    assert len(arrivals(server)) == 6
    assert max_in_window(arrivals(server), 1.0) == 2


def window_of(bars: int) -> tuple[pd.Timestamp, pd.Timestamp]:
    return DAY, DAY + bars * MINUTE.offset


def test_klines_requests_reserve_their_weight(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    with BinanceClient(server.url, runtime=runtime(redis_url=redis_url)) as client:
        client.fetch_ohlcv("BTCUSDT", MINUTE, *window_of(1500))
        assert redis_client.zcard("fks:v1:binance:ratelimit:weight") == klines_weight(1500) == 10
        client.fetch_ohlcv("ETHUSDT", MINUTE, *window_of(24))
        assert redis_client.zcard("fks:v1:binance:ratelimit:weight") == 11
        assert redis_client.zcard("fks:v1:binance:ratelimit:requests") == 2
    assert [r.query["limit"] for r in server.requests_to(KLINES)] == ["1500", "24"]


def test_a_full_weight_window_holds_the_next_request_back(server: FakeBinance) -> None:
    limits = ProviderLimits(requests=(Window.per_second(10),), weight=(Window(10, 60.0),))
    rt = runtime(limits, limiter_max_wait_s=0.2, max_attempts=1)
    with BinanceClient(server.url, runtime=rt) as client:
        assert len(client.fetch_ohlcv("BTCUSDT", MINUTE, *window_of(1500))) == 1500
        with pytest.raises(RateLimited, match="no request slot"):
            client.fetch_ohlcv("ETHUSDT", MINUTE, *window_of(1500))
        with pytest.raises(RateLimited, match="no request slot"):
            client.fetch_ohlcv("ETHUSDT", MINUTE, *window_of(24))

    assert [r.query["limit"] for r in server.requests_to(KLINES)] == ["1500"]


def test_a_request_heavier_than_the_weight_window_is_refused_unsent(server: FakeBinance) -> None:
    limits = ProviderLimits(requests=(Window.per_second(10),), weight=(Window(5, 60.0),))
    rt = runtime(limits, limiter_max_wait_s=5.0, max_attempts=1)
    with BinanceClient(server.url, runtime=rt) as client, pytest.raises(RateLimited):
        client.fetch_ohlcv("BTCUSDT", MINUTE, *window_of(1500))
    assert server.requests == []


def test_waiting_too_long_for_a_slot_is_not_a_provider_failure(server: FakeBinance) -> None:
    limits = ProviderLimits(requests=(Window.per_second(10),), weight=(Window(10, 60.0),))
    rt = runtime(limits, limiter_max_wait_s=0.05, max_attempts=1, breaker_failures=2)
    with BinanceClient(server.url, runtime=rt) as client:
        client.fetch_ohlcv("BTCUSDT", MINUTE, *window_of(1500))
        for _ in range(2):
            with pytest.raises(RateLimited):
                client.fetch_ohlcv("ETHUSDT", MINUTE, *window_of(24))

        assert client.circuit.state == "closed"


QUOTA = ProviderLimits(requests=(Window.per_second(100),), quotas=(Quota("calls", 3, "day"),))


def test_a_daily_quota_lets_its_calls_through_then_refuses_unsent(server: FakeBinance) -> None:
    with BinanceClient(server.url, runtime=runtime(QUOTA, max_attempts=1)) as client:
        for offset in range(3):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(offset))
        with pytest.raises(QuotaExhausted, match="calls quota of 3 used up"):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(3))

        assert client.http.runtime.limiter.quota_usage() == {"quota_day_calls_used": 3}
        assert client.metadata()["quota_day_calls_used"] == 3
    assert len(server.requests_to(KLINES)) == 3


def test_an_exhausted_daily_quota_says_daily(server: FakeBinance) -> None:
    with BinanceClient(server.url, runtime=runtime(QUOTA, max_attempts=1)) as client:
        for offset in range(3):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(offset))
        with pytest.raises(QuotaExhausted) as caught:
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(3))
    assert "daily calls quota" in str(caught.value)


def test_a_quota_is_shared_by_runtimes_on_the_same_redis(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    first = BinanceClient(server.url, runtime=runtime(QUOTA, redis_url=redis_url, max_attempts=1))
    second = BinanceClient(server.url, runtime=runtime(QUOTA, redis_url=redis_url, max_attempts=1))
    with first, second:
        first.fetch_ohlcv("BTCUSDT", HOUR, *day(0))
        second.fetch_ohlcv("BTCUSDT", HOUR, *day(1))
        first.fetch_ohlcv("BTCUSDT", HOUR, *day(2))
        for client in (second, first):
            with pytest.raises(QuotaExhausted):
                client.fetch_ohlcv("BTCUSDT", HOUR, *day(3))
            assert client.http.runtime.limiter.quota_usage() == {"quota_day_calls_used": 3}

    assert len(server.requests_to(KLINES)) == 3


def test_a_request_that_never_left_is_not_charged_to_the_quota(server: FakeBinance) -> None:
    limits = ProviderLimits(
        requests=(Window.per_second(10),),
        weight=(Window(10, 60.0),),
        quotas=(Quota("calls", 3, "day"),),
    )
    rt = runtime(limits, limiter_max_wait_s=0.05, max_attempts=1)
    with BinanceClient(server.url, runtime=rt) as client:
        client.fetch_ohlcv("BTCUSDT", MINUTE, *window_of(1500))
        with pytest.raises(RateLimited):
            client.fetch_ohlcv("ETHUSDT", MINUTE, *window_of(24))

        assert len(server.requests_to(KLINES)) == 1
        assert rt.limiter.quota_usage() == {"quota_day_calls_used": 1}


def test_retry_after_pauses_every_runtime_on_the_same_redis(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    server.scripted.append(
        Response.json(
            {"code": -1003, "msg": "Too many requests."}, status=429, headers={"Retry-After": "30"}
        )
    )
    before = time.time()
    paused = BinanceClient(server.url, runtime=runtime(redis_url=redis_url, max_attempts=1))
    with paused, pytest.raises(RateLimited):
        paused.fetch_ohlcv("BTCUSDT", HOUR, *day())
    pause_until = float(redis_client.get("fks:v1:binance:pause_until"))
    assert before + 30 <= pause_until <= time.time() + 30

    other = BinanceClient(
        server.url, runtime=runtime(redis_url=redis_url, max_attempts=1, limiter_max_wait_s=1.0)
    )
    with other, pytest.raises(RateLimited, match="paused by the provider") as caught:
        other.fetch_ohlcv("BTCUSDT", HOUR, *day(1))
    assert 28 < caught.value.retry_after <= 30
    assert len(server.requests_to(KLINES)) == 1


def clear_of_a_minute_boundary() -> None:
    """Return at least one second before the next UTC minute starts."""
    left = 60 - time.time() % 60
    if left < 1.0:
        threading.Event().wait(left + 0.01)


def test_used_weight_near_the_ceiling_pauses_until_the_next_minute(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    clear_of_a_minute_boundary()
    # After the wait: the fake, like Binance, starts each minute's weight at zero.
    server.used_weight = 2200  # the next answer says 2201 of 2400 used (over 90 %)
    before = time.time()
    with BinanceClient(server.url, runtime=runtime(redis_url=redis_url)) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
    after = time.time()

    [request] = server.requests_to(KLINES)
    pause_until = float(redis_client.get("fks:v1:binance:pause_until"))
    next_minute = math.floor(before / 60) * 60 + 60
    assert next_minute <= pause_until < next_minute + (after - before) + 0.01
    other = BinanceClient(
        server.url, runtime=runtime(redis_url=redis_url, max_attempts=1, limiter_max_wait_s=0.5)
    )
    with other, pytest.raises(RateLimited, match="paused by the provider"):
        other.fetch_ohlcv("BTCUSDT", HOUR, *day(1))
    assert server.requests_to(KLINES) == [request]


def test_used_weight_below_the_ceiling_does_not_pause(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    server.used_weight = 2000
    with BinanceClient(server.url, runtime=runtime(redis_url=redis_url)) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", HOUR, *day(1))
    assert redis_client.get("fks:v1:binance:pause_until") is None
    assert len(server.requests_to(KLINES)) == 2


def test_the_shared_log_is_trimmed_to_the_longest_window(
    redis_url: str, redis_client: redis.Redis
) -> None:
    limits = ProviderLimits(requests=(Window(limit=1000, period_s=0.2),))
    limiter = runtime(limits=limits, redis_url=redis_url).limiter
    log_key = "fks:v1:binance:ratelimit:requests"

    for _ in range(50):
        limiter.acquire()
    time.sleep(0.3)  # the first 50 entries are now older than the window and its margin
    for _ in range(50):
        limiter.acquire()

    # Trimmed on the 100th acquisition: only the second batch is left.
    assert redis_client.zcard(log_key) == 50
