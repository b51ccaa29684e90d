"""Failover between real local provider servers for one canonical instrument."""

from collections.abc import Iterator
from contextlib import nullcontext

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import load_universe
from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.errors import MissingCredentials
from fks_pipelines.providers.failover import FailoverManager, NoProviderServed
from fks_pipelines.providers.polygon import PolygonClient
from fks_pipelines.providers.runtime import ProviderRuntime
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.polygon import FakePolygon
from fks_pipelines_tests.providers.support import runtime

DAY = pd.Timestamp("2024-01-05", tz="UTC")
HOUR = Interval.parse("1h")


@pytest.fixture
def servers() -> Iterator[tuple[FakeBinance, FakePolygon]]:
    with FakeBinance() as binance, FakePolygon() as polygon:
        yield binance, polygon


def manager(
    binance: FakeBinance, polygon: FakePolygon, binance_runtime: ProviderRuntime | None = None
) -> FailoverManager:
    binance_rt = binance_runtime or runtime(BinanceClient.LIMITS, max_attempts=1)
    polygon_rt = runtime(PolygonClient.LIMITS, "polygon", max_attempts=1)
    return FailoverManager(
        load_universe(),
        {
            "binance": lambda: BinanceClient(binance.url, runtime=binance_rt),
            "polygon": lambda: PolygonClient(polygon.api_key, polygon.url, runtime=polygon_rt),
        },
        priority=("binance", "polygon"),
    )


def test_routes_follow_the_priority_among_providers_listing_the_instrument(
    servers: tuple[FakeBinance, FakePolygon],
) -> None:
    assert manager(*servers).routes("BTC-USD") == [("binance", "BTCUSDT"), ("polygon", "X:BTCUSD")]
    assert manager(*servers).routes("AAPL") == [("polygon", "AAPL")]


def test_the_primary_serves_when_it_can(servers: tuple[FakeBinance, FakePolygon]) -> None:
    binance, polygon = servers

    served = manager(binance, polygon).fetch_ohlcv("BTC-USD", HOUR, DAY, DAY + pd.Timedelta(days=1))

    assert (served.provider, served.symbol) == ("binance", "BTCUSDT")
    assert len(served.value) == 24
    assert [a.outcome for a in served.attempts] == ["served"]
    assert polygon.requests == []


def test_a_failing_primary_fails_over(servers: tuple[FakeBinance, FakePolygon]) -> None:
    binance, polygon = servers
    binance.failing_symbols.add("BTCUSDT")

    served = manager(binance, polygon).fetch_ohlcv("BTC-USD", HOUR, DAY, DAY + pd.Timedelta(days=1))

    assert (served.provider, served.symbol) == ("polygon", "X:BTCUSD")
    assert set(served.value["provider"]) == {"polygon"}
    assert [(a.provider, a.outcome) for a in served.attempts] == [
        ("binance", "failed"),
        ("polygon", "served"),
    ]
    assert "server error" in served.attempts[0].detail


def test_an_open_circuit_is_skipped_without_a_request(
    servers: tuple[FakeBinance, FakePolygon],
) -> None:
    binance, polygon = servers
    binance_rt = runtime(BinanceClient.LIMITS, max_attempts=1)
    binance_rt.breaker.record_failure(open_for_s=60)

    served = manager(binance, polygon, binance_rt).latest_price("BTC-USD")

    assert served.provider == "polygon"
    assert served.attempts[0].outcome == "circuit_open"
    assert binance.requests == []


def test_an_empty_window_is_incomplete_and_fails_over(
    servers: tuple[FakeBinance, FakePolygon],
) -> None:
    binance, polygon = servers
    binance.now_ms = (DAY - pd.Timedelta(days=30)).value // 1_000_000  # nothing there yet

    served = manager(binance, polygon).fetch_ohlcv("BTC-USD", HOUR, DAY, DAY + pd.Timedelta(days=1))

    assert served.provider == "polygon"
    assert [a.outcome for a in served.attempts] == ["incomplete", "served"]


def test_a_missing_key_or_interval_makes_a_provider_unavailable(
    servers: tuple[FakeBinance, FakePolygon],
) -> None:
    binance, _ = servers
    binance.failing_symbols.add("BTCUSDT")

    def no_key() -> PolygonClient:
        raise MissingCredentials("polygon", "POLYGON_API_KEY")

    failover = FailoverManager(
        load_universe(),
        {
            "binance": lambda: BinanceClient(
                binance.url, runtime=runtime(BinanceClient.LIMITS, max_attempts=1)
            ),
            "polygon": no_key,
        },
        priority=("binance", "polygon"),
    )
    with pytest.raises(NoProviderServed) as caught:
        failover.fetch_ohlcv("BTC-USD", HOUR, DAY, DAY + pd.Timedelta(days=1))

    assert [(a.provider, a.outcome) for a in caught.value.attempts] == [
        ("binance", "failed"),
        ("polygon", "unavailable"),
    ]
    assert "POLYGON_API_KEY" in str(caught.value)


def test_an_answer_still_cached_is_served_while_the_circuit_is_open(
    servers: tuple[FakeBinance, FakePolygon], redis_url: str, redis_client: object
) -> None:
    binance, polygon = servers
    binance_rt = runtime(BinanceClient.LIMITS, max_attempts=1, redis_url=redis_url)
    failover = manager(binance, polygon, binance_rt)
    first = failover.latest_price("BTC-USD")
    binance_rt.breaker.record_failure(open_for_s=60)

    second = failover.latest_price("BTC-USD")

    assert (first.provider, second.provider) == ("binance", "binance")
    assert second.value == first.value
    assert len(binance.requests) == 1
    assert polygon.requests == []


def test_a_long_lived_client_is_left_open_for_the_next_call(
    servers: tuple[FakeBinance, FakePolygon],
) -> None:
    binance, _ = servers
    client = BinanceClient(binance.url, runtime=runtime(BinanceClient.LIMITS, max_attempts=1))
    failover = FailoverManager(
        load_universe(), {"binance": lambda: nullcontext(client)}, priority=("binance",)
    )

    with client:
        first = failover.latest_price("ETH-USD")
        second = failover.latest_price("SOL-USD")

    assert (first.symbol, second.symbol) == ("ETHUSDT", "SOLUSDT")
    assert len(binance.requests) == 2


def test_an_instrument_nobody_lists_names_itself(servers: tuple[FakeBinance, FakePolygon]) -> None:
    with pytest.raises(NoProviderServed, match="DOGE-USD"):
        manager(*servers).latest_price("DOGE-USD")


def test_the_default_universe_orders_exchanges_before_aggregators() -> None:
    universe = load_universe()
    assert universe.priority[:2] == ("binance", "polygon")
    assert set(universe.priority) == set(universe.providers)
