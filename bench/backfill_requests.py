"""Upstream requests of a daily-partition backfill, next to the fewest the provider's paging allows.

    .venv/bin/python -m bench.backfill_requests [--days 366] [--start 2024-01-01]

Run from the repository root. For each provider and interval, one symbol is backfilled the way
the OHLCV assets do it: one ``fetch_ohlcv(symbol, interval, day_start, day_end, anchor=start)``
per UTC day of ``[start, start + days)``, in order, through one client whose runtime caches on
disk (``cache_dir``, a temporary directory removed afterwards) and whose limiter is fast enough
not to matter (1,000 requests/s, no quotas; Binance keeps its weight window), against the
provider's local fake server. The fakes' clocks and the client's are set a year after the window,
so every bar of it has closed.

Measured: the bar requests the server received (price endpoints are not counted). Baseline
("minimum"): the fewest requests the provider's paging allows for the window, ceil(bars in the
window / bars per request): Binance 1,500 bars, Polygon 50,000 base bars (833 1h bars), CoinGecko
90 days, CoinMarketCap 10,000 periods, EODHD intraday its maximal span (7,200 days at 1h); one
request for Alpha Vantage daily (the whole history) and EODHD daily (any range). Ratio =
requests / minimum (goal 1.0). For contrast, the naive count (one request per partition) and the
same backfill without an anchor (each day's window fetched as asked). Where the provider charges
in its own unit, that cost is shown too (Binance request weight, CoinMarketCap credits, EODHD API
calls). Both runs must return the same bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers import (
    alpha_vantage,
    binance,
    coingecko,
    coinmarketcap,
    eodhd,
    polygon,
)
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.cache import DiskBackend
from fks_pipelines.providers.ratelimit import Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, build_runtime
from fks_pipelines_tests.fakes.alpha_vantage import FakeAlphaVantage
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.coingecko import FakeCoinGecko
from fks_pipelines_tests.fakes.coinmarketcap import FakeCoinMarketCap
from fks_pipelines_tests.fakes.eodhd import FakeEodhd
from fks_pipelines_tests.fakes.polygon import FakePolygon
from fks_pipelines_tests.fakes.server import LocalHttpServer, Request

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class Case:
    """One provider and interval: how to serve it, reach it, and count what it received.

    Attributes:
        minimum: The fewest bar requests for ``[start, end)`` the provider's paging allows.
        cost: The provider's own charge for the run (weight, credits, calls), or ``None``.
    """

    provider: str
    interval: str
    symbol: str
    client_class: type[ProviderClient]
    server: Callable[[pd.Timestamp], LocalHttpServer]
    client: Callable[[LocalHttpServer, ProviderRuntime, Callable[[], pd.Timestamp]], ProviderClient]
    is_bars: Callable[[Request], bool]
    minimum: Callable[[Interval, pd.Timestamp, pd.Timestamp], int]
    cost_unit: str | None = None
    cost: Callable[[LocalHttpServer, list[Request]], int] | None = None


def bars_in(interval: Interval, start: pd.Timestamp, end: pd.Timestamp) -> int:
    return (end - start) // interval.offset


def per_page(bars: int) -> Callable[[Interval, pd.Timestamp, pd.Timestamp], int]:
    return lambda interval, start, end: math.ceil(bars_in(interval, start, end) / bars)


def per_days(days: int) -> Callable[[Interval, pd.Timestamp, pd.Timestamp], int]:
    return lambda _interval, start, end: math.ceil((end - start) / (days * DAY))


def one(_interval: Interval, _start: pd.Timestamp, _end: pd.Timestamp) -> int:
    return 1


def _ms(ts: pd.Timestamp) -> int:
    return ts.value // 1_000_000


def fake_binance(now: pd.Timestamp) -> FakeBinance:
    server = FakeBinance()
    server.now_ms = _ms(now)
    return server


def fake_polygon(now: pd.Timestamp) -> FakePolygon:
    server = FakePolygon()
    server.now_ms = _ms(now)
    return server


def fake_coingecko(now: pd.Timestamp) -> FakeCoinGecko:
    server = FakeCoinGecko()
    server.now_ms = _ms(now)
    return server


def fake_cmc(now: pd.Timestamp) -> FakeCoinMarketCap:
    server = FakeCoinMarketCap()
    server.now = now
    return server


def fake_alpha_vantage(now: pd.Timestamp) -> FakeAlphaVantage:
    server = FakeAlphaVantage()
    server.now = now
    return server


def fake_eodhd(now: pd.Timestamp) -> FakeEodhd:
    server = FakeEodhd()
    server.now = now
    return server


def binance_weight(_server: LocalHttpServer, requests: list[Request]) -> int:
    return sum(binance.klines_weight(int(r.query["limit"])) for r in requests)


def _binance_case(interval: str) -> Case:
    return Case(
        "Binance",
        interval,
        "BTCUSDT",
        binance.BinanceClient,
        fake_binance,
        lambda s, runtime, clock: binance.BinanceClient(s.url, runtime=runtime, clock=clock),
        lambda r: r.path == binance.KLINES_PATH,
        per_page(binance.MAX_KLINES_PER_PAGE),
        "weight",
        binance_weight,
    )


def _polygon_case(interval: str) -> Case:
    return Case(
        "Polygon",
        interval,
        "X:BTCUSD",
        polygon.PolygonClient,
        fake_polygon,
        lambda s, runtime, clock: polygon.PolygonClient(
            s.api_key, s.url, runtime=runtime, clock=clock
        ),
        lambda r: r.path.startswith("/v2/aggs/"),
        lambda i, start, end: per_page(polygon.bars_per_page(i))(i, start, end),
    )


def _cmc_case(interval: str) -> Case:
    return Case(
        "CoinMarketCap",
        interval,
        "1",
        coinmarketcap.CoinMarketCapClient,
        fake_cmc,
        lambda s, runtime, clock: coinmarketcap.CoinMarketCapClient(
            s.api_key, s.url, runtime=runtime, clock=clock
        ),
        lambda r: r.path == coinmarketcap.OHLCV_PATH,
        per_page(coinmarketcap.MAX_COUNT),
        "credits",
        lambda s, _requests: s.credits_charged,
    )


def _eodhd_case(interval: str) -> Case:
    return Case(
        "EODHD",
        interval,
        "BTC-USD.CC",
        eodhd.EodhdClient,
        fake_eodhd,
        lambda s, runtime, clock: eodhd.EodhdClient(
            s.api_key, s.base_url, runtime=runtime, clock=clock
        ),
        lambda r: r.path.startswith(("/api/eod/", "/api/intraday/")),
        per_days(eodhd.MAX_SPAN_DAYS[interval]) if interval in eodhd.MAX_SPAN_DAYS else one,
        "API calls",
        lambda s, _requests: s.calls_used,
    )


CASES = (
    _binance_case("1h"),
    _binance_case("1d"),
    _polygon_case("1h"),
    _polygon_case("1d"),
    Case(
        "CoinGecko",
        "1d",
        "bitcoin",
        coingecko.CoinGeckoClient,
        fake_coingecko,
        lambda s, runtime, clock: coingecko.CoinGeckoClient(
            None, s.url + "/api/v3", runtime=runtime, clock=clock
        ),
        lambda r: r.path.endswith("/market_chart/range"),
        per_days(coingecko.MAX_DAYS_PER_REQUEST),
    ),
    _cmc_case("1h"),
    _cmc_case("1d"),
    Case(
        "Alpha Vantage",
        "1d",
        "AAPL",
        alpha_vantage.AlphaVantageClient,
        fake_alpha_vantage,
        lambda s, runtime, clock: alpha_vantage.AlphaVantageClient(
            "bench-key", s.url, runtime=runtime, clock=clock
        ),
        lambda r: r.query.get("function", "").startswith("TIME_SERIES_"),
        one,
    ),
    _eodhd_case("1h"),
    _eodhd_case("1d"),
)


@dataclass(frozen=True)
class Run:
    requests: int
    bars: int
    cost: int | None


def backfill(
    case: Case, start: pd.Timestamp, days: int, now: pd.Timestamp, *, anchored: bool
) -> Run:
    """One fetch per UTC day of ``[start, start + days)`` through one cached client."""
    interval = Interval.parse(case.interval)
    limits = dataclasses.replace(
        case.client_class.LIMITS, requests=(Window.per_second(1000),), quotas=()
    )
    with tempfile.TemporaryDirectory(prefix="fks-bench-backfill-") as directory:
        runtime = build_runtime(
            case.client_class.name, limits, RuntimeConfig(cache_dir=Path(directory))
        )
        try:
            with (
                case.server(now) as server,
                case.client(server, runtime, lambda: now) as client,
            ):
                bars = 0
                for day in range(days):
                    day_start = start + day * DAY
                    frame = client.fetch_ohlcv(
                        case.symbol,
                        interval,
                        day_start,
                        day_start + DAY,
                        anchor=start if anchored else None,
                    )
                    bars += len(frame)
                requests = [r for r in server.requests if case.is_bars(r)]
                cost = case.cost(server, requests) if case.cost is not None else None
        finally:
            cache = runtime.cache
            if cache is not None and isinstance(backend := cache.backend, DiskBackend):
                backend.cache.close()
    return Run(len(requests), bars, cost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2024-01-01", help="first partition (the anchor)")
    parser.add_argument("--days", type=int, default=366, help="daily partitions backfilled")
    args = parser.parse_args()
    start = pd.Timestamp(args.start, tz="UTC")
    end = start + args.days * DAY
    now = end + 365 * DAY  # every bar of the window closed long ago, on every clock

    print(
        f"backfill of {start:%Y-%m-%d} .. {end:%Y-%m-%d} ({args.days} daily partitions),"
        f" one symbol, anchor {start:%Y-%m-%d}; clocks at {now:%Y-%m-%d}"
    )
    header = (
        f"{'provider':<14} {'intv':<4} {'days':>4} {'requests':>8} {'minimum':>7}"
        f" {'ratio':>6} {'naive':>5} {'no anchor':>9}  provider cost (anchored / no anchor)"
    )
    print(header)
    print("-" * len(header))
    for case in CASES:
        interval = Interval.parse(case.interval)
        minimum = case.minimum(interval, start, end)
        planned = backfill(case, start, args.days, now, anchored=True)
        asked = backfill(case, start, args.days, now, anchored=False)
        if planned.bars != asked.bars:
            raise SystemExit(
                f"{case.provider} {case.interval}: {planned.bars} bars anchored,"
                f" {asked.bars} without an anchor"
            )
        cost = ""
        if case.cost_unit is not None:
            cost = f"{case.cost_unit} {planned.cost:,} / {asked.cost:,}"
        print(
            f"{case.provider:<14} {case.interval:<4} {args.days:>4} {planned.requests:>8}"
            f" {minimum:>7} {planned.requests / minimum:>6.2f} {args.days:>5}"
            f" {asked.requests:>9}  {cost}  ({planned.bars:,} bars)"
        )


if __name__ == "__main__":
    main()
