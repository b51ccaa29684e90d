"""GET /api/v1/data/ohlcv?format=csv: the JSON's bars as a table, its headers, streaming, and
refusals that stay JSON."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from fks_pipelines.api.app import create_app
from fks_pipelines.api.data import CHUNK_ROWS
from fks_pipelines.market.frame import build_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.warehouse.store import Scope, Warehouse
from fks_pipelines_tests.api.support import Fakes, served, uvicorn_server

OHLCV = "/api/v1/data/ohlcv"
DAY = pd.Timestamp("2024-01-05", tz="UTC")
WINDOW = {"interval": "1h", "start": "2024-01-05T00:00:00Z", "end": "2024-01-06T00:00:00Z"}
BIG = 5_000  # 1m bars: several chunks
BIG_WINDOW = {
    "interval": "1m",
    "start": "2024-01-05T00:00:00Z",
    "end": (DAY + pd.Timedelta(minutes=BIG)).isoformat(),
}
FIELDS = ["open", "high", "low", "close", "volume", "quote_volume"]


def bars(interval: str, count: int) -> pd.DataFrame:
    """``count`` BTCUSDT bars from DAY with digits a rounding printer would lose; every third
    volume NULL, no quote volume."""
    step = Interval.parse(interval).delta
    closes = 42_000.0 + np.sin(np.arange(count) / 7.0) * np.pi + 1e-9
    volume = np.arange(count) / 3.0
    volume[::3] = np.nan
    return build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval=interval,
        ts=pd.date_range(DAY, periods=count, freq=step),
        open=closes,
        high=closes + 1 / 3,
        low=closes - 0.1,
        close=closes,
        volume=volume,
    )


def store(url: str, frame: pd.DataFrame) -> None:
    interval = frame["interval"].iloc[0]
    end = frame["ts"].iloc[-1] + Interval.parse(interval).delta
    Warehouse.from_url(url).write_ohlcv(frame, Scope("binance", interval, ("BTCUSDT",), DAY, end))


def table(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text), dtype={"ts": str, "bar_kind": str})


def assert_same_bars(csv_text: str, candles: list[dict[str, object]]) -> None:
    """The CSV holds the JSON's candles, value for value (null as an empty field)."""
    got = table(csv_text)
    expected = pd.DataFrame(candles, columns=list(got.columns)).astype({f: float for f in FIELDS})
    assert list(got.columns) == ["ts", *FIELDS, "bar_kind"]
    assert got["ts"].tolist() == expected["ts"].tolist()
    assert got["bar_kind"].tolist() == expected["bar_kind"].tolist()
    for field in FIELDS:
        assert np.array_equal(got[field].to_numpy(), expected[field].to_numpy(), equal_nan=True)


@pytest.mark.anyio
async def test_csv_of_stored_bars_is_the_json_answer_value_for_value(
    fakes: Fakes, tmp_path: Path, warehouse_url: str
) -> None:
    stored = bars("1h", 24)
    store(warehouse_url, stored)
    app = create_app(fakes.settings(tmp_path, FKS_WAREHOUSE_URL=warehouse_url))
    params = {"symbol": "BTC-USD", **WINDOW}
    async with served(app) as api:
        as_json = await api.get(OHLCV, params=params)
        as_csv = await api.get(OHLCV, params={**params, "format": "csv"})
        default = await api.get(OHLCV, params={**params, "format": "json"})

    assert as_csv.status_code == 200, as_csv.text
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    body = as_json.json()
    assert body["candles"][0]["volume"] is None  # NULL volumes are compared too
    assert_same_bars(as_csv.text, body["candles"])
    assert as_csv.text.startswith("ts,open,high,low,close,volume,quote_volume,bar_kind\r\n")
    prices = ",".join(repr(float(stored[field].iloc[0])) for field in ("open", "high", "low"))
    assert f"\r\n2024-01-05T00:00:00Z,{prices}," in as_csv.text  # every digit of repr
    assert default.content == as_json.content
    assert {
        name: as_csv.headers[f"x-fks-{name.replace('_', '-')}"]
        for name in ("symbol", "provider", "provider_symbol", "source", "interval", "start", "end")
    } == {
        "symbol": "BTC-USD",
        "provider": "binance",
        "provider_symbol": "BTCUSDT",
        "source": "warehouse",
        "interval": "1h",
        "start": body["start"],
        "end": body["end"],
    }
    assert as_csv.headers["content-disposition"] == (
        'attachment; filename="BTC-USD_1h_20240105T0000Z_20240106T0000Z.csv"'
    )
    assert fakes.requests() == 0


