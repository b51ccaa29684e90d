"""The Polygon client against a real local server speaking the Polygon wire format."""

from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from fks_pipelines.market.frame import validate
from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.errors import (
    BadPayload,
    MissingCredentials,
    RateLimited,
    SlotTimeout,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.polygon import PROVIDER, PolygonClient
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
from fks_pipelines.providers.runtime import ProviderRuntime
from fks_pipelines_tests.fakes.polygon import RATE_LIMIT_ERROR, FakePolygon, expected_bars
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import Sleeps, runtime

KEY = "test-polygon-key"
DAY = pd.Timestamp("2024-01-05", tz="UTC")  # a Friday
NEXT_DAY = DAY + pd.Timedelta(days=1)
FAST = ProviderLimits(requests=(Window.per_second(1000),))
"""For tests that send several requests: the real 1-per-12-s window would make them slow."""


def ms(ts: pd.Timestamp) -> int:
    return ts.value // 1_000_000


def polygon_runtime(
    limits: ProviderLimits = PolygonClient.LIMITS, **config: Any
) -> ProviderRuntime:
    return runtime(limits, provider=PROVIDER, **{"max_attempts": 1, **config})


@pytest.fixture
def server() -> Iterator[FakePolygon]:
    with FakePolygon(api_key=KEY) as fake:
        yield fake


def make_client(server: FakePolygon, **kw: Any) -> PolygonClient:
    rt = kw.pop("runtime", None) or polygon_runtime(FAST)
    return PolygonClient(KEY, server.url, runtime=rt, **kw)


@pytest.fixture
def client(server: FakePolygon) -> Iterator[PolygonClient]:
    with make_client(server) as c:
        yield c


def assert_bars(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert frame["ts"].tolist() == pd.to_datetime(expected["t"], unit="ms", utc=True).tolist()
    for ours, theirs in (("open", "o"), ("high", "h"), ("low", "l"), ("close", "c")):
        assert frame[ours].tolist() == expected[theirs].astype(float).tolist()
    assert frame["volume"].tolist() == expected["v"].astype(float).tolist()
    assert frame["vwap"].tolist() == expected["vw"].astype(float).tolist()
    assert frame["trades"].tolist() == expected["n"].astype(int).tolist()
    assert frame["quote_volume"].isna().all()  # Polygon states none
    assert set(frame["bar_kind"]) <= {"traded"}


def test_one_day_of_hourly_stock_bars_is_one_request_with_the_key_in_a_header(
    server: FakePolygon,
) -> None:
    with PolygonClient(KEY, server.url, runtime=polygon_runtime()) as client:
        frame = client.fetch_ohlcv("AAPL", Interval.parse("1h"), DAY, NEXT_DAY)

    validate(frame)
    assert_bars(frame, expected_bars("AAPL", 1, "hour", ms(DAY), ms(NEXT_DAY) - 1))
    # 04:00-20:00 New York is 09:00Z-01:00Z in January; the window also holds the end of
    # Thursday's session (00:00Z).
    assert frame["ts"].dt.hour.tolist() == [0, *range(9, 24)]
    [request] = server.requests
    assert request.path == f"/v2/aggs/ticker/AAPL/range/1/hour/{ms(DAY)}/{ms(NEXT_DAY) - 1}"
    assert request.query == {"adjusted": "true", "sort": "asc", "limit": "50000"}
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert KEY not in request.path and "apiKey" not in request.query


def test_stock_day_bars_are_asked_by_date_and_labelled_with_their_trading_date(
    server: FakePolygon, client: PolygonClient
) -> None:
    # US DST starts 2024-03-10: day bars start 05:00Z before it and 04:00Z after it.
    start, end = pd.Timestamp("2024-03-07", tz="UTC"), pd.Timestamp("2024-03-13", tz="UTC")

    frame = client.fetch_ohlcv("AAPL", Interval.parse("1d"), start, end)

    validate(frame)
    assert frame["ts"].tolist() == [
        pd.Timestamp(d, tz="UTC") for d in ("2024-03-07", "2024-03-08", "2024-03-11", "2024-03-12")
    ]
    expected = expected_bars("AAPL", 1, "day", ms(start), ms(end) - 1)
    assert pd.to_datetime(expected["t"], unit="ms", utc=True).dt.hour.tolist() == [5, 5, 4, 4]
    assert frame["close"].tolist() == expected["c"].tolist()
    [request] = server.requests
    assert request.path == "/v2/aggs/ticker/AAPL/range/1/day/2024-03-07/2024-03-12"


def test_crypto_day_bars_are_utc_days_and_the_colon_stays_in_the_path(
    server: FakePolygon, client: PolygonClient
) -> None:
    frame = client.fetch_ohlcv("X:BTCUSD", Interval.parse("1d"), DAY, DAY + pd.Timedelta(days=3))

    assert frame["ts"].tolist() == [DAY + pd.Timedelta(days=k) for k in range(3)]
    assert frame["volume"].iloc[0] % 0.125 == 0 and frame["volume"].iloc[0] < 2  # fractional
    [request] = server.requests
    assert request.path == "/v2/aggs/ticker/X:BTCUSD/range/1/day/2024-01-05/2024-01-07"


def test_pages_are_followed_through_next_url_with_the_cursor(
    server: FakePolygon, client: PolygonClient
) -> None:
    # 1440 minutes of 5m bars in pages of 503 base minutes: each cut page leaves out its
    # trailing partial bar and next_url starts again at it.
    server.page_cap = 503

    frame = client.fetch_ohlcv("X:ETHUSD", Interval.parse("5m"), DAY, NEXT_DAY)

    validate(frame)
    assert len(frame) == 288
    assert_bars(frame, expected_bars("X:ETHUSD", 5, "minute", ms(DAY), ms(NEXT_DAY) - 1))
    first, *following = server.requests
    assert first.query == {"adjusted": "true", "sort": "asc", "limit": "50000"}
    assert [r.path.split("/")[-2] for r in following] == [
        str(ms(DAY) + 500 * 60_000),
        str(ms(DAY) + 1000 * 60_000),
    ]
    assert all(set(r.query) == {"cursor"} for r in following)
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)


def test_long_windows_are_split_into_full_pages_of_base_bars(
    server: FakePolygon, client: PolygonClient
) -> None:
    # 1h bars are built from minutes: 50,000 base bars hold 833 hours, so 60 days take 2 requests.
    end = DAY + pd.Timedelta(days=60)

    frame = client.fetch_ohlcv("X:BTCUSD", Interval.parse("1h"), DAY, end)

    assert len(frame) == 60 * 24
    assert frame["ts"].is_unique and frame["ts"].is_monotonic_increasing
    split = DAY + pd.Timedelta(hours=833)
    assert [r.path.rsplit("/", 2)[1:] for r in server.requests] == [
        [str(ms(DAY)), str(ms(split) - 1)],
        [str(ms(split)), str(ms(end) - 1)],
    ]


def test_unaligned_window_asks_from_the_bar_containing_its_start(
    server: FakePolygon, client: PolygonClient
) -> None:
    start = DAY + pd.Timedelta(minutes=7)

    frame = client.fetch_ohlcv(
        "X:BTCUSD", Interval.parse("15m"), start, DAY + pd.Timedelta(hours=1)
    )

    assert frame["ts"].tolist() == [DAY + pd.Timedelta(minutes=m) for m in (15, 30, 45)]
    assert server.requests[0].path.split("/")[-2] == str(ms(DAY))


def test_next_url_to_another_host_is_not_followed(
    server: FakePolygon, client: PolygonClient
) -> None:
    server.page_cap = 100
    server.next_url_origin = "http://attacker.example"

    with pytest.raises(BadPayload, match="another host"):
        client.fetch_ohlcv("X:BTCUSD", Interval.parse("1m"), DAY, NEXT_DAY)
    assert len(server.requests) == 1


def test_window_reaching_now_drops_the_open_bar(server: FakePolygon) -> None:
    now = pd.Timestamp("2024-01-05T10:30:00Z")
    server.now_ms = ms(now)
    with make_client(server, clock=lambda: now) as client:
        frame = client.fetch_ohlcv("X:BTCUSD", Interval.parse("1h"), DAY, NEXT_DAY)

    assert frame["ts"].iloc[-1] == pd.Timestamp("2024-01-05T09:00:00Z")
    assert len(frame) == 10


@pytest.mark.parametrize(
    ("now", "last_date"),
    [("2024-01-06T02:00:00Z", "2024-01-04"), ("2024-01-06T05:00:00Z", "2024-01-05")],
    ids=["friday-still-trading-in-new-york", "friday-over-in-new-york"],
)
def test_stock_day_bar_counts_as_closed_once_the_new_york_day_is_over(
    server: FakePolygon, now: str, last_date: str
) -> None:
    clock = pd.Timestamp(now)
    server.now_ms = ms(clock)
    with make_client(server, clock=lambda: clock) as client:
        frame = client.fetch_ohlcv(
            "AAPL", Interval.parse("1d"), DAY - pd.Timedelta(days=2), NEXT_DAY
        )

    assert frame["ts"].iloc[-1] == pd.Timestamp(last_date, tz="UTC")


def test_unknown_ticker_has_no_bars_and_no_last_trade(
    server: FakePolygon, client: PolygonClient
) -> None:
    # Polygon answers an unknown ticker's aggregates like an empty window: resultsCount 0.
    frame = client.fetch_ohlcv("NOPE", Interval.parse("1h"), DAY, NEXT_DAY)
    assert frame.empty
    validate(frame)

    with pytest.raises(UnknownSymbol) as caught:
        client.latest_price("NOPE")
    assert (caught.value.status, caught.value.vendor_code) == (404, "NOT_FOUND")


def test_delayed_answers_are_success(server: FakePolygon, client: PolygonClient) -> None:
    server.status_word = "DELAYED"

    assert len(client.fetch_ohlcv("MSFT", Interval.parse("1d"), DAY, NEXT_DAY)) == 1
    assert client.latest_price("MSFT").price > 0


def test_rate_limit_answer_pauses_every_request_for_a_free_tier_slot(server: FakePolygon) -> None:
    server.requests_per_minute = 1
    sleeps = Sleeps()
    rt = polygon_runtime(FAST, max_attempts=2, limiter_max_wait_s=1)
    with make_client(server, runtime=rt, sleep=sleeps) as client:
        client.fetch_ohlcv("AAPL", Interval.parse("1h"), DAY, NEXT_DAY)

        # The 429 (no Retry-After) asks for 12 s; the retry then finds the provider paused.
        with pytest.raises(SlotTimeout):
            client.latest_price("AAPL")

    assert sleeps.calls == [12.0]
    assert len(server.requests) == 2
    assert client.stats.retries == 1


def test_rate_limit_is_retried_per_retry_after(server: FakePolygon) -> None:
    server.scripted.append(
        Response.json(
            {"status": "ERROR", "request_id": "r1", "error": RATE_LIMIT_ERROR},
            status=429,
            headers={"Retry-After": "0"},
        )
    )
    sleeps = Sleeps()
    with make_client(server, runtime=polygon_runtime(FAST, max_attempts=2), sleep=sleeps) as client:
        quote = client.latest_price("AAPL")

    assert quote.price > 0
    assert sleeps.calls == [0.0]
    assert client.stats.retries == 1


def test_rate_limit_without_retries_is_rate_limited(
    server: FakePolygon, client: PolygonClient
) -> None:
    server.scripted.append(
        Response.json({"status": "ERROR", "error": RATE_LIMIT_ERROR}, status=429)
    )
    with pytest.raises(RateLimited) as caught:
        client.fetch_ohlcv("AAPL", Interval.parse("1h"), DAY, NEXT_DAY)
    assert (caught.value.status, caught.value.vendor_code, caught.value.retry_after) == (
        429,
        "ERROR",
        12.0,
    )


def test_server_error_is_retried_then_served(server: FakePolygon) -> None:
    server.scripted.append(Response(status=502, body=b"<html>Bad Gateway</html>"))
    sleeps = Sleeps()
    with make_client(server, runtime=polygon_runtime(FAST, max_attempts=2), sleep=sleeps) as client:
        frame = client.fetch_ohlcv("AAPL", Interval.parse("1h"), DAY, NEXT_DAY)

    assert len(frame) == 16
    assert client.stats.retries == 1 and len(sleeps.calls) == 1
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("answer", "error", "status", "code"),
    [
        (Response(status=503, body=b"<html>down</html>"), Unavailable, 503, None),
        (Response(status=200, body=b"<html>maintenance</html>"), BadPayload, 200, None),
        (Response.json({"unexpected": "object"}), BadPayload, None, None),
        (
            Response.json({"status": "NOT_AUTHORIZED", "message": "You are not entitled."}),
            Unauthorized,
            200,
            "NOT_AUTHORIZED",
        ),
        (
            Response.json({"status": "ERROR", "error": RATE_LIMIT_ERROR}),
            RateLimited,
            200,
            "ERROR",
        ),
        (
            Response.json({"status": "NOT_AUTHORIZED", "message": "plan"}, status=403),
            Unauthorized,
            403,
            "NOT_AUTHORIZED",
        ),
    ],
    ids=["503-html", "200-html", "200-object", "200-not-authorized", "200-rate-limit", "403"],
)
def test_error_answers_become_typed_errors(
    server: FakePolygon,
    client: PolygonClient,
    answer: Response,
    error: type,
    status: int | None,
    code: str | None,
) -> None:
    server.scripted.append(answer)
    with pytest.raises(error) as caught:
        client.fetch_ohlcv("AAPL", Interval.parse("1h"), DAY, NEXT_DAY)
    assert (caught.value.provider, caught.value.status, caught.value.vendor_code) == (
        "polygon",
        status,
        code,
    )


