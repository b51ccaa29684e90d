"""The provider cache on real Redis and on the disk backend, against the local Binance server."""

import logging
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import diskcache
import pandas as pd
import pytest
import redis

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers import runtime as runtime_module
from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.cache import Codec, TtlPolicy
from fks_pipelines.providers.codec import decode_frame
from fks_pipelines.providers.state import WarnOnce
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.providers.support import (
    DAY,
    HOUR,
    KLINES,
    TICKER,
    day,
    encode_format_1,
    fetch_one_day,
    run_children,
    runtime,
)

OHLCV_KEY = re.compile(r"fks:v1:binance:ohlcv:[0-9a-f]{64}")
WEEK_S = 7 * 86400.0


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


@pytest.fixture(params=["redis", "disk"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Runtime settings selecting a cache backend: real Redis (emptied) or a disk cache."""
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {"cache_dir": tmp_path / "cache"}


def stored_keys(settings: dict[str, Any]) -> list[str]:
    """Cache entries as the backend itself lists them (not through the runtime)."""
    if "redis_url" in settings:
        client = redis.Redis.from_url(settings["redis_url"])
        try:
            return sorted(k.decode() for k in client.scan_iter("fks:v1:*:ohlcv:*"))
        finally:
            client.close()
    with diskcache.Cache(str(settings["cache_dir"])) as cache:
        return sorted(str(k) for k in cache.iterkeys())


def test_a_repeated_fetch_is_served_from_the_cache(
    server: FakeBinance, backend: dict[str, Any]
) -> None:
    with BinanceClient(server.url, runtime=runtime(**backend)) as client:
        first = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        second = client.fetch_ohlcv("BTCUSDT", HOUR, *day())

        assert len(server.requests_to(KLINES)) == 1
        assert (client.stats.requests, client.stats.cache_misses, client.stats.cache_hits) == (
            1,
            1,
            1,
        )
    pd.testing.assert_frame_equal(second, first, check_exact=True)
    assert len(first) == 24
    # Another process's runtime on the same backend reads the same entry.
    with BinanceClient(server.url, runtime=runtime(**backend)) as other:
        pd.testing.assert_frame_equal(other.fetch_ohlcv("BTCUSDT", HOUR, *day()), first)
        assert other.stats.cache_hits == 1
    assert len(server.requests_to(KLINES)) == 1


def test_entries_are_keyed_by_provider_endpoint_and_a_request_hash(
    server: FakeBinance, backend: dict[str, Any]
) -> None:
    with BinanceClient(server.url, runtime=runtime(**backend)) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", HOUR, *day(1))
        client.fetch_ohlcv("ETHUSDT", HOUR, *day())
        client.fetch_ohlcv("BTCUSDT", Interval.parse("1d"), *day())

    keys = stored_keys(backend)
    assert len(keys) == 4
    assert all(OHLCV_KEY.fullmatch(k) for k in keys), keys
    assert len(server.requests_to(KLINES)) == 4


def pttl_ms(client: redis.Redis, pattern: str = "fks:v1:binance:ohlcv:*") -> int:
    [name] = list(client.scan_iter(pattern))
    return int(client.pttl(name))


@pytest.mark.parametrize(
    ("now", "bound_s"),
    [("2024-01-05T10:30:00Z", 60.0), ("2024-01-05T10:59:30Z", 30.0)],
    ids=["open-ttl", "next-close-sooner"],
)
def test_a_window_reaching_now_is_kept_until_its_next_bar_closes_at_most(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis, now: str, bound_s: float
) -> None:
    clock_now = pd.Timestamp(now)
    server.now_ms = clock_now.value // 1_000_000
    rt = runtime(redis_url=redis_url, ttl=TtlPolicy(open_s=60.0))
    with BinanceClient(server.url, runtime=rt, clock=lambda: clock_now) as client:
        frame = client.fetch_ohlcv("BTCUSDT", HOUR, *day())

    assert frame["ts"].iloc[-1] == clock_now.floor("h") - pd.Timedelta(hours=1)
    assert 0 < pttl_ms(redis_client) <= bound_s * 1000


def test_a_closed_complete_window_is_kept_long(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    with BinanceClient(server.url, runtime=runtime(redis_url=redis_url)) as client:
        assert len(client.fetch_ohlcv("BTCUSDT", HOUR, *day())) == 24

    assert WEEK_S * 1000 - 60_000 < pttl_ms(redis_client) <= WEEK_S * 1000


def test_the_disk_backend_keeps_the_same_ttls(server: FakeBinance, tmp_path: Path) -> None:
    clock_now = pd.Timestamp("2024-01-05T10:59:30Z")
    server.now_ms = clock_now.value // 1_000_000
    with BinanceClient(
        server.url, runtime=runtime(cache_dir=tmp_path), clock=lambda: clock_now
    ) as client:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())  # reaches now
        client.fetch_ohlcv("BTCUSDT", HOUR, *day(-1))  # closed and complete

    with diskcache.Cache(str(tmp_path)) as cache:
        expiries = sorted(cache.get(k, expire_time=True)[1] for k in cache.iterkeys())
    now_s = pd.Timestamp.now(tz="UTC").timestamp()
    assert expiries[0] - now_s <= 30.0
    assert WEEK_S - 60 < expiries[1] - now_s <= WEEK_S


H = pd.Timedelta(hours=1)


@pytest.mark.parametrize(
    ("rows", "now", "policy", "expected"),
    [
        (24, DAY + pd.Timedelta(days=3), TtlPolicy(), WEEK_S),
        (24, DAY + pd.Timedelta(days=1), TtlPolicy(), WEEK_S),
        (20, DAY + pd.Timedelta(days=1, hours=2), TtlPolicy(), 60.0),
        (20, DAY + pd.Timedelta(days=2, seconds=1), TtlPolicy(), WEEK_S),
        (0, DAY + pd.Timedelta(days=1, hours=2), TtlPolicy(open_s=90.0), 90.0),
        (10, DAY + 10 * H + pd.Timedelta(minutes=30), TtlPolicy(), 60.0),
        (10, DAY + 10 * H + pd.Timedelta(minutes=30), TtlPolicy(open_s=3600.0), 1800.0),
        (10, DAY + 10 * H + pd.Timedelta(minutes=59, seconds=30), TtlPolicy(), 30.0),
        (10, DAY + 10 * H + pd.Timedelta(minutes=59, seconds=59.5), TtlPolicy(), 1.0),
    ],
    ids=[
        "closed-complete",
        "closed-complete-ending-now",
        "closed-incomplete-recent",
        "closed-incomplete-old",
        "closed-empty-recent",
        "open-capped-by-open-ttl",
        "open-capped-by-next-close",
        "open-next-close-in-30s",
        "open-at-least-1s",
    ],
)
def test_ttl_policy_by_window(
    rows: int, now: pd.Timestamp, policy: TtlPolicy, expected: float
) -> None:
    start, end = day()
    assert policy.window(HOUR, start, end, rows, now) == pytest.approx(expected)


def test_the_latest_price_is_cached_for_price_s(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    rt = runtime(redis_url=redis_url, ttl=TtlPolicy(price_s=0.3))
    with BinanceClient(server.url, runtime=rt) as client:
        first = client.latest_price("BTCUSDT")
        assert client.latest_price("BTCUSDT") == first
        assert len(server.requests_to(TICKER)) == 1
        [name] = list(redis_client.scan_iter("fks:v1:binance:price:*"))
        assert 0 < redis_client.pttl(name) <= 300

        wait_until_gone(redis_client, name)
        assert client.latest_price("BTCUSDT") == first

    assert len(server.requests_to(TICKER)) == 2
    assert (client.stats.cache_hits, client.stats.cache_misses) == (1, 2)


def test_a_price_result_says_whether_the_cache_served_it(
    server: FakeBinance, backend: dict[str, Any]
) -> None:
    with BinanceClient(server.url, runtime=runtime(**backend)) as client:
        first = client.latest_price_result("BTCUSDT")
        second = client.latest_price_result("BTCUSDT")

    assert (first.hit, second.hit) == (False, True)
    assert second.value == first.value
    assert len(server.requests_to(TICKER)) == 1


def wait_until_gone(client: redis.Redis, name: bytes, timeout_s: float = 3.0) -> None:
    """Wait for Redis itself to expire ``name``."""
    done = threading.Event()
    for _ in range(int(timeout_s / 0.02)):
        if not client.exists(name):
            return
        done.wait(0.02)
    raise AssertionError(f"{name!r} did not expire within {timeout_s} s")


def test_concurrent_identical_misses_make_one_request(
    server: FakeBinance, backend: dict[str, Any]
) -> None:
    server.latency_s = 0.3
    rt = runtime(**backend)
    start = threading.Barrier(8)
    results: list[tuple[pd.DataFrame, int, int]] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            with BinanceClient(server.url, runtime=rt) as client:
                start.wait(timeout=10)
                frame = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
                results.append((frame, client.stats.cache_hits, client.stats.cache_misses))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    assert len(server.requests_to(KLINES)) == 1
    assert sum(hits for _, hits, _ in results) == 7
    assert sum(misses for _, _, misses in results) == 1
    for frame, _, _ in results:
        pd.testing.assert_frame_equal(frame, results[0][0])


def test_a_load_may_read_other_keys_of_the_cache(backend: dict[str, Any]) -> None:
    """Alpha Vantage's daily window reads the cached daily history while it loads. It once
    deadlocked, by chance, when the two keys hashed to one local lock; 500 inner keys made that
    near certain (a miss of all 64 locks of old: p = (63/64)^500 < 0.001)."""
    cache = runtime(**backend).cache
    assert cache is not None
    raw: Codec[bytes] = Codec(bytes, bytes)
    inner = [f"fks:test:inner:{i}" for i in range(500)]

    def load_outer() -> bytes:
        return b"".join(cache.get_or_load(name, raw, lambda: b"x", ttl).value for name in inner)

    def ttl(_value: bytes) -> float:
        return 60.0

    result: dict[str, bytes] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            outer=cache.get_or_load("fks:test:outer", raw, load_outer, ttl).value
        ),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=60)

    assert not thread.is_alive(), "a load reading another key of the cache never finished"
    assert result["outer"] == b"x" * len(inner)


def test_concurrent_identical_misses_in_several_processes_make_one_request(
    server: FakeBinance, redis_url: str, redis_client: redis.Redis
) -> None:
    server.latency_s = 0.3

    results = run_children(fetch_one_day, [(server.url, redis_url)] * 4)

    assert len(server.requests_to(KLINES)) == 1
    assert sum(r["misses"] for r in results) == 1
    assert sum(r["hits"] for r in results) == 3
    assert sum(r["requests"] for r in results) == 1
    assert {(r["rows"], r["close_sum"]) for r in results} == {
        (results[0]["rows"], results[0]["close_sum"])
    }
    assert results[0]["rows"] == 24


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_redis_every_fetch_goes_upstream_and_one_warning_is_logged(
    server: FakeBinance, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "Redis unreachable" is warned once per process; start this test's process-wide record
    # afresh so that the result does not depend on which tests ran before.
    monkeypatch.setattr(runtime_module, "_warn", WarnOnce(runtime_module.log))
    caplog.set_level(logging.WARNING)
    url = f"redis://127.0.0.1:{closed_port()}/0"

    for _ in range(2):
        with BinanceClient(server.url, runtime=runtime(redis_url=url)) as client:
            frames = [client.fetch_ohlcv("BTCUSDT", HOUR, *day()) for _ in range(2)]
            assert client.stats.cache_hits == 0

    assert len(server.requests_to(KLINES)) == 4
    pd.testing.assert_frame_equal(frames[0], frames[1])
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "Redis" in warnings[0].getMessage()
    assert "unreachable" in warnings[0].getMessage()


@pytest.mark.parametrize("garbage", [b"garbage", b"\x00" * 64])
def test_a_corrupt_entry_is_dropped_refetched_and_replaced(
    server: FakeBinance,
    redis_url: str,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
    garbage: bytes,
) -> None:
    with BinanceClient(server.url, runtime=runtime(redis_url=redis_url)) as client:
        first = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        [name] = list(redis_client.scan_iter("fks:v1:binance:ohlcv:*"))
        redis_client.set(name, garbage, keepttl=True)

        with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.cache"):
            again = client.fetch_ohlcv("BTCUSDT", HOUR, *day())

        assert len(server.requests_to(KLINES)) == 2
        assert client.stats.cache_hits == 0
    pd.testing.assert_frame_equal(again, first)
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "corrupt" in warning.getMessage()
    stored = redis_client.get(name)
    assert stored is not None and stored != garbage
    pd.testing.assert_frame_equal(decode_frame(stored), first)


@pytest.mark.parametrize("store", ["redis", "disk"])
def test_an_entry_in_an_earlier_format_is_a_clean_miss(
    server: FakeBinance,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    store: str,
) -> None:
    """After a deploy that changed the codec (format 1 had no quote_volume or bar_kind), every
    cached window is refetched once and rewritten, without a warning: not an incident."""
    if store == "redis":
        settings: dict[str, Any] = {"redis_url": request.getfixturevalue("redis_url")}
        client_ = request.getfixturevalue("redis_client")
    else:
        settings = {"cache_dir": tmp_path / "cache"}
    with BinanceClient(server.url, runtime=runtime(**settings)) as client:
        first = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        [name] = stored_keys(settings)
        old = encode_format_1(first)
        if store == "redis":
            client_.set(name, old, keepttl=True)
        else:
            with diskcache.Cache(str(settings["cache_dir"])) as cache:
                cache.set(name, old)

        with caplog.at_level(logging.DEBUG, logger="fks_pipelines.providers.cache"):
            again = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
            third = client.fetch_ohlcv("BTCUSDT", HOUR, *day())

        assert len(server.requests_to(KLINES)) == 2  # refetched once, then served again
        assert (client.stats.cache_misses, client.stats.cache_hits) == (2, 1)
    pd.testing.assert_frame_equal(again, first)
    pd.testing.assert_frame_equal(third, first)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any("outdated" in r.getMessage() for r in caplog.records)
    if store == "redis":
        stored = client_.get(name)
    else:
        with diskcache.Cache(str(settings["cache_dir"])) as cache:
            stored = cache.get(name)
    assert stored != old
    pd.testing.assert_frame_equal(decode_frame(stored), first)


def test_a_corrupt_entry_on_disk_is_dropped_refetched_and_replaced(
    server: FakeBinance, tmp_path: Path
) -> None:
    with BinanceClient(server.url, runtime=runtime(cache_dir=tmp_path)) as client:
        first = client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        with diskcache.Cache(str(tmp_path)) as cache:
            [name] = list(cache.iterkeys())
            cache.set(name, b"garbage")
        again = client.fetch_ohlcv("BTCUSDT", HOUR, *day())

    assert len(server.requests_to(KLINES)) == 2
    pd.testing.assert_frame_equal(again, first)
    with diskcache.Cache(str(tmp_path)) as cache:
        pd.testing.assert_frame_equal(decode_frame(cache.get(name)), first)
