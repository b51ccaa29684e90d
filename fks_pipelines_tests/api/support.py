"""Helpers of the HTTP service tests: the providers' local servers, settings pointing at them, and
the app served in process or on a real socket."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from fks_pipelines.api.server import protocol_options
from fks_pipelines.api.services import Services
from fks_pipelines.settings import Settings
from fks_pipelines_tests.fakes.alpha_vantage import FakeAlphaVantage
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.coingecko import FakeCoinGecko
from fks_pipelines_tests.fakes.coinmarketcap import FakeCoinMarketCap
from fks_pipelines_tests.fakes.eodhd import FakeEodhd
from fks_pipelines_tests.fakes.polygon import FakePolygon

# Distinctive keys, so that a test can look for them in every answer and log line.
KEYS = {
    "polygon": "polygon-key-5ec7e7",
    "coingecko": "coingecko-key-5ec7e7",
    "coinmarketcap": "cmc-key-5ec7e7",
    "alpha_vantage": "av-key-5ec7e7",
    "eodhd": "eodhd-key-5ec7e7",
}


@dataclass
class Fakes:
    """One local server per provider."""

    binance: FakeBinance
    polygon: FakePolygon
    coingecko: FakeCoinGecko
    coinmarketcap: FakeCoinMarketCap
    alpha_vantage: FakeAlphaVantage
    eodhd: FakeEodhd

    @classmethod
    def start(cls, stack: ExitStack) -> Fakes:
        coingecko = FakeCoinGecko()
        coingecko.api_key = KEYS["coingecko"]
        return cls(
            binance=stack.enter_context(FakeBinance()),
            polygon=stack.enter_context(FakePolygon(api_key=KEYS["polygon"])),
            coingecko=stack.enter_context(coingecko),
            coinmarketcap=stack.enter_context(FakeCoinMarketCap(api_key=KEYS["coinmarketcap"])),
            alpha_vantage=stack.enter_context(FakeAlphaVantage()),
            eodhd=stack.enter_context(FakeEodhd(api_key=KEYS["eodhd"])),
        )

    def settings(self, data_dir: Path, **overrides: Any) -> Settings:
        """Settings pointing every provider at its local server, with every key set, one
        attempt per request and rates no test waits for; ``overrides`` by variable name."""
        values: dict[str, Any] = {
            "FKS_DATA_DIR": data_dir,
            "FKS_BINANCE_BASE_URL": self.binance.url,
            "FKS_POLYGON_BASE_URL": self.polygon.url,
            "FKS_COINGECKO_BASE_URL": f"{self.coingecko.url}/api/v3",
            "FKS_COINMARKETCAP_BASE_URL": self.coinmarketcap.url,
            "FKS_ALPHA_VANTAGE_BASE_URL": self.alpha_vantage.url,
            "FKS_EODHD_BASE_URL": self.eodhd.base_url,
            "POLYGON_API_KEY": KEYS["polygon"],
            "COINGECKO_API_KEY": KEYS["coingecko"],
            "COINMARKETCAP_API_KEY": KEYS["coinmarketcap"],
            "ALPHA_VANTAGE_API_KEY": KEYS["alpha_vantage"],
            "EODHD_API_KEY": KEYS["eodhd"],
            "FKS_HTTP_MAX_ATTEMPTS": 1,
            "FKS_HTTP_CONNECT_TIMEOUT_S": 2,
            "FKS_HTTP_READ_TIMEOUT_S": 2,
            **{f"FKS_{provider.upper()}_RPS": 1000 for provider in (*KEYS, "binance")},
            "REDIS_URL": None,
        }
        values.update(overrides)
        return Settings(**values)

    def requests(self) -> int:
        """Requests every server received."""
        return sum(
            len(server.requests)
            for server in (
                self.binance,
                self.polygon,
                self.coingecko,
                self.coinmarketcap,
                self.alpha_vantage,
                self.eodhd,
            )
        )


@asynccontextmanager
async def served(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``app`` in process (``httpx.ASGITransport``), with the app's lifespan run."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


def services_of(app: FastAPI) -> Services:
    return app.state.services


@contextmanager
def uvicorn_server(app: FastAPI, settings: Settings | None = None) -> Iterator[str]:
    """``app`` served by uvicorn on a free loopback port in a thread, with ``fks-api``'s HTTP
    protocol and the limits on request heads of ``settings`` (default: the defaults); yields
    its base URL."""
    options = protocol_options(settings or Settings())
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=0, log_level="warning", access_log=False, **options
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
