"""``fks-stream`` as a process: its console script, /health, /metrics, and a clean stop."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import redis

from fks_pipelines.api.app import create_app
from fks_pipelines.realtime.prices import LivePrices
from fks_pipelines.settings import Settings
from fks_pipelines.warehouse.store import Warehouse
from fks_pipelines.warehouse.webhook_events import WebhookEventStore
from fks_pipelines_tests.api.support import served
from fks_pipelines_tests.fakes.binance import FakeBinance, bar_values
from fks_pipelines_tests.fakes.binance_stream import FakeBinanceStream, kline
from fks_pipelines_tests.realtime.support import fks_stream

HOUR_MS = 3_600_000


def test_fks_stream_stores_closed_klines_keeps_live_prices_and_reports_itself(
    tmp_path: Path, redis_url: str, redis_client: redis.Redis
) -> None:
    with FakeBinanceStream() as stream, FakeBinance() as rest:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "FKS_DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": redis_url,
            "FKS_BINANCE_WS_URL": stream.url,
            "FKS_BINANCE_BASE_URL": rest.url,
        }
        with fks_stream(env, tmp_path / "stream.log") as service:
            [subscribed] = stream.connects
            # The default universe: three symbols, 1h and 1d, on one connection.
            assert subscribed == {
                f"{s}@kline_{i}" for s in ("btcusdt", "ethusdt", "solusdt") for i in ("1h", "1d")
            }
            now_ms = int(time.time() * 1000)
            opened = now_ms - now_ms % HOUR_MS
            stream.send(
                [
                    kline("ETHUSDT", "1h", opened - HOUR_MS, closed=True, event_ms=opened + 3),
                    kline("BTCUSDT", "1h", opened, closed=False, event_ms=now_ms, price=43210.5),
                ]
            )
            store = WebhookEventStore(
                Warehouse.from_url(f"sqlite:///{tmp_path / 'data' / 'warehouse.sqlite'}")
            )
            service.wait_until(lambda: store.count() == 1, "the closed kline stored")
            service.wait_until(
                lambda: LivePrices(redis_client).get("BTCUSDT") is not None, "the live price"
            )
            health = service.health()
            metrics = service.metrics()

            # fks-api answers from the stream while it is fresh, from REST once it has stopped.
            def tick() -> None:
                at_ms = int(time.time() * 1000)
                stream.send([kline("BTCUSDT", "1h", opened, False, event_ms=at_ms, price=43210.5)])

            answers = asyncio.run(prices_until_stale(env, tick))
            assert service.stop() == 0

    [event] = store.to_handle(0, 10)
    assert (event.id, event.closed) == (f"binance:ETHUSDT:1h:{opened - HOUR_MS}:closed", True)
    live = LivePrices(redis_client).get("BTCUSDT")
    assert live is not None and live.price == 43210.5
    assert health["status"] == "ok"
    [connection] = health["connections"]
    assert (connection["streams"], connection["open"], connection["frames"]) == (6, True, 2)
    assert 'fks_stream_messages_total{kind="closed"} 1.0' in metrics
    assert 'fks_stream_events_total{outcome="stored",source="stream"} 1.0' in metrics
    assert "fks_stream_lag_seconds_count 1.0" in metrics
    assert [a["source"] for a in answers] == ["stream", "rest"]
    assert answers[0]["price"] == 43210.5 and answers[0]["age_s"] <= MAX_AGE_S
    rest_price = bar_values(np.array([rest.now_ms]), 60_000)["close"][0]
    assert answers[1]["price"] == float(f"{rest_price:.2f}")
    store.warehouse.engine.dispose()


MAX_AGE_S = 1.0


async def prices_until_stale(env: dict[str, str], tick: Callable[[], None]) -> list[dict]:
    """BTCUSDT's price from fks-api while the stream ticks, then once the stream has been quiet
    longer than ``FKS_STREAM_PRICE_MAX_AGE_S``."""
    settings = Settings(**{**env, "FKS_STREAM_PRICE_MAX_AGE_S": MAX_AGE_S})
    params = {"symbol": "BTCUSDT", "provider": "binance"}
    async with served(create_app(settings)) as api:
        for _ in range(50):  # a tick reaches Redis within fks-stream's flush (50 ms)
            tick()
            first = (await api.get("/api/v1/data/price", params=params)).json()
            if first["source"] == "stream":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(MAX_AGE_S + 0.5)
        second = (await api.get("/api/v1/data/price", params=params)).json()
    return [first, second]
