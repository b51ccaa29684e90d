"""The CoinMarketCap client against a real local server speaking the CMC Pro API wire format."""

import traceback
from collections.abc import Iterator

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.coinmarketcap import (
    KEY_VARIABLE,
    PROVIDER,
    CoinMarketCapClient,
)
from fks_pipelines.providers.errors import (
    BadPayload,
    MissingCredentials,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    SlotTimeout,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.http import Timeouts
from fks_pipelines_tests.fakes.coinmarketcap import (
    OHLCV,
    QUOTES,
    RATE_LIMIT_MESSAGE,
    FakeCoinMarketCap,
    envelope,
    error,
    expected_frame,
)
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import Sleeps, assert_bars, runtime

KEY = "cmc-secret-5f1d2c9a7b"
DAY = pd.Timestamp("2024-01-05", tz="UTC")
HOURLY = Interval.parse("1h")
DAILY = Interval.parse("1d")


@pytest.fixture
def server() -> Iterator[FakeCoinMarketCap]:
    with FakeCoinMarketCap(api_key=KEY) as fake:
        yield fake


def make_client(
    server: FakeCoinMarketCap, key: str = KEY, **config: object
) -> tuple[CoinMarketCapClient, Sleeps]:
    sleeps = Sleeps()
    settings: dict[str, object] = {"max_attempts": 1, **config}
    rt = runtime(CoinMarketCapClient.LIMITS, provider=PROVIDER, **settings)
    return CoinMarketCapClient(key, server.url, runtime=rt, sleep=sleeps), sleeps


@pytest.fixture
def client(server: FakeCoinMarketCap) -> Iterator[CoinMarketCapClient]:
    c, _ = make_client(server)
    with c:
        yield c


def credits_used(client: CoinMarketCapClient) -> tuple[int, int]:
    usage = client.http.runtime.limiter.quota_usage()
    return usage["quota_day_credits_used"], usage["quota_month_credits_used"]


def test_one_day_of_hourly_bars_is_one_request_of_one_credit(
    server: FakeCoinMarketCap, client: CoinMarketCapClient
) -> None:
    frame = client.fetch_ohlcv("1", HOURLY, DAY, DAY + pd.Timedelta(days=1))

    expected = expected_frame("2024-01-05", "2024-01-06", "1h")
    assert_bars(
        frame,
        provider="coinmarketcap",
        symbol="1",
        interval="1h",
        ts=expected["ts"],
        open=expected["open"],
        high=expected["high"],
        low=expected["low"],
        close=expected["close"],
        volume=None,  # CMC states USD turnover only
        quote_volume=expected["quote_volume"],
        vwap=None,
        trades=None,
        bar_kind="traded",
    )
    [request] = server.requests
    assert request.path == OHLCV
    # time_start is exclusive: one period before the first bar; time_end (inclusive) is the
    # open of the last bar; interval must repeat time_period or CMC samples one bar a day.
    assert request.query == {
        "id": "1",
        "time_period": "hourly",
        "interval": "hourly",
        "time_start": "2024-01-04T23:00:00Z",
        "time_end": "2024-01-05T23:00:00Z",
        "count": "24",
        "convert": "USD",
    }
    assert request.headers["x-cmc_pro_api_key"] == KEY
    assert KEY not in str(request.query)
    assert client.stats.requests == 1
    assert credits_used(client) == (1, 1)


def test_a_week_of_daily_bars_sends_dates(
    server: FakeCoinMarketCap, client: CoinMarketCapClient
) -> None:
    frame = client.fetch_ohlcv("1027", DAILY, DAY, DAY + pd.Timedelta(days=7))

    expected = expected_frame("2024-01-05", "2024-01-12", "1d")
    assert frame["ts"].tolist() == expected["ts"].tolist()
    assert frame["close"].tolist() == expected["close"].tolist()
    [request] = server.requests_to(OHLCV)
    assert {k: request.query[k] for k in ("time_period", "interval", "time_start", "time_end")} == {
        "time_period": "daily",
        "interval": "daily",
        "time_start": "2024-01-04",
        "time_end": "2024-01-11",
    }
    assert request.query["count"] == "7"


def test_long_windows_walk_pages_of_10000_periods(
    server: FakeCoinMarketCap, client: CoinMarketCapClient
) -> None:
    start, end = pd.Timestamp("2022-01-01", tz="UTC"), pd.Timestamp("2024-01-01", tz="UTC")

    frame = client.fetch_ohlcv("5426", HOURLY, start, end)

    assert len(frame) == 17_520
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert frame["ts"].iloc[0] == start and frame["ts"].iloc[-1] == end - pd.Timedelta(hours=1)
    requests = server.requests_to(OHLCV)
    assert [(r.query["time_start"], r.query["time_end"], r.query["count"]) for r in requests] == [
        ("2021-12-31T23:00:00Z", "2023-02-21T15:00:00Z", "10000"),
        ("2023-02-21T15:00:00Z", "2023-12-31T23:00:00Z", "7520"),
    ]
    assert credits_used(client) == (100 + 76, 100 + 76)


def test_credits_are_settled_to_what_cmc_charged(server: FakeCoinMarketCap) -> None:
    # 300 hours asked (3 credits reserved); the coin has only the last 50 (CMC charges 1).
    server.listed_from["5426"] = DAY + pd.Timedelta(hours=250)
    client, _ = make_client(server)
    with client:
        frame = client.fetch_ohlcv("5426", HOURLY, DAY, DAY + pd.Timedelta(hours=300))

    assert len(frame) == 50
    assert server.credits_charged == 1
    assert credits_used(client) == (1, 1)


def test_periods_not_closed_yet_are_never_asked_for(server: FakeCoinMarketCap) -> None:
    now = pd.Timestamp("2024-01-05T10:30:00Z")
    server.now = now
    client, _ = make_client(server)
    client.clock = lambda: now
    with client:
        frame = client.fetch_ohlcv("1", HOURLY, DAY, DAY + pd.Timedelta(days=1))
        today = client.fetch_ohlcv("1", DAILY, DAY, DAY + pd.Timedelta(days=1))

    assert frame["ts"].iloc[-1] == pd.Timestamp("2024-01-05T09:00:00Z") and len(frame) == 10
    [request] = server.requests_to(OHLCV)  # the open day asked nothing
    assert (request.query["time_end"], request.query["count"]) == ("2024-01-05T09:00:00Z", "10")
    assert today.empty


def test_unsupported_interval_is_refused_before_sending(
    server: FakeCoinMarketCap, client: CoinMarketCapClient
) -> None:
    with pytest.raises(ValueError, match="1h and 1d"):
        client.fetch_ohlcv("1", Interval.parse("4h"), DAY, DAY + pd.Timedelta(days=1))
    assert server.requests == []


def test_unknown_id(server: FakeCoinMarketCap, client: CoinMarketCapClient) -> None:
    with pytest.raises(UnknownSymbol) as caught:
        client.fetch_ohlcv("999999999", DAILY, DAY, DAY + pd.Timedelta(days=2))
    assert (caught.value.status, caught.value.vendor_code) == (400, 400)

    with pytest.raises(UnknownSymbol, match="not a CMC numeric id"):
        client.latest_price("BTC")  # a ticker is not an id: refused without a request
    assert len(server.requests) == 1


def test_rate_limit_429_is_retried_after_the_wait_cmc_asks(server: FakeCoinMarketCap) -> None:
    server.scripted.append(
        Response.json(
            envelope(None, 0, error_code=1008, message=RATE_LIMIT_MESSAGE),
            status=429,
            headers={"Retry-After": "0"},
        )
    )
    client, sleeps = make_client(server, max_attempts=2)
    with client:
        frame = client.fetch_ohlcv("1", DAILY, DAY, DAY + pd.Timedelta(days=2))

    assert len(frame) == 2
    assert len(server.requests_to(OHLCV)) == 2
    assert client.stats.retries == 1 and sleeps.calls == [0.0]


def test_rate_limit_without_retry_after_waits_for_the_minute(
    server: FakeCoinMarketCap, client: CoinMarketCapClient
) -> None:
    server.scripted.append(error(429, 1008, RATE_LIMIT_MESSAGE))
    with pytest.raises(RateLimited) as caught:
        client.latest_price("1")
    assert (caught.value.status, caught.value.vendor_code) == (429, 1008)
    assert caught.value.retry_after == 60


def test_error_code_in_an_http_200_body_is_a_rate_limit_that_holds_every_process(
    server: FakeCoinMarketCap,
) -> None:
    server.scripted.append(Response.json(envelope({}, 0, error_code=1008, message="")))  # 200
    client, sleeps = make_client(server, max_attempts=2, limiter_max_wait_s=5)
    with client, pytest.raises(SlotTimeout) as caught:
        client.latest_price("1")

    # Retried after CMC's 60 s window, like a 429; the shared limiter holds that pause too, so
    # the retry is not sent while it lasts (here: longer than the 5 s this runtime may wait).
    assert sleeps.calls == [60.0]
    assert len(server.requests) == 1
    assert caught.value.retry_after is not None and caught.value.retry_after > 55


@pytest.mark.parametrize("code", [1009, 1010])
def test_credit_limits_are_quota_exhausted_and_not_retried(
    server: FakeCoinMarketCap, code: int
) -> None:
    server.scripted.extend([error(429, code, "credit limit reached")] * 3)
    client, sleeps = make_client(server, max_attempts=3)
    with client, pytest.raises(QuotaExhausted) as caught:
        client.fetch_ohlcv("1", DAILY, DAY, DAY + pd.Timedelta(days=2))

    assert (caught.value.status, caught.value.vendor_code) == (429, code)
    assert len(server.requests) == 1 and sleeps.calls == []


def test_our_own_daily_credit_quota_stops_requests_before_cmc_does(
    server: FakeCoinMarketCap, client: CoinMarketCapClient
) -> None:
    # 400 days of hourly bars = 9600 points = 96 credits a request; 333 a day fit three.
    for k in range(3):
        start = DAY + pd.Timedelta(days=400 * k)
        client.fetch_ohlcv("1", HOURLY, start, start + pd.Timedelta(days=400))
    with pytest.raises(QuotaExhausted, match="daily credits quota of 333"):
        client.fetch_ohlcv("1", HOURLY, DAY, DAY + pd.Timedelta(days=400))
    assert len(server.requests) == 3


def test_server_errors_are_retried_then_unavailable(server: FakeCoinMarketCap) -> None:
    server.scripted.extend([error(500, 500, "An internal server error occurred")] * 2)
    client, sleeps = make_client(server, max_attempts=2)
    with client, pytest.raises(Unavailable) as caught:
        client.latest_price("1")
    assert (caught.value.status, caught.value.vendor_code) == (500, 500)
    assert len(server.requests) == 2 and len(sleeps.calls) == 1


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Response(status=502, body=b"<html>Bad Gateway</html>"), Unavailable),
        (Response(status=200, body=b"<html>maintenance</html>"), BadPayload),
        (Response(status=200, body=b"time_open,open\n2024-01-05,1\n"), BadPayload),
        (Response.json(envelope({"unexpected": "shape"})), BadPayload),
        (Response.json(envelope({"id": 1, "quotes": [{"time_open": "x"}]})), BadPayload),
        (
            error(403, 1006, "Your API Key subscription plan doesn't support this endpoint."),
            Unauthorized,
        ),
    ],
    ids=["502-html", "200-html", "200-csv", "200-other-shape", "200-bad-rows", "403-plan"],
)
def test_error_answers_become_typed_errors(
    server: FakeCoinMarketCap, client: CoinMarketCapClient, answer: Response, expected: type
) -> None:
    server.scripted.append(answer)
    with pytest.raises(expected) as caught:
        client.fetch_ohlcv("1", DAILY, DAY, DAY + pd.Timedelta(days=2))
    assert caught.value.provider == "coinmarketcap"


