"""The Alpha Vantage client against a real local server speaking Alpha Vantage's wire format."""

import logging
import traceback
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from fks_pipelines.market.frame import validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.alpha_vantage import PROVIDER, AlphaVantageClient
from fks_pipelines.providers.errors import (
    BadPayload,
    MissingCredentials,
    QuotaExhausted,
    RateLimited,
    SlotTimeout,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
from fks_pipelines.providers.runtime import ProviderRuntime
from fks_pipelines_tests.fakes.alpha_vantage import (
    FakeAlphaVantage,
    bar_values,
    expected_values,
    intraday_opens,
)
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import Sleeps, runtime

SECRET = "AVKEY-9f3Qz71LmW"
NOW = pd.Timestamp("2024-06-28T20:00:00Z")
FIFTEEN = Interval.parse("15m")
DAILY = Interval.parse("1d")
FIXTURES = Path(__file__).parent.parent / "fixtures" / "alphavantage"

FAST = replace(AlphaVantageClient.LIMITS, requests=(Window(limit=100, period_s=1),))
"""The free tier's pacing (1 request per 12 s) would make every two-request test wait 12 s;
tests that send more than one request use this, with the real daily quota."""


def rt(limits: ProviderLimits = AlphaVantageClient.LIMITS, **config: object) -> ProviderRuntime:
    return runtime(limits, provider=PROVIDER, **{"max_attempts": 1, **config})


@pytest.fixture
def server() -> Iterator[FakeAlphaVantage]:
    with FakeAlphaVantage() as fake:
        fake.now = NOW
        yield fake


def client_for(
    server: FakeAlphaVantage, runtime: ProviderRuntime | None = None, **kw: object
) -> AlphaVantageClient:
    return AlphaVantageClient(SECRET, server.url, runtime=runtime or rt(), clock=lambda: NOW, **kw)


def window(start: str, end: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC")


def test_a_key_is_required() -> None:
    with pytest.raises(MissingCredentials, match="ALPHA_VANTAGE_API_KEY"):
        AlphaVantageClient(None)
    with pytest.raises(MissingCredentials):
        AlphaVantageClient("")


def test_one_day_of_15m_bars_is_one_request_for_its_month(server: FakeAlphaVantage) -> None:
    with client_for(server) as client:
        frame = client.fetch_ohlcv("AAPL", FIFTEEN, *window("2024-03-11", "2024-03-12"))

    validate(frame)
    opens = intraday_opens("15min", "2024-03-11", "2024-03-12")
    assert len(opens) == 26  # 09:30..15:45 New York, regular session only
    assert frame["ts"].tolist() == list(opens)
    assert frame["ts"].iloc[0] == pd.Timestamp("2024-03-11T13:30:00Z")  # EDT since the 10th
    expected = expected_values(opens, 900)
    for field in ("open", "high", "low", "close", "volume"):
        assert frame[field].tolist() == expected[field]
    [request] = server.requests_to("/query")
    assert request.query == {
        "function": "TIME_SERIES_INTRADAY",
        "symbol": "AAPL",
        "interval": "15min",
        "month": "2024-03",
        "outputsize": "full",
        "extended_hours": "false",
        "adjusted": "false",
        "apikey": SECRET,
    }
    assert client.stats.requests == 1


def test_a_window_across_months_is_one_request_per_month(server: FakeAlphaVantage) -> None:
    with client_for(server, rt(FAST)) as client:
        frame = client.fetch_ohlcv(
            "MSFT", Interval.parse("1h"), *window("2024-01-30", "2024-03-02")
        )

    opens = intraday_opens("60min", "2024-01-30", "2024-03-02")
    assert frame["ts"].tolist() == list(opens)
    assert frame["ts"].is_monotonic_increasing and frame["ts"].is_unique
    assert frame["close"].tolist() == expected_values(opens, 3600)["close"]
    requests = server.requests_to("/query")
    assert [(r.query["month"], r.query["interval"]) for r in requests] == [
        ("2024-01", "60min"),
        ("2024-02", "60min"),
        ("2024-03", "60min"),
    ]


def test_the_open_bar_and_future_months_are_not_returned_or_requested(
    server: FakeAlphaVantage,
) -> None:
    now = pd.Timestamp("2024-06-28T15:10:00Z")  # 11:10 New York
    server.now = now
    with AlphaVantageClient(SECRET, server.url, runtime=rt(), clock=lambda: now) as client:
        frame = client.fetch_ohlcv("AAPL", FIFTEEN, *window("2024-06-28", "2024-07-02"))

    # The server served the 11:00 bar while open; 09:30..10:45 New York remain.
    assert frame["ts"].iloc[-1] == pd.Timestamp("2024-06-28T14:45:00Z")
    assert len(frame) == 6
    assert [r.query["month"] for r in server.requests_to("/query")] == ["2024-06"]


def test_daily_windows_share_one_full_history_request(server: FakeAlphaVantage) -> None:
    with client_for(server) as client:
        first = client.fetch_ohlcv("IBM", DAILY, *window("2024-01-02", "2024-01-03"))
        week = client.fetch_ohlcv("IBM", DAILY, *window("2024-01-08", "2024-01-15"))
        weekend = client.fetch_ohlcv("IBM", DAILY, *window("2024-01-13", "2024-01-15"))

    validate(week)
    assert first["ts"].tolist() == [pd.Timestamp("2024-01-02", tz="UTC")]
    dates = pd.bdate_range("2024-01-08", "2024-01-12", tz="UTC")
    assert week["ts"].tolist() == list(dates)
    expected = expected_values(dates, 86400)
    assert week["open"].tolist() == expected["open"]
    assert week["volume"].tolist() == expected["volume"]
    assert weekend.empty
    [request] = server.requests_to("/query")
    assert request.query == {
        "function": "TIME_SERIES_DAILY",
        "symbol": "IBM",
        "outputsize": "full",
        "apikey": SECRET,
    }


def test_daily_history_is_shared_through_the_runtime_cache(
    server: FakeAlphaVantage, tmp_path: Path
) -> None:
    shared = rt(cache_dir=tmp_path)
    with client_for(server, shared) as one:
        one.fetch_ohlcv("IBM", DAILY, *window("2024-01-02", "2024-01-03"))
    with client_for(server, shared) as other:  # e.g. another partition's run
        frame = other.fetch_ohlcv("IBM", DAILY, *window("2024-02-05", "2024-02-06"))

    assert frame["ts"].tolist() == [pd.Timestamp("2024-02-05", tz="UTC")]
    assert len(server.requests_to("/query")) == 1


def test_unsupported_interval_names_the_supported_ones(server: FakeAlphaVantage) -> None:
    with client_for(server) as client, pytest.raises(ValueError, match="1m, 5m, 15m, 30m, 1h, 1d"):
        client.fetch_ohlcv("AAPL", Interval.parse("4h"), *window("2024-01-02", "2024-01-03"))
    assert server.requests == []


def test_unknown_symbol(server: FakeAlphaVantage) -> None:
    with client_for(server, rt(FAST)) as client:
        with pytest.raises(UnknownSymbol) as caught:
            client.fetch_ohlcv("NOPE", FIFTEEN, *window("2024-03-11", "2024-03-12"))
        assert (caught.value.status, caught.value.vendor_code) == (200, "Error Message")
        with pytest.raises(UnknownSymbol):
            client.latest_price("NOPE")


def test_throttle_note_pauses_every_request_for_a_minute(server: FakeAlphaVantage) -> None:
    server.per_minute = 0
    sleeps = Sleeps()
    # Two attempts: the retry waits the minute (recorded), and then the limiter, paused for that
    # minute by the Note, refuses to send rather than hit the throttle again.
    runtime = rt(max_attempts=2, limiter_max_wait_s=1.0)
    client = client_for(server, runtime, sleep=sleeps)
    with client, pytest.raises(SlotTimeout):
        client.latest_price("AAPL")

    assert sleeps.calls == [60.0]
    assert len(server.requests) == 1
    assert client.stats.retries == 1


def test_throttle_note_is_rate_limited_with_status_and_code(server: FakeAlphaVantage) -> None:
    server.scripted.append(
        Response(
            body=(FIXTURES / "error_200_note_rate_limit_5_per_minute_issue_quote.json").read_bytes()
        )
    )
    with client_for(server) as client, pytest.raises(RateLimited) as caught:
        client.fetch_ohlcv("AAPL", FIFTEEN, *window("2024-03-11", "2024-03-12"))
    assert (caught.value.status, caught.value.vendor_code, caught.value.retry_after) == (
        200,
        "Note",
        60.0,
    )


def test_burst_throttle_is_retried_and_then_served(server: FakeAlphaVantage) -> None:
    server.scripted.append(
        Response.json(
            {
                "Information": "Please consider spreading out your free API requests more "
                "sparingly (1 request per second)."
            }
        )
    )
    sleeps = Sleeps()
    with client_for(server, rt(FAST, max_attempts=2), sleep=sleeps) as client:
        quote = client.latest_price("AAPL")

    assert quote.price > 0
    assert sleeps.calls == [1.0]
    assert len(server.requests) == 2
    assert client.stats.retries == 1


def test_daily_cap_is_quota_exhausted_and_not_retried(server: FakeAlphaVantage) -> None:
    server.daily_cap = 0
    sleeps = Sleeps()
    client = client_for(server, rt(max_attempts=3), sleep=sleeps)
    with client, pytest.raises(QuotaExhausted) as caught:
        client.latest_price("AAPL")
    assert (caught.value.status, caught.value.vendor_code) == (200, "Information")
    assert SECRET not in str(caught.value)  # the fake's cap message names the key, as AV's does
    assert sleeps.calls == [] and len(server.requests) == 1


def test_the_local_daily_quota_stops_the_26th_request(server: FakeAlphaVantage) -> None:
    with client_for(server, rt(FAST)) as client:
        for month in range(1, 13):
            client.fetch_ohlcv(
                "AAPL", Interval.parse("30m"), *window(f"2023-{month:02}-03", f"2023-{month:02}-04")
            )
        for month in range(1, 13):
            client.fetch_ohlcv(
                "MSFT", Interval.parse("30m"), *window(f"2023-{month:02}-03", f"2023-{month:02}-04")
            )
        client.latest_price("IBM")
        with pytest.raises(QuotaExhausted, match="25"):
            client.latest_price("IBM")
    assert len(server.requests) == 25


def test_premium_answer_is_unauthorized(server: FakeAlphaVantage) -> None:
    server.scripted.append(
        Response.json(
            {"Information": "Thank you for using Alpha Vantage! This is a premium endpoint."}
        )
    )
    with client_for(server) as client, pytest.raises(Unauthorized) as caught:
        client.fetch_ohlcv("AAPL", DAILY, *window("2024-01-02", "2024-01-03"))
    assert caught.value.vendor_code == "Information"


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (Response(status=503, body=b"<html>Application Error</html>"), Unavailable),
        (Response(status=200, body=b"<html>Application Error</html>"), BadPayload),
        (Response.json({"Meta Data": {"2. Symbol": "AAPL"}}), BadPayload),
        (Response.json({}), BadPayload),
    ],
    ids=["503-html", "200-html", "meta-only", "empty-object"],
)
def test_error_answers_become_typed_errors(
    server: FakeAlphaVantage, answer: Response, error: type
) -> None:
    server.scripted.append(answer)
    with client_for(server) as client, pytest.raises(error) as caught:
        client.fetch_ohlcv("AAPL", FIFTEEN, *window("2024-03-11", "2024-03-12"))
    assert caught.value.provider == "alpha_vantage"


