"""Retries and the server's word, through the Binance client, counted at the local server."""

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.errors import (
    ProviderError,
    RateLimited,
    TimedOut,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.http import Timeouts, parse_retry_after
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import HOUR, KLINES, Sleeps, day, runtime


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


def client_for(server: FakeBinance, sleeps: Sleeps, **config: object) -> BinanceClient:
    return BinanceClient(server.url, runtime=runtime(**config), sleep=sleeps)


def test_429_with_retry_after_is_retried_after_exactly_that_long(server: FakeBinance) -> None:
    server.scripted.append(
        Response.json(
            {"code": -1003, "msg": "Too many requests."}, status=429, headers={"Retry-After": "2"}
        )
    )
    sleeps = Sleeps()
    with client_for(server, sleeps) as client:
        frame = client.fetch_ohlcv("BTCUSDT", HOUR, *day())

        assert len(frame) == 24
        assert sleeps.calls == [2.0]
        assert client.stats.retries == 1
        assert client.stats.requests == 2
    first, second = server.requests_to(KLINES)
    # The limiter holds every caller for the pause too, so the retry reaches the server no
    # sooner than the server asked, whatever the injected sleep did.
    assert second.received_at - first.received_at >= 2.0


def test_server_errors_are_retried_with_bounded_exponential_backoff(server: FakeBinance) -> None:
    for _ in range(2):
        server.scripted.append(Response(status=500, body=b"<html>Internal error</html>"))
    sleeps = Sleeps()
    with client_for(server, sleeps, backoff_initial_s=0.5, backoff_max_s=0.75) as client:
        assert len(client.fetch_ohlcv("BTCUSDT", HOUR, *day())) == 24

        assert client.stats.retries == 2
    assert len(server.requests_to(KLINES)) == 3
    first, second = sleeps.calls
    assert 0 < first <= 0.5  # random in (0, initial]
    assert 0 < second <= 0.75  # random in (0, min(2 * initial, max)]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response.json({"code": -1121, "msg": "Invalid symbol."}, status=400), UnknownSymbol),
        (Response.json({"code": -2015, "msg": "Invalid API-key."}, status=401), Unauthorized),
    ],
    ids=["400-unknown-symbol", "401"],
)
def test_rejected_requests_are_not_retried(
    server: FakeBinance, answer: Response, error: type[ProviderError]
) -> None:
    server.scripted.extend([answer, answer])
    sleeps = Sleeps()
    with client_for(server, sleeps) as client, pytest.raises(error):
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
    assert len(server.requests_to(KLINES)) == 1
    assert sleeps.calls == []


def test_attempts_are_bounded(server: FakeBinance) -> None:
    server.scripted.extend(Response(status=503, body=b"unavailable") for _ in range(5))
    sleeps = Sleeps()
    with client_for(server, sleeps, max_attempts=3) as client:
        with pytest.raises(Unavailable) as caught:
            client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        assert client.stats.retries == 2
    assert caught.value.status == 503
    assert len(server.requests_to(KLINES)) == 3
    assert len(sleeps.calls) == 2


def test_a_read_timeout_is_retried(server: FakeBinance) -> None:
    slow = Response.json([])
    slow.delay_s = 1.0
    server.scripted.append(slow)
    sleeps = Sleeps()
    with client_for(server, sleeps, timeouts=Timeouts(connect=1, read=0.2)) as client:
        assert len(client.fetch_ohlcv("BTCUSDT", HOUR, *day())) == 24

        assert client.stats.retries == 1
        assert client.stats.errors == 1
    assert len(server.requests_to(KLINES)) == 2
    assert len(sleeps.calls) == 1


def test_a_timeout_on_the_last_attempt_is_raised_as_timed_out(server: FakeBinance) -> None:
    slow = Response.json([])
    slow.delay_s = 1.0
    server.scripted.append(slow)
    client = client_for(server, Sleeps(), max_attempts=1, timeouts=Timeouts(connect=1, read=0.2))
    with client, pytest.raises(TimedOut, match="klines: timed out"):
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())


def test_a_429_on_the_last_attempt_is_raised_with_its_retry_after(server: FakeBinance) -> None:
    server.scripted.append(
        Response.json(
            {"code": -1003, "msg": "Too many requests."}, status=429, headers={"Retry-After": "7"}
        )
    )
    sleeps = Sleeps()
    with client_for(server, sleeps, max_attempts=1) as client, pytest.raises(RateLimited) as caught:
        client.fetch_ohlcv("BTCUSDT", HOUR, *day())
    assert caught.value.retry_after == 7
    assert sleeps.calls == []


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 0.5 ", 0.5),
        ("-3", 0.0),
        ("Sat, 05 Jan 2030 10:00:30 GMT", 30.0),
        ("Sat, 05 Jan 2030 09:59:00 GMT", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    now = datetime(2030, 1, 5, 10, 0, 0, tzinfo=UTC)
    assert parse_retry_after(header, now) == seconds