def everything_about(error: BaseException) -> str:
    return "".join(
        [str(error), repr(error), *map(str, error.args), *traceback.format_exception(error)]
    )


def test_the_key_never_appears_in_errors(server: FakeCoinMarketCap) -> None:
    wrong = "cmc-wrong-key-3e8a1f"
    client, _ = make_client(server, key=wrong)
    with client, pytest.raises(Unauthorized) as caught:
        client.fetch_ohlcv("1", DAILY, DAY, DAY + pd.Timedelta(days=2))
    assert (caught.value.status, caught.value.vendor_code) == (401, 1001)
    assert wrong not in everything_about(caught.value)

    client, _ = make_client(server, breaker_failures=100, timeouts=Timeouts(connect=1, read=0.2))
    slow = Response.json(envelope({}))
    slow.delay_s = 0.5
    failures: list[tuple[Response, type[ProviderError]]] = [
        (error(500, 500, None), Unavailable),
        (error(400, 400, 'Invalid value for "id": "1"'), UnknownSymbol),
        (slow, Unavailable),
        (error(429, 1008, RATE_LIMIT_MESSAGE), RateLimited),  # last: it pauses the limiter
    ]
    with client:
        for answer, expected in failures:
            server.scripted.append(answer)
            with pytest.raises(expected) as caught:
                client.latest_price("1")
            assert KEY not in everything_about(caught.value)


@pytest.mark.parametrize("key", [None, ""])
def test_missing_key_fails_at_construction(key: str | None) -> None:
    with pytest.raises(MissingCredentials, match=KEY_VARIABLE):
        CoinMarketCapClient(key, "http://127.0.0.1:9")


def test_latest_price(server: FakeCoinMarketCap, client: CoinMarketCapClient) -> None:
    server.now = pd.Timestamp("2024-01-05T12:34:56Z")

    quote = client.latest_price("1027")

    assert quote.symbol == "1027" and quote.provider == "coinmarketcap"
    assert quote.price == server.quote_price("1027")
    assert quote.ts == pd.Timestamp("2024-01-05T12:34:00Z")
    [request] = server.requests
    assert request.path == QUOTES
    assert request.query == {"id": "1027", "convert": "USD"}
    assert request.headers["x-cmc_pro_api_key"] == KEY
    assert credits_used(client) == (1, 1)
