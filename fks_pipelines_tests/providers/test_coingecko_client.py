"""The CoinGecko client against a real local server speaking the CoinGecko wire format."""

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.coingecko import (
    DEFAULT_BASE_URL,
    KEY_VARIABLE,
    PRO_BASE_URL,
    PROVIDER,
    CoinGeckoClient,
)
from fks_pipelines.providers.errors import (
    BadPayload,
    MissingCredentials,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines.providers.ratelimit import ProviderLimits
from fks_pipelines.providers.runtime import ProviderRuntime
from fks_pipelines_tests.fakes.coingecko import (
    ROOT,
    SIMPLE_PRICE,
    FakeCoinGecko,
    cdn_blocked,
    chart_path,
    rate_limited,
    status_error,
)
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers import support

KEY = "CG-demo-secret-7f3a"
DAY = pd.Timestamp("2024-01-05", tz="UTC")
ONE_DAY = Interval.parse("1d")
NOW = pd.Timestamp("2024-06-01T12:00:00Z")
BTC_CHART = chart_path("bitcoin")


def runtime(limits: ProviderLimits = CoinGeckoClient.LIMITS, **config: object) -> ProviderRuntime:
    return support.runtime(limits, provider=PROVIDER, **{"max_attempts": 1, **config})


def seconds(ts: pd.Timestamp) -> int:
    return ts.value // 1_000_000_000


@pytest.fixture
def server() -> Iterator[FakeCoinGecko]:
    with FakeCoinGecko() as fake:
        fake.api_key = KEY
        fake.now_ms = NOW.value // 1_000_000
        yield fake


@pytest.fixture
def client(server: FakeCoinGecko) -> Iterator[CoinGeckoClient]:
    with CoinGeckoClient(KEY, server.url + ROOT, runtime=runtime(), clock=lambda: NOW) as c:
        yield c


def expected_bar(server: FakeCoinGecko, day: pd.Timestamp) -> list[float]:
    """open, high, low, close and quote volume (the last rolling 24 h USD volume sample) of
    ``day`` from the server's own samples."""
    start_ms = day.value // 1_000_000
    s = server.samples(start_ms, start_ms + 86_400_000)
    prices = s["prices"][s["times"] < start_ms + 86_400_000]
    quote_volume = s["volumes"][s["times"] < start_ms + 86_400_000][-1]
    return [prices[0], prices.max(), prices.min(), prices[-1], quote_volume]


def test_one_day_is_one_request_with_the_key_in_its_header(
    server: FakeCoinGecko, client: CoinGeckoClient
) -> None:
    frame = client.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))

    open_, high, low, close, quote_volume = expected_bar(server, DAY)
    support.assert_bars(
        frame,
        provider="coingecko",
        symbol="bitcoin",
        interval="1d",
        ts=[DAY],
        open=[open_],
        high=[high],
        low=[low],
        close=[close],
        volume=None,
        quote_volume=[quote_volume],
        vwap=None,
        trades=None,
        bar_kind="sampled",
    )
    [request] = server.requests_to(BTC_CHART)
    assert request.query == {
        "vs_currency": "usd",
        "from": str(seconds(DAY)),
        "to": str(seconds(DAY + pd.Timedelta(days=1))),
        "precision": "full",
    }
    assert request.headers["x-cg-demo-api-key"] == KEY
    assert "x-cg-pro-api-key" not in request.headers
    assert KEY not in str(request.query)
    assert client.stats.requests == 1


