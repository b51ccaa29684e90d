"""The circuit breaker, its state in-process, shared through real Redis, and shared through
files (embedded mode)."""

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.errors import Banned, CircuitOpen, Unavailable, UnknownSymbol
from fks_pipelines.providers.runtime import ProviderRuntime
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.server import Response
from fks_pipelines_tests.providers.support import (
    HOUR,
    KLINES,
    day,
    fetch_days,
    run_children,
    runtime,
)

RESET_S = 0.3


@pytest.fixture
def server() -> Iterator[FakeBinance]:
    with FakeBinance() as fake:
        yield fake


@pytest.fixture(params=["in-process", "redis", "files"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Runtime settings keeping breaker state in this process, in real Redis (emptied), or in
    files of a fresh data directory."""
    if request.param == "redis":
        request.getfixturevalue("redis_client")
        return {"redis_url": request.getfixturevalue("redis_url")}
    if request.param == "files":
        return {"cache_dir": tmp_path / "cache"}
    return {}


def breaker_runtime(**config: Any) -> ProviderRuntime:
    settings = {"max_attempts": 1, "breaker_failures": 3, "breaker_reset_s": RESET_S, **config}
    return runtime(**settings)


def trip(client: BinanceClient, server: FakeBinance, failures: int = 3) -> None:
    server.failing_symbols.add("BTCUSDT")
    for offset in range(failures):
        with pytest.raises(Unavailable):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day(offset))


def wait_for_state(client: BinanceClient, wanted: str, timeout_s: float = 3.0) -> None:
    pause = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if client.circuit.state == wanted:
            return
        pause.wait(0.01)
    raise AssertionError(f"circuit still {client.circuit.state!r}, wanted {wanted!r}")


def test_consecutive_failures_open_the_circuit(server: FakeBinance, state: dict[str, Any]) -> None:
    with BinanceClient(server.url, runtime=breaker_runtime(**state)) as client:
        trip(client, server)
        assert client.circuit.state == "open"
        assert client.circuit.failures == 3

        with pytest.raises(CircuitOpen) as caught:
            client.fetch_ohlcv("ETHUSDT", HOUR, *day())

        assert client.metadata()["circuit"] == "open"
    assert 0 < caught.value.retry_after <= RESET_S
    assert len(server.requests_to(KLINES)) == 3


def test_a_rejected_request_is_not_a_failure(server: FakeBinance, state: dict[str, Any]) -> None:
    with BinanceClient(server.url, runtime=breaker_runtime(**state)) as client:
        trip(client, server, failures=2)
        with pytest.raises(UnknownSymbol):
            client.fetch_ohlcv("NOPEUSDT", HOUR, *day())
        trip(client, server, failures=2)

        assert client.circuit.state == "closed"


def test_after_the_reset_time_one_probe_closes_the_circuit(
    server: FakeBinance, state: dict[str, Any]
) -> None:
    with BinanceClient(server.url, runtime=breaker_runtime(**state)) as client:
        trip(client, server)
        wait_for_state(client, "half_open")
        server.failing_symbols.clear()

        assert len(client.fetch_ohlcv("BTCUSDT", HOUR, *day())) == 24

        assert client.circuit.state == "closed"
        assert client.circuit.failures == 0
    assert len(server.requests_to(KLINES)) == 4


def test_a_failed_probe_opens_the_circuit_again(server: FakeBinance, state: dict[str, Any]) -> None:
    with BinanceClient(server.url, runtime=breaker_runtime(**state)) as client:
        trip(client, server)
        wait_for_state(client, "half_open")

        with pytest.raises(Unavailable):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day())
        assert client.circuit.state == "open"
        with pytest.raises(CircuitOpen):
            client.fetch_ohlcv("BTCUSDT", HOUR, *day())
    assert len(server.requests_to(KLINES)) == 4


def test_the_circuit_is_shared_by_runtimes_on_the_same_store(
    server: FakeBinance, shared: dict[str, Any]
) -> None:
    first = BinanceClient(server.url, runtime=breaker_runtime(**shared))
    second = BinanceClient(server.url, runtime=breaker_runtime(**shared))
    with first, second:
        assert second.circuit.state == "closed"
        trip(first, server)

        assert second.circuit.state == "open"
        with pytest.raises(CircuitOpen):
            second.fetch_ohlcv("ETHUSDT", HOUR, *day())
    assert len(server.requests_to(KLINES)) == 3


def test_only_one_caller_probes_while_the_others_fail_fast(
    server: FakeBinance, shared: dict[str, Any]
) -> None:
    prober = BinanceClient(server.url, runtime=breaker_runtime(**shared))
    other = BinanceClient(server.url, runtime=breaker_runtime(**shared))
    with prober, other:
        trip(prober, server)
        wait_for_state(other, "half_open")
        server.failing_symbols.clear()
        server.latency_s = 0.5
        outcome: list[object] = []
        probe = threading.Thread(
            target=lambda: outcome.append(prober.fetch_ohlcv("BTCUSDT", HOUR, *day()))
        )
        probe.start()
        wait_for_requests(server, 4)

        with pytest.raises(CircuitOpen, match="another caller is probing"):
            other.fetch_ohlcv("ETHUSDT", HOUR, *day())
        probe.join(timeout=10)

        assert len(outcome) == 1
        assert other.circuit.state == "closed"
        server.latency_s = 0.0
        assert len(other.fetch_ohlcv("ETHUSDT", HOUR, *day())) == 24
    assert [r.query["symbol"] for r in server.requests_to(KLINES)][3:] == ["BTCUSDT", "ETHUSDT"]


def test_an_open_circuit_is_seen_by_another_process(
    server: FakeBinance, shared: dict[str, Any]
) -> None:
    server.failing_symbols.add("BTCUSDT")
    config = {**shared, "breaker_failures": 3, "breaker_reset_s": 30.0}
    [tripping] = run_children(fetch_days, [(server.url, config, BinanceClient.LIMITS, (0, 1, 2))])
    assert tripping["outcomes"] == ["Unavailable"] * 3

    with BinanceClient(server.url, runtime=breaker_runtime(**config)) as other:
        assert other.circuit.state == "open"
        with pytest.raises(CircuitOpen):
            other.fetch_ohlcv("ETHUSDT", HOUR, *day())
    assert len(server.requests_to(KLINES)) == 3


def wait_for_requests(server: FakeBinance, count: int, timeout_s: float = 3.0) -> None:
    pause = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if len(server.requests) >= count:
            return
        pause.wait(0.01)
    raise AssertionError(f"the server saw {len(server.requests)} requests, wanted {count}")


def test_a_ban_opens_the_circuit_for_its_length_without_a_retry(
    server: FakeBinance, shared: dict[str, Any]
) -> None:
    server.scripted.append(
        Response.json(
            {"code": -1003, "msg": "Way too many requests; IP banned until 4102444800000."},
            status=418,
            headers={"Retry-After": "120"},
        )
    )
    banned = BinanceClient(server.url, runtime=runtime(**shared))
    other = BinanceClient(server.url, runtime=runtime(**shared))
    with banned, other:
        with pytest.raises(Banned):
            banned.fetch_ohlcv("BTCUSDT", HOUR, *day())
        assert banned.stats.retries == 0

        for client in (banned, other):
            assert client.circuit.state == "open"
            with pytest.raises(CircuitOpen) as caught:
                client.fetch_ohlcv("BTCUSDT", HOUR, *day())
            assert 119 < caught.value.retry_after <= 120
    assert len(server.requests_to(KLINES)) == 1