@pytest.mark.anyio
async def test_csv_of_provider_bars_names_the_provider(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    params = {"symbol": "ETH-USD", **WINDOW}
    as_json = await api.get(OHLCV, params=params)
    as_csv = await api.get(OHLCV, params={**params, "format": "csv"})

    assert (as_csv.headers["x-fks-source"], as_csv.headers["x-fks-provider-symbol"]) == (
        "provider",
        "ETHUSDT",
    )
    assert_same_bars(as_csv.text, as_json.json()["candles"])


@pytest.mark.anyio
async def test_a_large_window_is_sent_in_chunks(
    fakes: Fakes, tmp_path: Path, warehouse_url: str
) -> None:
    store(warehouse_url, bars("1m", BIG))
    app = create_app(fakes.settings(tmp_path, FKS_WAREHOUSE_URL=warehouse_url))
    sent: list[int] = []  # the bytes of each body message the app sends

    async def noting(scope: Any, receive: Any, send: Any) -> None:
        async def note(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                sent.append(len(message["body"]))
            await send(message)

        await app(scope, receive, note)

    params = {"symbol": "BTC-USD", **BIG_WINDOW}
    sizes = {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=noting), base_url="http://t") as api,
    ):
        for answer_format in ("csv", "json"):
            sent.clear()
            response = await api.get(OHLCV, params={**params, "format": answer_format})
            assert response.status_code == 200
            assert sum(sent) == len(response.content)
            sizes[answer_format] = list(sent)

    chunks = -(-BIG // CHUNK_ROWS)
    assert len(sizes["csv"]) == 1 + chunks  # the header row, then the bars
    assert len(sizes["json"]) == 2 + chunks  # before the candles, the candles, after them
    assert max(sizes["csv"]) < sum(sizes["csv"]) / 4
    assert fakes.requests() == 0


def test_csv_through_a_socket_is_sent_chunked(fakes: Fakes, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    store(url, bars("1m", BIG))
    app = create_app(fakes.settings(tmp_path, FKS_WAREHOUSE_URL=url))
    params = {"symbol": "BTC-USD", **BIG_WINDOW}
    with uvicorn_server(app) as base, httpx.Client(base_url=base) as client:
        as_csv = client.get(OHLCV, params={**params, "format": "csv"})
        as_json = client.get(OHLCV, params=params)

    for response in (as_csv, as_json):
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
    assert len(table(as_csv.text)) == BIG
    assert_same_bars(as_csv.text, as_json.json()["candles"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"format": "xlsx"}, 422, "invalid_request"),
        ({"format": "CSV"}, 422, "invalid_request"),
        ({"format": "csv", "validate": "true"}, 422, "validate_needs_json"),
        ({"format": "csv", "symbol": "DOGE-USD"}, 404, "unknown_symbol"),
        ({"format": "csv", "interval": "7m"}, 422, "bad_interval"),
        ({"format": "csv", "end": "2024-01-04T00:00:00Z"}, 422, "bad_window"),
    ],
)
async def test_refusals_are_json_errors_without_an_upstream_request(
    api: httpx.AsyncClient, fakes: Fakes, params: dict[str, str], status: int, code: str
) -> None:
    response = await api.get(OHLCV, params={"symbol": "BTC-USD", **WINDOW, **params})

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert set(response.json()) == {"error"}
    assert response.json()["error"]["code"] == code
    assert "format" in response.json()["error"]["message"] or code != "invalid_request"
    assert fakes.requests() == 0


@pytest.mark.anyio
async def test_a_provider_failure_is_a_json_error_with_format_csv(
    api: httpx.AsyncClient, fakes: Fakes
) -> None:
    fakes.binance.failing_symbols.add("BTCUSDT")

    response = await api.get(
        OHLCV, params={"symbol": "BTCUSDT", "provider": "binance", "format": "csv", **WINDOW}
    )

    assert response.status_code >= 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"].startswith("upstream_")


@pytest.mark.anyio
async def test_the_openapi_document_describes_the_format_and_the_csv_answer(
    api: httpx.AsyncClient,
) -> None:
    operation = (await api.get("/openapi.json")).json()["paths"][OHLCV]["get"]

    [parameter] = [p for p in operation["parameters"] if p["name"] == "format"]
    assert (parameter["schema"]["enum"], parameter["schema"]["default"]) == (
        ["json", "csv"],
        "json",
    )
    ok = operation["responses"]["200"]
    assert set(ok["content"]) == {"application/json", "text/csv"}
    assert {"Content-Disposition", "X-FKS-Provider", "X-FKS-Source"} <= set(ok["headers"])
