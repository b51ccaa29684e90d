"""The Binance client against a real local server speaking the Binance wire format."""

from collections.abc import Iterator

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.errors import (
    BadPayload,
    Banned,
    RateLimited,
    RequestRejected,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.http import Timeouts
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, build_runtime
from fks_pipelines_tests.fakes.binance import FakeBinance, expected_frame
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import assert_bars

DAY = pd.Timestamp("2024-01-05", tz="UTC")


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


def runtime(**config: object) -> ProviderRuntime:
    """A fresh runtime (no cache, in-process limits) so that no state leaks between tests."""
    settings = {"timeouts": Timeouts(connect=2, read=2), "max_attempts": 1, **config}
    return build_runtime("binance", BinanceClient.LIMITS, RuntimeConfig(**settings))


@pytest.fixture
def client(server: FakeBinance) -> Iterator[BinanceClient]:
    with BinanceClient(server.url, runtime=runtime()) as c:
        yield c


def test_one_day_of_hourly_bars_is_one_small_request(
    server: FakeBinance, client: BinanceClient
) -> None:
    frame = client.fetch_ohlcv("BTCUSDT", Interval.parse("1h"), DAY, DAY + pd.Timedelta(days=1))

    expected = expected_frame("BTCUSDT", "1h", "2024-01-05", "2024-01-06")
    # as the server writes them: prices to 2 decimals, volume to 3, quote volume to 5
    volume, quote_volume = expected["volume"].round(3), expected["quote_volume"].round(5)
    assert_bars(
        frame,
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=expected["ts"],
        open=expected["open"].round(2),
        high=expected["high"].round(2),
        low=expected["low"].round(2),
        close=expected["close"].round(2),
        volume=volume,
        quote_volume=quote_volume,
        vwap=quote_volume / volume,
        trades=expected["trades"],
        bar_kind="traded",
    )
    [request] = server.requests_to("/fapi/v1/klines")
    assert request.query == {
        "symbol": "BTCUSDT",
        "interval": "1h",
        "startTime": str(DAY.value // 1_000_000),
        "endTime": str((DAY + pd.Timedelta(days=1)).value // 1_000_000 - 1),
        "limit": "24",
    }
    assert client.stats.requests == 1


def test_long_windows_walk_pages_of_1500_bars(server: FakeBinance, client: BinanceClient) -> None:
    end = DAY + pd.Timedelta(days=3)

    frame = client.fetch_ohlcv("ETHUSDT", Interval.parse("1m"), DAY, end)

    assert len(frame) == 3 * 1440
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    requests = server.requests_to("/fapi/v1/klines")
    assert [r.query["limit"] for r in requests] == ["1500", "1500", "1320"]
    assert [int(r.query["startTime"]) for r in requests] == [
        DAY.value // 1_000_000 + k * 1500 * 60_000 for k in range(3)
    ]


def test_window_reaching_now_drops_the_open_bar(server: FakeBinance) -> None:
    now = pd.Timestamp("2024-01-05T10:30:00Z")
    server.now_ms = now.value // 1_000_000
    with BinanceClient(server.url, runtime=runtime(), clock=lambda: now) as client:
        frame = client.fetch_ohlcv("BTCUSDT", Interval.parse("1h"), DAY, DAY + pd.Timedelta(days=1))

    # The server returned the 10:00 bar while still open; only closed bars 00:00..09:00 remain.
    assert frame["ts"].iloc[-1] == pd.Timestamp("2024-01-05T09:00:00Z")
    assert len(frame) == 10


def test_unknown_symbol(client: BinanceClient) -> None:
    with pytest.raises(UnknownSymbol) as caught:
        client.fetch_ohlcv("NOPEUSDT", Interval.parse("1h"), DAY, DAY + pd.Timedelta(days=1))
    assert (caught.value.status, caught.value.vendor_code) == (400, -1121)


def test_rate_limit_answer_carries_retry_after(server: FakeBinance, client: BinanceClient) -> None:
    server.scripted.append(
        Response.json(
            {"code": -1003, "msg": "Too many requests."}, status=429, headers={"Retry-After": "3"}
        )
    )
    with pytest.raises(RateLimited) as caught:
        client.fetch_ohlcv("BTCUSDT", Interval.parse("1h"), DAY, DAY + pd.Timedelta(days=1))
    assert caught.value.retry_after == 3
    assert caught.value.status == 429


def test_ip_ban_is_banned(server: FakeBinance, client: BinanceClient) -> None:
    server.scripted.append(
        Response.json(
            {"code": -1003, "msg": "Way too many requests; IP banned until 4102444800000."},
            status=418,
            headers={"Retry-After": "120"},
        )
    )
    with pytest.raises(Banned) as caught:
        client.latest_price("BTCUSDT")
    assert caught.value.retry_after == 120


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response(status=502, body=b"<html>Bad Gateway</html>"), Unavailable),
        (Response(status=200, body=b"<html>maintenance</html>"), BadPayload),
        (Response.json({"unexpected": "object"}), BadPayload),
        (Response(status=403, body=b"blocked"), RequestRejected),
    ],
    ids=["502-html", "200-html", "200-object", "403-waf"],
)
def test_error_answers_become_typed_errors(
    server: FakeBinance, client: BinanceClient, answer: Response, error: type
) -> None:
    server.scripted.append(answer)
    with pytest.raises(error) as caught:
        client.fetch_ohlcv("BTCUSDT", Interval.parse("1h"), DAY, DAY + pd.Timedelta(days=1))
    assert caught.value.provider == "binance"


def test_read_timeout_reaches_the_request(server: FakeBinance) -> None:
    slow = Response.json({"symbol": "BTCUSDT", "price": "1", "time": 1})
    slow.delay_s = 1.0
    server.scripted.append(slow)
    client = BinanceClient(server.url, runtime=runtime(timeouts=Timeouts(connect=1, read=0.2)))
    with client, pytest.raises(Unavailable, match="timed out"):
        client.latest_price("BTCUSDT")


def test_connection_refused_is_unavailable() -> None:
    with FakeBinance() as stopped:
        url = stopped.url
    client = BinanceClient(url, runtime=runtime())
    with client, pytest.raises(Unavailable, match="connection failed"):
        client.latest_price("BTCUSDT")


def test_latest_price(server: FakeBinance, client: BinanceClient) -> None:
    quote = client.latest_price("SOLUSDT")
    assert quote.symbol == "SOLUSDT"
    assert quote.price > 0
    assert quote.ts == pd.Timestamp(server.now_ms, unit="ms", tz="UTC")
