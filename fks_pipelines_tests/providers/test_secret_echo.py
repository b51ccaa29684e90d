"""Vendors that quote the key back: for each of the six providers, a real local server answers
error bodies that echo the configured key (raw and URL-encoded), with an error status and, where
the provider reports errors inside HTTP 200 answers, in one of those. The key must appear in no
error (str, repr, args, traceback), no log record and no metadata value.

The key holds ``/``, ``+`` and ``=``, so that its URL-encoded forms differ from it: that is how
it travels in Alpha Vantage's and EODHD's query strings, and how httpx logs their URLs.
"""

import logging
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import pytest

from fks_pipelines.providers import binance, secrets
from fks_pipelines.providers.alpha_vantage import AlphaVantageClient
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.coingecko import CoinGeckoClient
from fks_pipelines.providers.coinmarketcap import CoinMarketCapClient
from fks_pipelines.providers.eodhd import EodhdClient
from fks_pipelines.providers.errors import ProviderError, Unauthorized
from fks_pipelines.providers.http import ProviderHttp, Timeouts
from fks_pipelines.providers.polygon import PolygonClient
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
from fks_pipelines.providers.runtime import ProviderRuntime
from fks_pipelines_tests.fakes.alpha_vantage import FakeAlphaVantage
from fks_pipelines_tests.fakes.binance import FakeBinance
from fks_pipelines_tests.fakes.coingecko import ROOT, FakeCoinGecko
from fks_pipelines_tests.fakes.coinmarketcap import FakeCoinMarketCap
from fks_pipelines_tests.fakes.eodhd import FakeEodhd
from fks_pipelines_tests.fakes.polygon import FakePolygon
from fks_pipelines_tests.fakes.server import LocalHttpServer, Response
from fks_pipelines_tests.providers.support import Sleeps, runtime

KEY = "sk/Echo+Key=9f3Qz71LmW"
FORMS = (KEY, quote(KEY, safe=""), quote_plus(KEY))
ECHO = f"The API key {KEY} (sent as {quote(KEY, safe='')}) is invalid for this endpoint."
FAST = ProviderLimits(requests=(Window.per_second(1000),))


class KeyedBinanceClient(BinanceClient):
    """Binance's market data needs no key (:class:`BinanceClient` sends none); this one sends
    ``X-MBX-APIKEY`` as Binance's keyed endpoints take it, through Binance's own error mapper,
    so that the shared path is tested with Binance's wire format too."""

    def __init__(self, base_url: str, api_key: str, *, runtime: ProviderRuntime) -> None:
        ProviderClient.__init__(
            self,
            ProviderHttp(
                binance.PROVIDER,
                base_url,
                binance.map_error,
                runtime,
                headers={"X-MBX-APIKEY": api_key},
                pacing=binance.weight_pacing,
                sleep=Sleeps(),
            ),
        )


@dataclass(frozen=True)
class Case:
    """How to reach one provider, and the key-echoing error answers it may receive.

    Attributes:
        fake: The provider's fake server (its ``scripted`` answers are sent first).
        client: Builds the client with :data:`KEY` on a runtime, given the fake.
        symbol: A symbol the latest-price call asks for.
        errors: Answers echoing the key that are sent with an error status.
        errors_in_200: Answers echoing the key that the provider sends with HTTP 200.
    """

    provider: str
    fake: Callable[[], AbstractContextManager[LocalHttpServer]]
    client: Callable[[LocalHttpServer, ProviderRuntime], ProviderClient]
    symbol: str
    errors: tuple[Response, ...]
    errors_in_200: tuple[Response, ...] = ()


def text(status: int, body: str) -> Response:
    return Response(status=status, body=body.encode(), headers={"Content-Type": "text/html"})


