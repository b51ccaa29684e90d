"""CoinGecko payloads -> samples, daily bars, quotes and typed errors, from the real fixtures."""

import gzip
import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from fks_pipelines.market.frame import COLUMNS, validate
from fks_pipelines.providers import coingecko
from fks_pipelines.providers.errors import (
    BadPayload,
    RateLimited,
    RequestRejected,
    Unauthorized,
    Unavailable,
    UnknownSymbol,
)
from fks_pipelines_tests.providers.support import assert_bars

FIXTURES = Path(__file__).parent.parent / "fixtures" / "coingecko"
DAY = pd.Timestamp("2024-01-05", tz="UTC")


def load(name: str) -> object:
    return json.loads((FIXTURES / name).read_text())


def utc(ms: int) -> pd.Timestamp:
    return pd.Timestamp(ms, unit="ms", tz="UTC")


def chart(times_ms: np.ndarray, prices: np.ndarray, volumes: np.ndarray) -> dict:
    return {
        "prices": np.column_stack([times_ms, prices]).tolist(),
        "market_caps": np.column_stack([times_ms, prices * 1e6]).tolist(),
        "total_volumes": np.column_stack([times_ms, volumes]).tolist(),
    }


def hourly_day(day: pd.Timestamp = DAY, hours: int = 24) -> np.ndarray:
    """Sample times a few seconds past each hour of ``day``, as CoinGecko sends them."""
    start = day.value // 1_000_000
    return start + np.arange(hours, dtype=np.int64) * 3_600_000 + 41_331


# --- market_chart/range ---------------------------------------------------------------------


def test_openapi_market_chart_example_parses_to_its_samples() -> None:
    prices, volumes = coingecko.parse_market_chart(
        load("coins_bitcoin_market_chart_range_openapi_example.json")
    )

    assert prices.index.tolist() == [utc(1704067241331), utc(1704070847420), utc(1704074443652)]
    assert prices.tolist() == [42261.0406175669, 42493.2764087546, 42654.0731066594]
    assert volumes.tolist() == [14305769170.9498, 14130205376.1709, 13697382902.2424]


def test_three_hours_of_samples_do_not_make_a_daily_bar() -> None:
    # The docs example covers 00:00-02:00 of 2024-01-01 only: not a closed day.
    prices, volumes = coingecko.parse_market_chart(
        load("coins_bitcoin_market_chart_range_openapi_example.json")
    )
    start = pd.Timestamp("2024-01-01", tz="UTC")

    frame = coingecko.daily_bars(prices, volumes, "bitcoin", start, start + pd.Timedelta(days=1))

    assert frame.empty
    assert list(frame.columns) == list(COLUMNS)


def test_daily_samples_are_refused_not_turned_into_bars() -> None:
    # A range beyond 90 days comes back daily (00:00 points plus a live "now" point).
    prices, volumes = coingecko.parse_market_chart(
        load("coins_market_chart_range_docs_example_jkorf.json")
    )
    assert prices.index.tolist() == [utc(1711843200000), utc(1711929600000), utc(1711983682000)]
    assert prices.tolist() == [69702.3087473573, 71246.9514406015, 68887.7495158568]
    assert volumes.tolist() == [16408802301.8374, 19723005998.215, 30137418199.6431]

    with pytest.raises(BadPayload, match="hourly samples"):
        coingecko.daily_bars(
            prices,
            volumes,
            "bitcoin",
            pd.Timestamp("2024-03-31", tz="UTC"),
            pd.Timestamp("2024-04-02", tz="UTC"),
        )


def test_hourly_samples_form_a_sampled_bar_with_the_24h_usd_volume_as_given() -> None:
    times = hourly_day()
    prices = 100.0 + np.arange(24.0)
    prices[5], prices[17] = 150.0, 90.0
    volumes = np.full(24, 1_000_000.0)
    volumes[-1] = 2_400_000.0
    payload = chart(times, prices, volumes)

    frame = coingecko.daily_bars(
        *coingecko.parse_market_chart(payload), "bitcoin", DAY, DAY + pd.Timedelta(days=1)
    )

    assert_bars(
        frame,
        provider="coingecko",
        symbol="bitcoin",
        interval="1d",
        ts=[DAY],
        open=[100.0],
        high=[150.0],  # the largest *sampled* price
        low=[90.0],
        close=[123.0],
        volume=None,  # coins: CoinGecko states none, and USD / a mean price would be ours
        quote_volume=[2_400_000.0],  # the rolling 24 h USD volume at the day's last sample
        vwap=None,
        trades=None,
        bar_kind="sampled",
    )