def test_wrong_key_is_unauthorized_and_never_appears_in_the_error(server: FakePolygon) -> None:
    wrong = "sk-wrong-0123456789"
    client = PolygonClient(wrong, server.url, runtime=polygon_runtime())
    with client, pytest.raises(Unauthorized) as caught:
        client.latest_price("AAPL")
    assert (caught.value.status, caught.value.vendor_code) == (401, "ERROR")
    assert "Unknown API Key" in str(caught.value)
    assert wrong not in str(caught.value)


def test_a_key_echoed_by_the_server_is_scrubbed(server: FakePolygon, client: PolygonClient) -> None:
    server.scripted.append(
        Response.json(
            {"status": "ERROR", "error": f"bad request ?apiKey={KEY}&x=1 for key {KEY}"},
            status=400,
        )
    )
    with pytest.raises(Exception) as caught:
        client.latest_price("AAPL")
    assert KEY not in str(caught.value) and KEY not in repr(caught.value)


def test_missing_key_fails_at_construction() -> None:
    for key in (None, ""):
        with pytest.raises(MissingCredentials, match="POLYGON_API_KEY"):
            PolygonClient(key, "http://127.0.0.1:1")


def test_unsupported_interval_names_the_supported_ones(client: PolygonClient) -> None:
    with pytest.raises(ValueError, match="1m, 5m, 15m, 1h, 1d"):
        client.fetch_ohlcv("AAPL", Interval.parse("4h"), DAY, NEXT_DAY)


def test_latest_stock_price_keeps_the_exact_nanoseconds(
    server: FakePolygon, client: PolygonClient
) -> None:
    quote = client.latest_price("AAPL")

    assert quote.ts.value == server.now_ms * 1_000_000 - 689_382_699
    assert quote.symbol == "AAPL" and quote.price > 0
    [request] = server.requests
    assert request.path == "/v2/last/trade/AAPL"
    assert request.query == {}


def test_latest_crypto_price_uses_the_crypto_endpoint(
    server: FakePolygon, client: PolygonClient
) -> None:
    quote = client.latest_price("X:BTCUSD")

    assert quote.ts == pd.Timestamp(server.now_ms - 1234, unit="ms", tz="UTC")
    assert quote.symbol == "X:BTCUSD" and quote.price > 0
    [request] = server.requests
    assert request.path == "/v1/last/crypto/BTC/USD"


def test_default_limits_honour_the_free_tier() -> None:
    [window] = PolygonClient.LIMITS.requests
    assert window.limit / window.period_s <= 5 / 60
