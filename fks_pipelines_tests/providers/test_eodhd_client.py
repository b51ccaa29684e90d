"""The EODHD client against a real local server speaking the EODHD wire format."""

import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from fks_pipelines.market.frame import validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.eodhd import PROVIDER, EodhdClient
from fks_pipelines.providers.errors import (
    BadPayload,
    MissingCredentials,
    QuotaExhausted,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.ratelimit import ProviderLimits, Quota
from fks_pipelines_tests.fakes.eodhd import (
    FREE_TIER_WARNING,
    FakeEodhd,
    expected_daily,
    expected_intraday,
)
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import Sleeps, assert_bars, runtime

KEY = "fake-eodhd-token"
SUMMER_DAY = pd.Timestamp("2024-07-01", tz="UTC")  # a Monday, New York on EDT (UTC-4)
WINTER_DAY = pd.Timestamp("2024-01-05", tz="UTC")  # a Friday, New York on EST (UTC-5)
ONE_DAY = pd.Timedelta(days=1)
M5 = Interval.parse("5m")


def eodhd_runtime(limits: ProviderLimits = EodhdClient.LIMITS, **config: Any) -> Any:
    return runtime(limits, provider=PROVIDER, **{"max_attempts": 1, **config})


@pytest.fixture
def server() -> Iterator[FakeEodhd]:
    with FakeEodhd(api_key=KEY) as fake:
        yield fake


@pytest.fixture
def client(server: FakeEodhd) -> Iterator[EodhdClient]:
    with EodhdClient(KEY, server.base_url, runtime=eodhd_runtime()) as c:
        yield c


def seconds(ts: pd.Timestamp) -> str:
    return str(int(ts.timestamp()))


def test_a_daily_window_is_one_eod_request_with_dates(
    server: FakeEodhd, client: EodhdClient
) -> None:
    start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-15", tz="UTC")

    frame = client.fetch_ohlcv("AAPL.US", Interval.parse("1d"), start, end)

    validate(frame)
    expected = expected_daily("AAPL.US", "2024-01-01", "2024-01-14")
    assert len(frame) == 10  # weekdays only
    assert frame["ts"].tolist() == expected["ts"].tolist()
    assert frame["close"].tolist() == expected["close"].round(4).tolist()
    assert frame["volume"].tolist() == expected["volume"].tolist()
    [request] = server.requests
    assert request.path == "/api/eod/AAPL.US"
    assert request.query == {
        "from": "2024-01-01",
        "to": "2024-01-14",
        "period": "d",
        "fmt": "json",
        "api_token": KEY,
    }
    assert KEY not in str(request.headers)
    assert client.metadata()["quota_day_calls_used"] == 1


def test_a_daily_window_starting_mid_day_begins_with_the_next_date(
    server: FakeEodhd, client: EodhdClient
) -> None:
    start = pd.Timestamp("2024-01-02T12:00:00Z")
    frame = client.fetch_ohlcv("AAPL.US", Interval.parse("1d"), start, start + ONE_DAY)

    assert frame["ts"].tolist() == [pd.Timestamp("2024-01-03", tz="UTC")]
    [request] = server.requests
    assert (request.query["from"], request.query["to"]) == ("2024-01-03", "2024-01-03")


def test_free_tier_warning_element_is_dropped_from_the_window(
    server: FakeEodhd, client: EodhdClient, caplog: pytest.LogCaptureFixture
) -> None:
    server.free_tier_since = "2024-01-03"
    with caplog.at_level(logging.WARNING, logger="fks_pipelines.providers.eodhd"):
        frame = client.fetch_ohlcv(
            "AAPL.US", Interval.parse("1d"), pd.Timestamp("2024-01-01", tz="UTC"), WINTER_DAY
        )

    assert frame["ts"].dt.strftime("%Y-%m-%d").tolist() == ["2024-01-03", "2024-01-04"]
    assert any(FREE_TIER_WARNING in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("day", "first_bar"),
    [(SUMMER_DAY, "2024-07-01T13:30:00Z"), (WINTER_DAY, "2024-01-05T14:30:00Z")],
    ids=["edt", "est"],
)
def test_a_day_of_5m_bars_is_one_intraday_request_in_unix_seconds(
    server: FakeEodhd, client: EodhdClient, day: pd.Timestamp, first_bar: str
) -> None:
    frame = client.fetch_ohlcv("AAPL.US", M5, day, day + ONE_DAY)

    expected = expected_intraday("AAPL.US", "5m", str(day.date()), str((day + ONE_DAY).date()))
    # 78 regular bars 09:30-15:55 New York, then the 16:00 closing print (volume null): an
    # auction bar, its price as sent, no volume.
    assert len(frame) == 79
    assert frame["ts"].iloc[0] == pd.Timestamp(first_bar)
    assert_bars(
        frame,
        provider="eodhd",
        symbol="AAPL.US",
        interval="5m",
        ts=expected["ts"],
        open=expected["open"].round(6),
        high=expected["high"].round(6),
        low=expected["low"].round(6),
        close=expected["close"].round(6),
        volume=expected["volume"],
        quote_volume=None,
        vwap=None,
        trades=None,
        bar_kind=expected["bar_kind"],
    )
    assert frame["bar_kind"].tolist() == ["traded"] * 78 + ["auction"]
    [request] = server.requests
    assert request.path == "/api/intraday/AAPL.US"
    assert request.query == {
        "interval": "5m",
        "from": seconds(day),
        "to": str(int((day + ONE_DAY).timestamp()) - 1),
        "fmt": "json",
        "api_token": KEY,
    }
    assert client.metadata()["quota_day_calls_used"] == 5


def test_crypto_trades_around_the_clock(server: FakeEodhd, client: EodhdClient) -> None:
    frame = client.fetch_ohlcv("BTC-USD.CC", Interval.parse("1h"), SUMMER_DAY, SUMMER_DAY + ONE_DAY)
    assert frame["ts"].tolist() == list(pd.date_range(SUMMER_DAY, periods=24, freq="h"))


def test_a_window_longer_than_the_maximum_span_is_split(
    server: FakeEodhd, client: EodhdClient
) -> None:
    server.listed["NEWCO.US"] = ("2024-06-03", "2024-06-05")
    server.symbols.add("NEWCO.US")
    start = pd.Timestamp("2024-01-01", tz="UTC")
    end = start + pd.Timedelta(days=250)

    frame = client.fetch_ohlcv("NEWCO.US", Interval.parse("1m"), start, end)

    assert len(frame) == 3 * (390 + 1)  # three sessions of 1m bars, each with its closing print
    assert frame["bar_kind"].value_counts().to_dict() == {"traded": 3 * 390, "auction": 3}
    assert frame["ts"].is_unique and frame["ts"].is_monotonic_increasing
    spans = [(int(r.query["from"]), int(r.query["to"])) for r in server.requests]
    day = 86400
    s0 = int(start.timestamp())
    assert spans == [
        (s0, s0 + 120 * day - 1),
        (s0 + 120 * day, s0 + 240 * day - 1),
        (s0 + 240 * day, int(end.timestamp()) - 1),
    ]
    assert client.metadata()["quota_day_calls_used"] == 15


def test_window_reaching_now_drops_the_open_bar(server: FakeEodhd) -> None:
    now = pd.Timestamp("2024-07-01T15:02:00Z")
    server.now = now
    with EodhdClient(KEY, server.base_url, runtime=eodhd_runtime(), clock=lambda: now) as client:
        frame = client.fetch_ohlcv("AAPL.US", M5, SUMMER_DAY, SUMMER_DAY + ONE_DAY)

    # The server sent the 15:00 bar while still open; closed bars are 13:30 .. 14:55.
    assert frame["ts"].iloc[-1] == pd.Timestamp("2024-07-01T14:55:00Z")
    assert len(frame) == 18


def test_unsupported_interval_names_the_supported_ones(
    server: FakeEodhd, client: EodhdClient
) -> None:
    with pytest.raises(ValueError, match=r"supported: 1m, 5m, 1h, 1d"):
        client.fetch_ohlcv("AAPL.US", Interval.parse("15m"), SUMMER_DAY, SUMMER_DAY + ONE_DAY)
    assert server.requests == []


def test_unknown_symbol_is_404(server: FakeEodhd, client: EodhdClient) -> None:
    with pytest.raises(UnknownSymbol) as caught:
        client.fetch_ohlcv("NOPE.US", M5, SUMMER_DAY, SUMMER_DAY + ONE_DAY)
    assert (caught.value.provider, caught.value.status) == ("eodhd", 404)


def test_unknown_symbol_at_real_time_is_200_with_na(server: FakeEodhd) -> None:
    with EodhdClient(KEY, server.base_url, runtime=eodhd_runtime(max_attempts=3)) as client:
        with pytest.raises(UnknownSymbol) as caught:
            client.latest_price("NOPE.US")
        assert client.stats.requests == 1  # not retried
    assert (caught.value.status, caught.value.vendor_code) == (200, "NA")


def test_a_wrong_key_is_unauthorized_and_never_shown(
    server: FakeEodhd, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wrong-token-0123456789"
    caplog.set_level(logging.DEBUG)
    with EodhdClient(wrong, server.base_url, runtime=eodhd_runtime()) as client:
        with pytest.raises(Unauthorized) as caught:
            client.fetch_ohlcv("AAPL.US", M5, SUMMER_DAY, SUMMER_DAY + ONE_DAY)
        # A server echoing the token back in a JSON message must not leak it either.
        server.scripted.append(Response.json({"message": f"token {wrong} is invalid"}, status=401))
        with pytest.raises(Unauthorized) as echoed:
            client.latest_price("AAPL.US")

    assert server.requests[0].query["api_token"] == wrong
    assert caught.value.status == 401
    for error in (caught.value, echoed.value):
        assert wrong not in str(error) and wrong not in repr(error.args)
    assert caplog.records, "httpx logs each request"
    assert all(wrong not in r.getMessage() for r in caplog.records)


def test_missing_key_raises_at_construction() -> None:
    for key in (None, ""):
        with pytest.raises(MissingCredentials, match="EODHD_API_KEY"):
            EodhdClient(key, runtime=eodhd_runtime())


def test_minute_limit_429_is_retried_after_retry_after(server: FakeEodhd) -> None:
    server.scripted.append(
        Response(
            status=429,
            body=b"<html><body><h1>429 Too Many Requests</h1></body></html>",
            headers={
                "Content-Type": "text/html",
                "X-RateLimit-Limit": "1000",
                "X-RateLimit-Remaining": "0",
                "Retry-After": "1",
            },
        )
    )
    sleeps = Sleeps()
    rt = eodhd_runtime(max_attempts=2)
    with EodhdClient(KEY, server.base_url, runtime=rt, sleep=sleeps) as client:
        frame = client.fetch_ohlcv("AAPL.US", M5, SUMMER_DAY, SUMMER_DAY + ONE_DAY)

        assert len(frame) == 79
        assert sleeps.calls == [1.0]
        assert (client.stats.retries, client.stats.requests) == (1, 2)


def test_minute_limit_429_without_retries_carries_retry_after(
    server: FakeEodhd, client: EodhdClient
) -> None:
    server.scripted.append(
        Response(
            status=429,
            body=b"Too Many Requests",
            headers={"X-RateLimit-Remaining": "0", "Retry-After": "60"},
        )
    )
    with pytest.raises(RateLimited) as caught:
        client.latest_price("AAPL.US")
    assert (caught.value.status, caught.value.retry_after) == (429, 60)


def test_daily_calls_used_up_at_the_server_is_quota_exhausted_and_not_retried(
    server: FakeEodhd,
) -> None:
    server.daily_calls = 5
    with EodhdClient(KEY, server.base_url, runtime=eodhd_runtime(max_attempts=4)) as client:
        client.fetch_ohlcv("AAPL.US", M5, SUMMER_DAY, SUMMER_DAY + ONE_DAY)
        with pytest.raises(QuotaExhausted) as caught:
            client.fetch_ohlcv("AAPL.US", M5, WINTER_DAY, WINTER_DAY + ONE_DAY)
        assert client.stats.requests == 2
    assert caught.value.status == 429


def test_the_local_daily_quota_counts_five_calls_per_intraday_request(server: FakeEodhd) -> None:
    limits = ProviderLimits(
        requests=EodhdClient.LIMITS.requests, quotas=(Quota("calls", 11, "day"),)
    )
    with EodhdClient(KEY, server.base_url, runtime=eodhd_runtime(limits)) as client:
        client.fetch_ohlcv("AAPL.US", M5, SUMMER_DAY, SUMMER_DAY + ONE_DAY)
        client.fetch_ohlcv("AAPL.US", M5, WINTER_DAY, WINTER_DAY + ONE_DAY)
        with pytest.raises(QuotaExhausted):
            client.fetch_ohlcv("SPY.US", M5, WINTER_DAY, WINTER_DAY + ONE_DAY)
        quote = client.latest_price("SPY.US")  # 1 call still fits

    assert quote.price > 0
    assert len(server.requests) == 3  # the refused request was never sent


def test_server_error_is_retried_then_succeeds(server: FakeEodhd) -> None:
    server.scripted.append(Response(status=502, body=b"<html>Bad Gateway</html>"))
    sleeps = Sleeps()
    rt = eodhd_runtime(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01)
    with EodhdClient(KEY, server.base_url, runtime=rt, sleep=sleeps) as client:
        assert client.latest_price("AAPL.US").price > 0
        assert client.stats.retries == 1
    assert len(sleeps.calls) == 1


def test_server_error_without_retries_is_unavailable(
    server: FakeEodhd, client: EodhdClient
) -> None:
    server.failing_symbols.add("AAPL.US")
    with pytest.raises(Unavailable) as caught:
        client.fetch_ohlcv("AAPL.US", Interval.parse("1d"), WINTER_DAY, WINTER_DAY + ONE_DAY)
    assert caught.value.status == 500


@pytest.mark.parametrize(
    ("answer", "error", "status"),
    [
        (
            Response.json({"status": 401, "error": "Unauthorized", "message": "Invalid token"}),
            Unauthorized,
            401,
        ),
        (Response(status=200, body=b"Date,Open,High,Low,Close,Volume\n"), BadPayload, 200),
        (Response(status=200, body=b"<html>maintenance</html>"), BadPayload, 200),
        (Response.json({"unexpected": "object"}), BadPayload, None),
    ],
    ids=["200-error-envelope", "200-csv", "200-html", "200-object"],
)
def test_http_200_answers_that_are_not_bars(
    server: FakeEodhd, client: EodhdClient, answer: Response, error: type, status: int | None
) -> None:
    server.scripted.append(answer)
    with pytest.raises(error) as caught:
        client.fetch_ohlcv("AAPL.US", M5, SUMMER_DAY, SUMMER_DAY + ONE_DAY)
    assert (caught.value.provider, caught.value.status) == ("eodhd", status)


def test_latest_price(server: FakeEodhd, client: EodhdClient) -> None:
    server.now = pd.Timestamp("2024-07-01T15:02:30Z")

    quote = client.latest_price("SPY.US")

    assert (quote.provider, quote.symbol) == ("eodhd", "SPY.US")
    assert quote.ts == pd.Timestamp("2024-07-01T14:47:00Z")  # the fake delays 15 minutes
    assert quote.price > 0
    [request] = server.requests
    assert request.path == "/api/real-time/SPY.US"
    assert request.query == {"fmt": "json", "api_token": KEY}