def test_days_the_samples_do_not_cover_are_left_out() -> None:
    two_days = np.concatenate([hourly_day(), hourly_day(DAY + pd.Timedelta(days=1))])
    complete = chart(two_days, np.full(48, 10.0), np.full(48, 5.0))
    late_end = {k: v[:-2] for k, v in complete.items()}  # day 2 ends at 21:00
    hole = {k: v[:8] + v[13:] for k, v in complete.items()}  # day 1 misses 08:00-12:00
    live = {k: v[:30] for k, v in complete.items()}  # day 2 stops at 05:00 ("now")
    window = (DAY, DAY + pd.Timedelta(days=2))

    def days(payload: dict) -> list[pd.Timestamp]:
        prices, volumes = coingecko.parse_market_chart(payload)
        return coingecko.daily_bars(prices, volumes, "bitcoin", *window)["ts"].tolist()

    assert days(complete) == [DAY, DAY + pd.Timedelta(days=1)]
    assert days(late_end) == [DAY]
    assert days(hole) == [DAY + pd.Timedelta(days=1)]
    assert days(live) == [DAY]


def test_arrays_are_not_assumed_parallel_and_nulls_are_missing_samples() -> None:
    times = hourly_day()
    payload = chart(times, np.full(24, 10.0), np.full(24, 40.0))
    payload["prices"][3][1] = None
    payload["total_volumes"] = payload["total_volumes"][:20]  # volumes stop at 19:00

    prices, volumes = coingecko.parse_market_chart(payload)
    frame = coingecko.daily_bars(prices, volumes, "bitcoin", DAY, DAY + pd.Timedelta(days=1))

    assert len(prices) == 23 and len(volumes) == 20
    assert frame["quote_volume"].tolist() == [40.0]  # the last volume sample, at 19:00
    assert frame["volume"].isna().all()


def test_five_minute_samples_also_form_a_bar() -> None:
    start = DAY.value // 1_000_000
    times = start + np.arange(288, dtype=np.int64) * 300_000 + 7_000
    prices = 50.0 + (np.arange(288) % 10)

    frame = coingecko.daily_bars(
        *coingecko.parse_market_chart(chart(times, prices, np.full(288, 59.0))),
        "bitcoin",
        DAY,
        DAY + pd.Timedelta(days=1),
    )

    assert frame[["open", "high", "low", "close"]].iloc[0].tolist() == [50.0, 59.0, 50.0, 57.0]


def test_empty_arrays_are_an_empty_frame() -> None:
    # A coin before its listing answers three empty arrays.
    payload = {"prices": [], "market_caps": [], "total_volumes": []}
    frame = coingecko.daily_bars(
        *coingecko.parse_market_chart(payload), "bitcoin", DAY, DAY + pd.Timedelta(days=1)
    )
    assert frame.empty
    validate(frame)


@pytest.mark.parametrize(
    "payload",
    [
        [[1704067241331, 42261.04]],
        {"prices": [[1704067241331, 1.0]], "market_caps": []},
        {"prices": [[1704067241331, "abc"]], "total_volumes": []},
        {"prices": [[1704067241331]], "total_volumes": []},
        {"prices": [[1704067241331, 1.0, 2.0]], "total_volumes": []},
        {"prices": [[None, 1.0]], "total_volumes": []},
        {"prices": "none", "total_volumes": []},
        {"prices": [[1, 2], [3]], "total_volumes": []},
        "<html>maintenance</html>",
        None,
    ],
    ids=[
        "list",
        "no-volumes",
        "text-price",
        "short-pair",
        "long-pair",
        "null-time",
        "string-array",
        "ragged",
        "html-string",
        "null",
    ],
)
def test_malformed_market_chart_is_bad_payload(payload: object) -> None:
    with pytest.raises(BadPayload) as caught:
        coingecko.parse_market_chart(payload)
    assert caught.value.provider == "coingecko"


# --- simple/price ---------------------------------------------------------------------------


