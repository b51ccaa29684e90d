"""Rate limits measured where the provider counts them: at the local server, on arrival."""

import itertools
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
from filelock import FileLock
from pyrate_limiter import RateItem

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.binance import BinanceClient, klines_weight
from fks_pipelines.providers.errors import QuotaExhausted, RateLimited
from fks_pipelines.providers.ratelimit import ProviderLimits, Quota, Window, _RedisLogBucket
from fks_pipelines.providers.runtime import SHARED_DIR
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import (
    DAY,
    HOUR,
    KLINES,
    acquire_times,
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


def test_two_per_second_shared_by_several_processes(
    server: FakeBinance, shared: dict[str, Any]
) -> None:
    """Three processes with four requests each keep waiting on one another: every process is
    refused several times, so a wrong retry timestamp would let a third request into a second."""
    results = run_children(
        fetch_days,
        [(server.url, shared, TWO_PER_SECOND, tuple(range(4 * k, 4 * k + 4))) for k in range(3)],
    )

    assert sum(r["requests"] for r in results) == 12
    assert len(arrivals(server)) == 12
    assert max_in_window(arrivals(server), 1.0) == 2


def test_processes_waiting_on_one_another_never_share_a_window(shared: dict[str, Any]) -> None:
    """Six processes take six slots each of one per 200 ms, each refused many times.

    pyrate-limiter's blocking retry stamped a waiting item with its first timestamp pushed
    forward by the time it slept; that stamp fell behind the clock, the shared log then missed
    entries of other processes, and two requests left 137-141 ms apart in this setting. Every
    gap must stay at the window; the 25 ms allow for reading the clock after an acquisition
    returns on a loaded machine (measured: 204 ms at a load average of 5 on 2 cores).
    """
    window = Window(limit=1, period_s=0.2)
    results = run_children(acquire_times, [(shared, "binance", window, 6) for _ in range(6)])

    times = sorted(t for r in results for t in r["times"])
    assert len(times) == 36
    assert min(b - a for a, b in itertools.pairwise(times)) >= window.period_s - 0.025


def test_a_late_stamp_still_counts_entries_logged_after_it(redis_client: redis.Redis) -> None:
    """A process descheduled between stamping its request and running the Redis script arrives
    with a stamp older than entries other processes logged meanwhile; those entries must still
    count against it (pyrate's own script counted only up to the stamp and let it in)."""
    rates = [Window(limit=1, period_s=0.2).rate(margin_s=0.0)]
    bucket = _RedisLogBucket.init(rates, redis_client, "fks:v1:test:ratelimit:requests")
    now_ms = time.time_ns() // 1_000_000

    assert bucket.put(RateItem("binance", now_ms))
    assert not bucket.put(RateItem("binance", now_ms - 30))
    assert bucket.put(RateItem("binance", now_ms + 201))


def test_a_request_that_waited_for_the_log_file_is_logged_when_it_got_it(
    tmp_path: Path,
) -> None:
    """Another process holding the rate-limit log's file lock delays an acquisition; the log
    must hold the time the request was let through, not the time it asked, or the next request
    could leave less than a window after it."""
    limiter = runtime(TWO_PER_SECOND, cache_dir=tmp_path).limiter
    limiter.acquire()
    log_file = tmp_path / SHARED_DIR / "ratelimit" / "binance-requests.sqlite"
    waiting = threading.Thread(target=limiter.acquire)
    with FileLock(f"{log_file}.lock"):  # a lock of its own, as another process would hold it
        waiting.start()
        threading.Event().wait(0.2)  # the acquisition is stamped and waits for the lock
        released_ms = time.time_ns() // 1_000_000
    waiting.join(timeout=10)

    stamps = logged_ms(log_file, "requests")
    assert len(stamps) == 2
    assert stamps[-1] >= released_ms


def logged_ms(log_file: Path, table: str) -> list[int]:
    """The timestamps (ms) in a rate-limit log file, oldest first."""
    with closing(sqlite3.connect(log_file)) as conn:
        rows = conn.execute(f"SELECT item_timestamp FROM '{table}' ORDER BY item_timestamp")
        return [row[0] for row in rows]


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


def test_a_daily_quota_is_shared_by_processes(server: FakeBinance, shared: dict[str, Any]) -> None:
    results = run_children(
        fetch_days, [(server.url, shared, QUOTA, tuple(range(3 * k, 3 * k + 3))) for k in range(2)]
    )

    outcomes = sorted(o for r in results for o in r["outcomes"])
    assert outcomes == ["QuotaExhausted"] * 3 + ["ok"] * 3
    assert len(server.requests_to(KLINES)) == 3
    assert runtime(QUOTA, **shared).limiter.quota_usage() == {"quota_day_calls_used": 3}


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


def test_retry_after_pauses_another_process(server: FakeBinance, shared: dict[str, Any]) -> None:
    server.scripted.append(
        Response.json(
            {"code": -1003, "msg": "Too many requests."}, status=429, headers={"Retry-After": "30"}
        )
    )
    [paused] = run_children(fetch_days, [(server.url, shared, BinanceClient.LIMITS, (0,))])
    assert paused["outcomes"] == ["RateLimited"]

    other = BinanceClient(
        server.url, runtime=runtime(max_attempts=1, limiter_max_wait_s=1.0, **shared)
    )
    with other, pytest.raises(RateLimited, match="paused by the provider") as caught:
        other.fetch_ohlcv("BTCUSDT", HOUR, *day(1))
    assert 25 < caught.value.retry_after <= 30
    assert len(server.requests_to(KLINES)) == 1


def test_a_data_directory_that_cannot_be_opened_leaves_limits_in_process(
    server: FakeBinance, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "data").write_text("a file where the data directory should be")
    with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.runtime"):
        rt = runtime(QUOTA, cache_dir=tmp_path / "data" / "cache", max_attempts=1)
    with BinanceClient(server.url, runtime=rt) as client:
        for offset in range(3):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(offset))
        with pytest.raises(QuotaExhausted):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(3))

    assert rt.cache is None
    [warning] = caplog.records
    assert "caching off, state in-process" in warning.getMessage()
    assert len(server.requests_to(KLINES)) == 3