CASES = [
    Case(
        "binance",
        FakeBinance,
        lambda s, rt: KeyedBinanceClient(s.url, KEY, runtime=rt),
        "BTCUSDT",
        errors=(
            Response.json({"code": -2015, "msg": ECHO}, status=401),
            Response.json({"code": -1000, "msg": ECHO}, status=500),
        ),
    ),
    Case(
        "polygon",
        FakePolygon,
        lambda s, rt: PolygonClient(KEY, s.url, runtime=rt, sleep=Sleeps()),
        "AAPL",
        errors=(
            Response.json({"status": "ERROR", "request_id": "a1", "error": ECHO}, status=401),
            Response.json({"status": "NOT_AUTHORIZED", "message": ECHO}, status=403),
            Response.json({"status": "ERROR", "error": ECHO}, status=500),
        ),
        errors_in_200=(
            Response.json({"status": "NOT_AUTHORIZED", "request_id": "a2", "message": ECHO}),
            Response.json({"status": ECHO}),  # an unknown status word is quoted too
        ),
    ),
    Case(
        "coingecko",
        FakeCoinGecko,
        lambda s, rt: CoinGeckoClient(KEY, s.url + ROOT, runtime=rt, sleep=Sleeps()),
        "bitcoin",
        errors=(
            Response.json({"status": {"error_code": 10002, "error_message": ECHO}}, status=401),
            Response.json({"error": ECHO}, status=400),
            text(403, f"<html>Access denied for {KEY} | error code: 1020</html>"),
        ),
        errors_in_200=(Response.json({"status": {"error_code": 10002, "error_message": ECHO}}),),
    ),
    Case(
        "coinmarketcap",
        FakeCoinMarketCap,
        lambda s, rt: CoinMarketCapClient(KEY, s.url, runtime=rt, sleep=Sleeps()),
        "1",
        errors=(
            Response.json(
                {
                    "status": {
                        "error_code": 1001,
                        "error_message": f"This API Key {KEY} is invalid.",
                    }
                },
                status=401,
            ),
            Response.json({"status": {"error_code": 1006, "error_message": ECHO}}, status=403),
        ),
        errors_in_200=(
            Response.json({"status": {"error_code": 1002, "error_message": ECHO}, "data": {}}),
        ),
    ),
    Case(
        "alpha_vantage",
        FakeAlphaVantage,
        lambda s, rt: AlphaVantageClient(KEY, s.url, runtime=rt, sleep=Sleeps()),
        "MSFT",
        errors=(
            Response.json({"Error Message": ECHO}, status=403),
            Response.json({"Information": f"We have detected your API key as {KEY}."}, status=400),
            text(502, f"<html>Application Error for apikey={quote(KEY, safe='')}</html>"),
        ),
        errors_in_200=(
            Response.json(
                {
                    "Information": f"We have detected your API key as {KEY} and our standard API "
                    "rate limit is 25 requests per day."
                }
            ),
            Response.json({"Error Message": ECHO}),
        ),
    ),
    Case(
        "eodhd",
        lambda: FakeEodhd(api_key=KEY),
        lambda s, rt: EodhdClient(KEY, s.base_url, runtime=rt, sleep=Sleeps()),
        "AAPL.US",
        errors=(
            Response.json({"status": 401, "error": "Unauthorized", "message": ECHO}, status=401),
            Response.json({"message": f"Invalid request ?api_token={quote(KEY)}"}, status=403),
            text(500, f"<html>error for ?api_token={KEY}</html>"),
        ),
        errors_in_200=(Response.json({"status": 403, "error": "Forbidden", "message": ECHO}),),
    ),
]


@pytest.fixture(params=CASES, ids=[c.provider for c in CASES])
def case(request: pytest.FixtureRequest) -> Iterator[tuple[Case, LocalHttpServer]]:
    with request.param.fake() as server:
        yield request.param, server


def everything_about(error: BaseException) -> str:
    return "".join(
        [
            str(error),
            repr(error),
            repr(error.args),
            repr(vars(error)),
            *traceback.format_exception(error),
        ]
    )


def assert_no_key(text: str, where: str) -> None:
    for form in FORMS:
        assert form not in text, f"{where}: {text[:500]}"