ANSWERED_AT = pd.Timestamp("2024-03-25T08:45:17Z")


def test_openapi_simple_price_example() -> None:
    quote = coingecko.parse_simple_price(
        load("simple_price_bitcoin_usd_full_openapi_example.json"),
        "bitcoin",
        answered_at=ANSWERED_AT,
    )
    assert quote.price == 67187.3358936566
    assert quote.ts == pd.Timestamp(1711356300, unit="s", tz="UTC")  # last_updated_at wins
    assert (quote.provider, quote.symbol) == ("coingecko", "bitcoin")


@pytest.mark.parametrize("updated", ["absent", "null"])
def test_recorded_simple_price_without_update_time_is_as_of_the_answer(updated: str) -> None:
    # Recorded without include_last_updated_at: the price is the one current when CoinGecko
    # answered, so the answer's time stamps it.
    payload = load("simple_price_ethereum_usd_jkorf.json")
    assert payload == {"ethereum": {"usd": 1498.64}}
    if updated == "null":
        payload["ethereum"]["last_updated_at"] = None

    quote = coingecko.parse_simple_price(payload, "ethereum", answered_at=ANSWERED_AT)

    assert (quote.price, quote.ts) == (1498.64, ANSWERED_AT)


def test_missing_id_is_unknown_symbol() -> None:
    with pytest.raises(UnknownSymbol) as caught:
        coingecko.parse_simple_price(
            load("simple_price_ethereum_usd_jkorf.json"), "nocoin", answered_at=ANSWERED_AT
        )
    assert caught.value.status == 200
    with pytest.raises(UnknownSymbol):
        coingecko.parse_simple_price({}, "bitcoin", answered_at=ANSWERED_AT)


@pytest.mark.parametrize(
    "payload",
    [
        {"bitcoin": {"eur": 1.0, "last_updated_at": 1711356300}},
        {"bitcoin": {"usd": "x", "last_updated_at": 1711356300}},
        {"bitcoin": {"usd": 0, "last_updated_at": 1711356300}},
        {"bitcoin": {"usd": 1.0, "last_updated_at": "2024-03-25"}},
        {"bitcoin": {"usd": 1.0, "last_updated_at": True}},
        {"bitcoin": None},
        [1.0],
        "text",
    ],
    ids=["no-usd", "text-price", "zero-price", "text-time", "bool-time", "null", "list", "str"],
)
def test_malformed_simple_price_is_bad_payload(payload: object) -> None:
    with pytest.raises(BadPayload):
        coingecko.parse_simple_price(payload, "bitcoin", answered_at=ANSWERED_AT)


# --- errors ---------------------------------------------------------------------------------


