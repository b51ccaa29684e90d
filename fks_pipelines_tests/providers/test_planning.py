"""Request-minimal backfills: partitions served from whole pages counted from an anchor."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.eodhd import EodhdClient
from fks_pipelines.providers.ratelimit import Window
from fks_pipelines_tests.fakes.binance import FakeBinance, expected_frame
from fks_pipelines_tests.fakes.eodhd import FakeEodhd
from fks_pipelines_tests.providers.support import runtime

ANCHOR = pd.Timestamp("2024-01-01", tz="UTC")
HOUR = Interval.parse("1h")
DAY = Interval.parse("1d")
FAST = replace(BinanceClient.LIMITS, requests=(Window.per_second(1000),))


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


def days(first: pd.Timestamp, count: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    return [(first + pd.Timedelta(days=k), first + pd.Timedelta(days=k + 1)) for k in range(count)]


def test_a_year_of_hourly_partitions_costs_six_requests(
    server: FakeBinance, tmp_path: Path
) -> None:
    client = BinanceClient(server.url, runtime=runtime(FAST, cache_dir=tmp_path))
    year = days(ANCHOR, 366)  # 2024: 8,784 hourly bars = 5.9 pages of 1,500

    frames = [client.fetch_ohlcv("BTCUSDT", HOUR, s, e, anchor=ANCHOR) for s, e in year]

    requests = server.requests_to("/fapi/v1/klines")
    assert len(requests) == 6
    assert {r.query["limit"] for r in requests} == {"1500"}
    assert [int(r.query["startTime"]) for r in requests] == [
        (ANCHOR + k * 1500 * HOUR.offset).value // 1_000_000 for k in range(6)
    ]
    assert all(len(frame) == 24 for frame in frames)
    whole = pd.concat(frames, ignore_index=True)
    expected = expected_frame("BTCUSDT", "1h", "2024-01-01", "2025-01-01")
    assert whole["ts"].tolist() == expected["ts"].tolist()
    assert client.stats.cache_hits == 366 - 6 + sum(1 for s, e in year if _crosses(s, e))


def _crosses(start: pd.Timestamp, end: pd.Timestamp) -> bool:
    """Whether a day straddles two pages (it then reads two cached pages)."""
    span = 1500 * HOUR.offset
    return (start - ANCHOR) // span != (end - pd.Timedelta(1, "ns") - ANCHOR) // span


def test_a_partition_inside_a_page_is_its_page_sliced(server: FakeBinance, tmp_path: Path) -> None:
    client = BinanceClient(server.url, runtime=runtime(FAST, cache_dir=tmp_path))
    start = ANCHOR + pd.Timedelta(days=40)

    frame = client.fetch_ohlcv("ETHUSDT", HOUR, start, start + pd.Timedelta(days=1), anchor=ANCHOR)

    [request] = server.requests_to("/fapi/v1/klines")
    assert int(request.query["startTime"]) == ANCHOR.value // 1_000_000
    assert frame["ts"].min() == start and len(frame) == 24


def test_without_an_anchor_the_window_is_fetched_as_asked(server: FakeBinance) -> None:
    client = BinanceClient(server.url, runtime=runtime(FAST))
    start = ANCHOR + pd.Timedelta(days=40)

    client.fetch_ohlcv("ETHUSDT", HOUR, start, start + pd.Timedelta(days=1))

    [request] = server.requests_to("/fapi/v1/klines")
    assert request.query["limit"] == "24"
    assert int(request.query["startTime"]) == start.value // 1_000_000


def test_daily_partitions_of_a_whole_range_provider_share_one_request(tmp_path: Path) -> None:
    limits = replace(EodhdClient.LIMITS, requests=(Window.per_second(1000),))
    with FakeEodhd() as server:
        client = EodhdClient(
            server.api_key, server.base_url, runtime=runtime(limits, "eodhd", cache_dir=tmp_path)
        )
        frames = [
            client.fetch_ohlcv("AAPL.US", DAY, s, e, anchor=ANCHOR) for s, e in days(ANCHOR, 31)
        ]
        bar_requests = [r for r in server.requests if "/eod/" in r.path]

    assert len(bar_requests) == 1
    assert sum(len(frame) for frame in frames) == 23  # the fake trades every weekday of January


def test_the_page_still_open_is_not_refetched_whole(server: FakeBinance, tmp_path: Path) -> None:
    """The daily run of yesterday's partition asks for that day only, not its growing page."""
    now = pd.Timestamp("2024-02-20T00:30:00Z")  # the first page runs until 2024-03-03 12:00
    client = BinanceClient(server.url, runtime=runtime(FAST, cache_dir=tmp_path), clock=lambda: now)
    yesterday = pd.Timestamp("2024-02-19", tz="UTC")

    frame = client.fetch_ohlcv(
        "BTCUSDT", HOUR, yesterday, yesterday + pd.Timedelta(days=1), anchor=ANCHOR
    )

    [request] = server.requests_to("/fapi/v1/klines")
    assert request.query["limit"] == "24"
    assert int(request.query["startTime"]) == yesterday.value // 1_000_000
    assert len(frame) == 24