def test_5xx_is_retried(server: FakeAlphaVantage) -> None:
    server.scripted.append(Response(status=502, body=b"Bad Gateway"))
    sleeps = Sleeps()
    with client_for(server, rt(FAST, max_attempts=2), sleep=sleeps) as client:
        frame = client.fetch_ohlcv("AAPL", FIFTEEN, *window("2024-03-11", "2024-03-12"))
    assert len(frame) == 26
    assert len(sleeps.calls) == 1 and len(server.requests) == 2


def test_the_key_never_appears_in_errors_or_logs(
    server: FakeAlphaVantage, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    failures: list[BaseException] = []
    with client_for(server, rt(FAST)) as client:
        server.daily_cap = 0  # the fake's cap message names the key, as Alpha Vantage's does
        with pytest.raises(QuotaExhausted) as quota:
            client.latest_price("AAPL")
        server.daily_cap = None
        with pytest.raises(UnknownSymbol) as unknown:
            client.fetch_ohlcv("NOPE", DAILY, *window("2024-01-02", "2024-01-03"))
        server.scripted.append(Response(status=500, body=f"echo {SECRET}".encode()))
        with pytest.raises(Unavailable) as unavailable:
            client.latest_price("AAPL")
        failures += [quota.value, unknown.value, unavailable.value]
    for error in failures:
        text = "".join([str(error), repr(error), *traceback.format_exception(error)])
        assert SECRET not in text
    assert [r.query["apikey"] for r in server.requests] == [SECRET] * 3
    assert "/query?" in caplog.text  # httpx logged the URLs, with the key redacted
    assert SECRET not in caplog.text


def test_a_new_utc_day_fetches_the_history_again(server: FakeAlphaVantage) -> None:
    now = [NOW]
    client = AlphaVantageClient(SECRET, server.url, runtime=rt(FAST), clock=lambda: now[0])
    with client:
        client.fetch_ohlcv("IBM", DAILY, *window("2024-06-27", "2024-06-28"))
        now[0] = NOW + pd.Timedelta(hours=3)  # 23:00 UTC, same day: kept
        client.fetch_ohlcv("IBM", DAILY, *window("2024-06-26", "2024-06-27"))
        now[0] = NOW + pd.Timedelta(hours=5)  # the next UTC day: today's bar has closed
        server.now = now[0]
        frame = client.fetch_ohlcv("IBM", DAILY, *window("2024-06-28", "2024-06-29"))

    assert frame["ts"].tolist() == [pd.Timestamp("2024-06-28", tz="UTC")]
    assert len(server.requests) == 2


def test_latest_price(server: FakeAlphaVantage) -> None:
    with client_for(server) as client:
        quote = client.latest_price("MSFT")

    assert quote.provider == "alpha_vantage" and quote.symbol == "MSFT"
    assert quote.price == round(
        float(bar_values(pd.Index([NOW.value // 10**9]).to_numpy(), 60)["close"][0]), 4
    )
    # NOW is 16:00 New York on Friday 2024-06-28: the session's close, not 00:00 UTC.
    assert quote.ts == pd.Timestamp("2024-06-28T20:00:00Z")
    [request] = server.requests
    assert request.query == {"function": "GLOBAL_QUOTE", "symbol": "MSFT", "apikey": SECRET}


@pytest.mark.parametrize(
    ("now", "stamp"),
    [
        # in the session: the price is the latest one, as of the answer
        ("2024-06-28T15:07:00Z", "2024-06-28T15:07:00Z"),
        # after the close: the close
        ("2024-06-28T23:30:00Z", "2024-06-28T20:00:00Z"),
        # the weekend: Friday's close
        ("2024-06-29T12:00:00Z", "2024-06-28T20:00:00Z"),
        # a half day's afternoon: its 13:00 close
        ("2024-07-03T19:00:00Z", "2024-07-03T17:00:00Z"),
        # before Monday's open: Friday's close (winter, 16:00 EST)
        ("2024-01-08T13:00:00Z", "2024-01-05T21:00:00Z"),
    ],
    ids=["in-session", "after-close", "weekend", "half-day", "pre-open"],
)
def test_a_quote_is_stamped_when_its_price_was_true(
    server: FakeAlphaVantage, now: str, stamp: str
) -> None:
    server.now = pd.Timestamp(now)
    with AlphaVantageClient(
        SECRET, server.url, runtime=rt(), clock=lambda: pd.Timestamp(now)
    ) as client:
        quote = client.latest_price("MSFT")

    assert quote.ts == pd.Timestamp(stamp)