def answer(
    status: int, body: object = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def test_rate_limit_fixture_maps_to_rate_limited_with_retry_after() -> None:
    body = load("error_429_rate_limit_log_quote.json")
    error = coingecko.map_error(answer(429, body, {"retry-after": "119"}), body)
    assert type(error) is RateLimited
    assert (error.status, error.vendor_code, error.retry_after) == (429, 429, 119)
    assert error.retryable
    assert "exceeded the Rate Limit" in str(error)


def test_recorded_incorrect_path_404_is_a_rejected_request_not_an_unknown_coin() -> None:
    # The real 404 for a wrong path (the coin id in that URL was a test-harness repr): our
    # request was wrong, which says nothing about the coin.
    body = load("error_404_incorrect_path_openbb.json")
    error = coingecko.map_error(answer(404, body), body)
    assert type(error) is RequestRejected
    assert not isinstance(error, UnknownSymbol)
    assert (error.status, error.vendor_code) == (404, None)
    assert str(error) == (
        "coingecko: Incorrect path. Please check https://www.coingecko.com/api/ (HTTP 404)"
    )


@pytest.mark.parametrize(
    "message",
    ["coin not found", "Could not find coin with the given id", "Coin Not Found"],
)
def test_a_404_naming_an_unknown_coin_is_an_unknown_symbol(message: str) -> None:
    for body in ({"error": message}, {"status": {"error_code": 404, "error_message": message}}):
        error = coingecko.map_error(answer(404, body), body)
        assert type(error) is UnknownSymbol, body
        assert error.status == 404
        assert str(error).startswith(f"coingecko: unknown coin id: {message} (HTTP 404")


@pytest.mark.parametrize(
    "message",
    ["Incorrect path. Please check https://www.coingecko.com/api/", "Not Found", "coins endpoint"],
)
def test_a_404_that_does_not_name_a_coin_is_not_an_unknown_symbol(message: str) -> None:
    error = coingecko.map_error(answer(404, {"error": message}), {"error": message})
    assert type(error) is RequestRejected


def test_cassette_holds_the_same_404() -> None:
    cassette = yaml.safe_load(
        (FIXTURES / "cassette_openbb_market_chart_404_incorrect_path.yaml").read_text()
    )
    response = cassette["interactions"][0]["response"]
    body = json.loads(gzip.decompress(response["body"]["string"]))
    assert response["status"]["code"] == 404
    assert body == load("error_404_incorrect_path_openbb.json")


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (404, {"error": "coin not found"}, UnknownSymbol, None),
        (404, {"error": "Could not find coin with the given id"}, UnknownSymbol, None),
        (400, {"error": "invalid vs_currency"}, RequestRejected, None),
        (
            401,
            {"status": {"error_code": 10002, "error_message": "API Key Missing"}},
            Unauthorized,
            10002,
        ),
        (
            400,
            {"status": {"error_code": 10010, "error_message": "use pro-api"}},
            Unauthorized,
            10010,
        ),
        (401, {"status": {"error_code": 10011, "error_message": "use api"}}, Unauthorized, 10011),
        (403, {"status": {"error_code": 10005, "error_message": "paid plan"}}, Unauthorized, 10005),
        (
            401,
            {
                "error": {
                    "status": {
                        "timestamp": "2024-04-20T22:00:05.123+00:00",
                        "error_code": 10012,
                        "error_message": "Your request exceeds the allowed time range. Public "
                        "API users are limited to querying historical data within the past 365 "
                        "days.",
                    }
                }
            },
            Unauthorized,
            10012,
        ),
        (408, None, Unavailable, None),
        (500, {"error": "Internal Server Error"}, Unavailable, None),
        (503, None, Unavailable, None),
    ],
    ids=[
        "coin-not-found",
        "could-not-find-coin",
        "bad-param",
        "10002-missing-key",
        "10010-pro-key-on-demo-host",
        "10011-demo-key-on-pro-host",
        "10005-paid-endpoint",
        "10012-beyond-365-days",
        "408",
        "500",
        "503",
    ],
)
def test_documented_errors_map_to_their_type(
    status: int, body: object, expected: type, code: int | None
) -> None:
    error = coingecko.map_error(answer(status, body), body)
    assert type(error) is expected
    assert (error.provider, error.status, error.vendor_code) == ("coingecko", status, code)


def test_cdn_firewall_html_is_rejected_with_code_1020() -> None:
    html = b"<html><title>Access denied</title><body>error code: 1020</body></html>"
    error = coingecko.map_error(httpx.Response(403, content=html), None)
    assert type(error) is RequestRejected
    assert (error.status, error.vendor_code) == (403, 1020)


def test_html_502_is_unavailable() -> None:
    error = coingecko.map_error(httpx.Response(502, content=b"<html>Bad gateway</html>"), None)
    assert type(error) is Unavailable and error.vendor_code is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (load("error_429_rate_limit_log_quote.json"), RateLimited),
        ({"error": {"status": {"error_code": 10002, "error_message": "x"}}}, Unauthorized),
        ({"error": "coin not found"}, UnknownSymbol),
        ({"error": "invalid vs_currency"}, RequestRejected),
    ],
    ids=["429-in-body", "10002-nested", "unknown-coin", "error-string"],
)
def test_error_bodies_inside_http_200_are_errors(body: object, expected: type) -> None:
    error = coingecko.check_body(body)
    assert type(error) is expected
    assert error.status == 200


@pytest.mark.parametrize(
    "body",
    [
        load("simple_price_bitcoin_usd_full_openapi_example.json"),
        {"status": {"usd": 0.03, "last_updated_at": 1711356300}},  # Status Network's id
        load("coins_bitcoin_market_chart_range_openapi_example.json"),
        [],
    ],
    ids=["simple-price", "coin-named-status", "market-chart", "list"],
)
def test_data_bodies_are_not_errors(body: object) -> None:
    assert coingecko.check_body(body) is None