def test_long_windows_are_cut_into_runs_of_90_days(
    server: FakeCoinGecko, client: CoinGeckoClient
) -> None:
    start = pd.Timestamp("2023-11-01", tz="UTC")
    end = start + pd.Timedelta(days=200)

    frame = client.fetch_ohlcv("ethereum", ONE_DAY, start, end)

    assert frame["ts"].tolist() == list(pd.date_range(start, end, freq="D", inclusive="left"))
    requests = server.requests_to(chart_path("ethereum"))
    bounds = [(int(r.query["from"]), int(r.query["to"])) for r in requests]
    day_s = 86_400
    assert bounds == [
        (seconds(start), seconds(start) + 90 * day_s),
        (seconds(start) + 90 * day_s, seconds(start) + 180 * day_s),
        (seconds(start) + 180 * day_s, seconds(end)),
    ]
    last = frame.iloc[-1][["open", "high", "low", "close", "quote_volume"]].tolist()
    assert last == expected_bar(server, end - pd.Timedelta(days=1))
    assert set(frame["bar_kind"]) == {"sampled"} and frame["volume"].isna().all()


def test_days_not_ended_by_now_are_never_requested(server: FakeCoinGecko) -> None:
    now = pd.Timestamp("2024-01-05T10:30:00Z")
    server.now_ms = now.value // 1_000_000
    with CoinGeckoClient(KEY, server.url + ROOT, runtime=runtime(), clock=lambda: now) as client:
        frame = client.fetch_ohlcv(
            "bitcoin", ONE_DAY, DAY - pd.Timedelta(days=2), DAY + pd.Timedelta(days=3)
        )
        today = client.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))

    assert frame["ts"].tolist() == [DAY - pd.Timedelta(days=2), DAY - pd.Timedelta(days=1)]
    assert today.empty
    [request] = server.requests_to(BTC_CHART)
    assert int(request.query["to"]) == seconds(DAY)


def test_a_day_with_a_hole_in_its_samples_is_left_out(
    server: FakeCoinGecko, client: CoinGeckoClient
) -> None:
    hole = DAY + pd.Timedelta(days=1, hours=6)
    server.holes = {(hole + pd.Timedelta(hours=h)).value // 1_000_000 for h in range(4)}

    frame = client.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=3))

    assert frame["ts"].tolist() == [DAY, DAY + pd.Timedelta(days=2)]
    assert client.stats.requests == 1


def test_a_daily_series_is_refused(server: FakeCoinGecko, client: CoinGeckoClient) -> None:
    start_ms = DAY.value // 1_000_000
    times = start_ms + np.arange(3, dtype=np.int64) * 86_400_000
    server.scripted.append(
        Response.json(
            {
                "prices": [[int(t), 10.0] for t in times],
                "market_caps": [[int(t), 1e9] for t in times],
                "total_volumes": [[int(t), 1e6] for t in times],
            }
        )
    )
    with pytest.raises(BadPayload, match="hourly samples"):
        client.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=3))


@pytest.mark.parametrize("name", ["1h", "4h", "15m", "24h"])
def test_only_daily_bars_are_offered(client: CoinGeckoClient, name: str) -> None:
    with pytest.raises(ValueError, match="only 1d"):
        client.fetch_ohlcv("bitcoin", Interval.parse(name), DAY, DAY + pd.Timedelta(days=1))


def test_unknown_coin(client: CoinGeckoClient) -> None:
    with pytest.raises(UnknownSymbol) as caught:
        client.fetch_ohlcv("nocoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))
    assert caught.value.status == 404


def test_rate_limit_answer_carries_its_retry_after(
    server: FakeCoinGecko, client: CoinGeckoClient
) -> None:
    server.scripted.append(rate_limited(retry_after=119))
    with pytest.raises(RateLimited) as caught:
        client.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))
    assert (caught.value.status, caught.value.vendor_code, caught.value.retry_after) == (
        429,
        429,
        119,
    )


def test_rate_limit_is_retried_after_the_time_asked(server: FakeCoinGecko) -> None:
    server.scripted.append(rate_limited(retry_after=1))
    sleeps = support.Sleeps()
    rt = runtime(max_attempts=2)
    with CoinGeckoClient(KEY, server.url + ROOT, runtime=rt, clock=lambda: NOW, sleep=sleeps) as c:
        frame = c.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))
        assert c.stats.retries == 1
    assert len(frame) == 1
    assert sleeps.calls == [1.0]
    assert len(server.requests_to(BTC_CHART)) == 2