def test_the_key_is_scrubbed_from_errors_logs_and_metadata(
    case: tuple[Case, LocalHttpServer], caplog: pytest.LogCaptureFixture
) -> None:
    spec, server = case
    caplog.set_level(logging.DEBUG)
    rt = runtime(
        FAST,
        provider=spec.provider,
        max_attempts=1,
        breaker_failures=100,
        timeouts=Timeouts(connect=2, read=5),
    )
    answers = [*spec.errors, *spec.errors_in_200]
    server.scripted.extend(answers)  # type: ignore[attr-defined]
    caught: list[ProviderError] = []
    with spec.client(server, rt) as client:
        for _ in answers:
            with pytest.raises(ProviderError) as raised:
                client.latest_price(spec.symbol)
            caught.append(raised.value)
        metadata = client.metadata()
        stats = client.stats.as_metadata()

    assert len(server.requests) == len(answers)
    # every answer reached the provider's error mapping (an answer's status, not a transport
    # failure), and the ones naming the key in an error status were rejections
    assert all(e.status is not None for e in caught), caught
    assert isinstance(caught[0], Unauthorized), caught[0]
    for error in caught:
        assert_no_key(everything_about(error), f"{type(error).__name__}")
    assert any("***" in str(e) for e in caught), [str(e) for e in caught]
    assert caplog.records, "debug logging of the whole stack was on"
    for record in caplog.records:
        assert_no_key(record.getMessage(), f"log {record.name}")
        assert_no_key(repr(record.args), f"log args {record.name}")
    assert_no_key(caplog.text, "formatted logs")
    assert_no_key(repr(metadata) + repr(stats), "metadata")


def test_a_key_logged_by_any_project_logger_is_scrubbed(caplog: pytest.LogCaptureFixture) -> None:
    """Not only httpx's: a record made by any logger after a key is registered (a record's
    message and args, and the text of an exception it carries)."""
    secrets.register(KEY)
    caplog.set_level(logging.DEBUG)
    names = ("fks_pipelines.defs.assets", "fks_pipelines.providers.http", "httpcore.http11", "x")
    try:
        raise ValueError(f"failed at ?apikey={quote(KEY, safe='')}")
    except ValueError:
        for name in names:
            logging.getLogger(name).warning("key %s in args", KEY, exc_info=True)
    logging.getLogger("fks_pipelines.api").info(f"key {KEY} in the message")

    assert len(caplog.records) == len(names) + 1
    for record in caplog.records:
        assert_no_key(record.getMessage(), record.name)
    assert_no_key(caplog.text, "formatted logs")
    assert "key *** in args" in caplog.text and "apikey=***" in caplog.text


def test_the_filter_scrubs_records_made_elsewhere() -> None:
    """A record that did not pass the record factory (made in another process, or by hand) is
    scrubbed by the filter on the handler that receives it."""
    secrets.register(KEY)
    record = logging.makeLogRecord({"msg": "sent %s", "args": (KEY,), "levelno": logging.INFO})
    assert KEY in record.getMessage()

    assert secrets.RedactSecrets().filter(record) is True
    assert record.getMessage() == "sent ***"


def test_errors_built_anywhere_are_scrubbed() -> None:
    """A parser quoting a payload value, or a mapper cutting a message to a length."""
    secrets.register(KEY)
    half = ("x" * 190 + KEY)[:200]  # a message cut to 200 characters, inside the key

    errors = [
        ProviderError("p", f"bad value {KEY!r}", vendor_code=f"code-{KEY}"),
        ProviderError("p", f"bad value {quote_plus(KEY)}"),
        ProviderError("p", half),
    ]

    for error in errors:
        assert_no_key(everything_about(error), "error")
    assert errors[2].reason == "x" * 190 + "***"
    assert KEY[:10] not in str(errors[2])


def test_short_values_are_not_registered() -> None:
    """Placeholders such as EODHD's public ``demo`` token are no secret, and scrubbing them
    would garble every message that says "demo"."""
    secrets.register("demo")
    assert not secrets.is_registered("demo")
    assert str(ProviderError("p", "the demo plan")) == "p: the demo plan"


def test_registration_happens_when_a_session_is_built() -> None:
    key = "cg-registered-at-build-4Fq"
    assert not secrets.is_registered(key)
    with CoinGeckoClient(key, "http://127.0.0.1:9", runtime=runtime(provider="coingecko")):
        assert secrets.is_registered(key)
    bearer = "pg-registered-bearer-7Zt"
    with PolygonClient(bearer, "http://127.0.0.1:9", runtime=runtime(provider="polygon")):
        assert secrets.is_registered(bearer)
        assert secrets.is_registered(f"Bearer {bearer}")
