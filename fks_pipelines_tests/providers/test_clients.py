"""Clients built from plain options: hosts, keys, plans and rate overrides."""

import pytest

from fks_pipelines.providers import coingecko
from fks_pipelines.providers.clients import (
    CLIENT_CLASSES,
    DEFAULT_BASE_URLS,
    ProviderOptions,
    build_client,
)
from fks_pipelines.providers.coingecko import CoinGeckoClient
from fks_pipelines.providers.errors import MissingCredentials
from fks_pipelines.providers.ratelimit import Window
from fks_pipelines.providers.runtime import RuntimeConfig

CONFIG = RuntimeConfig()


@pytest.mark.parametrize("provider", sorted(CLIENT_CLASSES))
def test_every_provider_is_built_on_its_public_host_by_default(provider: str) -> None:
    with build_client(provider, ProviderOptions(api_key="k"), CONFIG) as client:
        assert isinstance(client, CLIENT_CLASSES[provider])
        assert str(client.http._client.base_url).rstrip("/") == DEFAULT_BASE_URLS[provider]
        assert client.http.runtime.limiter.limits == CLIENT_CLASSES[provider].LIMITS


@pytest.mark.parametrize("provider", ["polygon", "coinmarketcap", "alpha_vantage", "eodhd"])
def test_a_keyed_provider_without_a_key_names_its_variable(provider: str) -> None:
    with pytest.raises(MissingCredentials, match="_API_KEY"):
        build_client(provider, ProviderOptions(), CONFIG)


def test_a_rate_override_replaces_the_request_windows_and_keeps_the_weight() -> None:
    options = ProviderOptions(base_url="http://127.0.0.1:1", requests_per_s=2)
    with build_client("binance", options, CONFIG) as client:
        limits = client.http.runtime.limiter.limits

    assert limits.requests == (Window(limit=2, period_s=1.0),)
    assert limits.weight == CLIENT_CLASSES["binance"].LIMITS.weight


def test_coingecko_without_a_key_uses_the_keyless_limits_and_the_pro_plan_its_host() -> None:
    with build_client("coingecko", ProviderOptions(), CONFIG) as keyless:
        assert keyless.http.runtime.limiter.limits == CoinGeckoClient.KEYLESS_LIMITS
    with build_client("coingecko", ProviderOptions(api_key="k", plan="pro"), CONFIG) as pro:
        assert str(pro.http._client.base_url).rstrip("/") == coingecko.PRO_BASE_URL