def test_the_servers_own_per_minute_limit_is_a_rate_limit(server: FakeCoinGecko) -> None:
    server.calls_per_minute = 1
    with CoinGeckoClient(KEY, server.url + ROOT, runtime=runtime(), clock=lambda: NOW) as client:
        client.latest_price("bitcoin")
        with pytest.raises(RateLimited) as caught:
            client.latest_price("ethereum")
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1


def test_server_errors_are_retried(server: FakeCoinGecko) -> None:
    server.scripted.append(Response(status=503, body=b"<html>Service Unavailable</html>"))
    sleeps = support.Sleeps()
    rt = runtime(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01)
    with CoinGeckoClient(KEY, server.url + ROOT, runtime=rt, clock=lambda: NOW, sleep=sleeps) as c:
        assert len(c.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))) == 1
        assert c.stats.retries == 1


@pytest.mark.parametrize(
    ("answer", "error", "code"),
    [
        (Response(status=500, body=b"<html>Internal error</html>"), Unavailable, None),
        (cdn_blocked(), RequestRejected, 1020),
        (Response(status=200, body=b"<html>maintenance</html>"), BadPayload, None),
        (Response.json({"unexpected": "object"}), BadPayload, None),
        (
            Response.json({"status": {"error_code": 429, "error_message": "throttled"}}),
            RateLimited,
            429,
        ),
        (
            Response.json({"error": {"status": {"error_code": 10005, "error_message": "paid"}}}),
            Unauthorized,
            10005,
        ),
    ],
    ids=["500-html", "403-cdn-1020", "200-html", "200-object", "200-429-body", "200-10005"],
)
def test_error_answers_become_typed_errors(
    server: FakeCoinGecko, client: CoinGeckoClient, answer: Response, error: type, code: object
) -> None:
    server.scripted.append(answer)
    with pytest.raises(error) as caught:
        client.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))
    assert (caught.value.provider, caught.value.vendor_code) == (PROVIDER, code)


def test_a_wrong_key_is_unauthorized_and_never_shown(server: FakeCoinGecko) -> None:
    wrong = "CG-wrong-key-do-not-print"
    with CoinGeckoClient(wrong, server.url + ROOT, runtime=runtime(), clock=lambda: NOW) as c:
        with pytest.raises(Unauthorized) as caught:
            c.fetch_ohlcv("bitcoin", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))
        with pytest.raises(Unauthorized) as on_price:
            c.latest_price("bitcoin")
    for exc in (caught.value, on_price.value):
        assert exc.vendor_code == 10002
        assert wrong not in str(exc) and wrong not in repr(exc.args)


def test_keyless_client_sends_no_key_header(server: FakeCoinGecko) -> None:
    server.api_key = None
    rt = runtime(CoinGeckoClient.KEYLESS_LIMITS)
    with CoinGeckoClient(None, server.url + ROOT, runtime=rt, clock=lambda: NOW) as client:
        assert client.latest_price("solana").symbol == "solana"
    [request] = server.requests_to(SIMPLE_PRICE)
    assert not {"x-cg-demo-api-key", "x-cg-pro-api-key"} & set(request.headers)


def test_pro_plan_uses_the_pro_header_and_host(server: FakeCoinGecko) -> None:
    server.plan = "pro"
    with CoinGeckoClient(
        KEY, server.url + ROOT, plan="pro", runtime=runtime(), clock=lambda: NOW
    ) as client:
        client.latest_price("bitcoin")
    [request] = server.requests_to(SIMPLE_PRICE)
    assert request.headers["x-cg-pro-api-key"] == KEY
    assert "x-cg-demo-api-key" not in request.headers

    for key, plan, url in [(KEY, "pro", PRO_BASE_URL), (KEY, "demo", DEFAULT_BASE_URL)]:
        with CoinGeckoClient(key, plan=plan, runtime=runtime()) as default:
            assert default.base_url == url