def test_a_redis_that_does_not_answer_leaves_runtimes_on_the_files(
    server: FakeBinance, tmp_path: Path
) -> None:
    """REDIS_URL set but nothing listening: runtimes built then share through the data
    directory, as the cache already did, instead of each keeping its own count."""
    settings = {"redis_url": "redis://127.0.0.1:1/0", "cache_dir": tmp_path, "max_attempts": 1}
    first = BinanceClient(server.url, runtime=runtime(QUOTA, **settings))
    second = BinanceClient(server.url, runtime=runtime(QUOTA, **settings))
    with first, second:
        first.fetch_ohlcv("BTCUSDT", HOUR, *day(0))
        second.fetch_ohlcv("BTCUSDT", HOUR, *day(1))
        first.fetch_ohlcv("BTCUSDT", HOUR, *day(2))
        with pytest.raises(QuotaExhausted):
            second.fetch_ohlcv("BTCUSDT", HOUR, *day(3))
    assert len(server.requests_to(KLINES)) == 3


def test_a_rate_limit_log_that_cannot_be_opened_holds_the_limit_in_process(
    server: FakeBinance, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_dir = tmp_path / "cache" / SHARED_DIR / "ratelimit"
    log_dir.parent.mkdir(parents=True)
    log_dir.write_text("a file where the rate-limit logs should be")
    with (
        caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.ratelimit"),
        BinanceClient(
            server.url, runtime=runtime(TWO_PER_SECOND, cache_dir=log_dir.parent.parent)
        ) as client,
    ):
        for offset in range(3):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(offset))

    assert max_in_window(arrivals(server), 1.0) == 2
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"rate-limit log in {log_dir} unavailable" in warning.getMessage()


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
    shared: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    limits = ProviderLimits(requests=(Window(limit=1000, period_s=0.2),))
    limiter = runtime(limits=limits, **shared).limiter

    def log_size() -> int:
        if "redis_url" in shared:
            client: redis.Redis = request.getfixturevalue("redis_client")
            return int(client.zcard("fks:v1:binance:ratelimit:requests"))
        log_file = shared["cache_dir"] / SHARED_DIR / "ratelimit" / "binance-requests.sqlite"
        return len(logged_ms(log_file, "requests"))

    for _ in range(50):
        limiter.acquire()
    assert log_size() == 50
    time.sleep(0.3)  # the first 50 entries are now older than the window and its margin
    for _ in range(50):
        limiter.acquire()

    # Trimmed on the 100th acquisition: only the second batch is left.
    assert log_size() == 50