def test_a_demo_key_on_the_pro_host_is_refused_by_the_server(
    server: FakeCoinGecko, client: CoinGeckoClient
) -> None:
    server.plan = "pro"
    with pytest.raises(Unauthorized) as caught:
        client.latest_price("bitcoin")
    assert caught.value.vendor_code == 10011


def test_pro_plan_needs_a_key_and_plans_are_checked() -> None:
    with pytest.raises(MissingCredentials, match=KEY_VARIABLE):
        CoinGeckoClient(None, plan="pro", runtime=runtime())
    with pytest.raises(MissingCredentials):
        CoinGeckoClient("", plan="pro", runtime=runtime())
    with pytest.raises(ValueError, match="plan"):
        CoinGeckoClient(KEY, plan="enterprise", runtime=runtime())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="pro host"):
        CoinGeckoClient(KEY, PRO_BASE_URL, runtime=runtime())


def test_latest_price(server: FakeCoinGecko, client: CoinGeckoClient) -> None:
    quote = client.latest_price("ethereum")

    assert quote.symbol == "ethereum" and quote.provider == PROVIDER
    assert quote.price > 0
    assert quote.ts == pd.Timestamp(server.now_ms // 1000 - 17, unit="s", tz="UTC")
    [request] = server.requests_to(SIMPLE_PRICE)
    assert request.query == {
        "ids": "ethereum",
        "vs_currencies": "usd",
        "include_last_updated_at": "true",
        "precision": "full",
    }


@pytest.mark.parametrize(
    ("date", "stamp"),
    [
        # the server's Date: when the answer (and so the price) was made
        ("Sat, 01 Jun 2024 11:59:58 GMT", pd.Timestamp("2024-06-01T11:59:58Z")),
        # no Date, or one that does not parse: the client's clock
        (None, NOW),
        ("yesterday at noon", NOW),
        # a Date after the client's clock is not believed past it
        ("Sat, 01 Jun 2024 12:03:00 GMT", NOW),
    ],
    ids=["date-header", "no-date", "malformed-date", "date-ahead-of-the-clock"],
)
def test_latest_price_without_its_update_time_is_as_of_the_answer(
    server: FakeCoinGecko, client: CoinGeckoClient, date: str | None, stamp: pd.Timestamp
) -> None:
    answer = Response.json({"ethereum": {"usd": 3781.25}})
    # The fake server adds its own Date unless the answer has one; an empty one is malformed.
    answer.headers["Date"] = date if date is not None else ""
    server.scripted.append(answer)

    quote = client.latest_price("ethereum")

    assert (quote.price, quote.ts) == (3781.25, stamp)


def test_latest_price_of_an_unknown_coin(client: CoinGeckoClient) -> None:
    with pytest.raises(UnknownSymbol) as caught:
        client.latest_price("nocoin")
    assert caught.value.status == 200


def test_coin_ids_are_quoted_into_the_path(server: FakeCoinGecko, client: CoinGeckoClient) -> None:
    with pytest.raises(UnknownSymbol):
        client.fetch_ohlcv("bit/coin?x=1", ONE_DAY, DAY, DAY + pd.Timedelta(days=1))
    [request] = server.requests
    assert request.path == f"{ROOT}/coins/bit%2Fcoin%3Fx%3D1/market_chart/range"


def test_demo_key_error_answers_from_the_server(
    server: FakeCoinGecko, client: CoinGeckoClient
) -> None:
    server.scripted.append(status_error(401, 10002, "API Key Missing"))
    with pytest.raises(Unauthorized) as caught:
        client.latest_price("bitcoin")
    assert (caught.value.status, caught.value.vendor_code) == (401, 10002)
