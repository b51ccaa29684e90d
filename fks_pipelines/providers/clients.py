"""Build a provider's client from plain options: the one place that knows each client's
constructor, the default hosts, CoinGecko's plans and how a rate override replaces the default
limits. The Dagster resources and the HTTP service both build their clients here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

from fks_pipelines.providers import (
    alpha_vantage,
    binance,
    coingecko,
    coinmarketcap,
    eodhd,
    polygon,
)
from fks_pipelines.providers.alpha_vantage import AlphaVantageClient
from fks_pipelines.providers.base import ProviderClient
from fks_pipelines.providers.binance import BinanceClient
from fks_pipelines.providers.coingecko import CoinGeckoClient
from fks_pipelines.providers.coinmarketcap import CoinMarketCapClient
from fks_pipelines.providers.eodhd import EodhdClient
from fks_pipelines.providers.polygon import PolygonClient
from fks_pipelines.providers.ratelimit import ProviderLimits, Window
from fks_pipelines.providers.runtime import ProviderRuntime, RuntimeConfig, get_runtime

CLIENT_CLASSES: dict[str, type[ProviderClient]] = {
    cls.name: cls
    for cls in (
        BinanceClient,
        PolygonClient,
        CoinGeckoClient,
        CoinMarketCapClient,
        AlphaVantageClient,
        EodhdClient,
    )
}
DEFAULT_BASE_URLS: dict[str, str] = {
    "binance": binance.DEFAULT_BASE_URL,
    "polygon": polygon.DEFAULT_BASE_URL,
    "coingecko": coingecko.DEFAULT_BASE_URL,
    "coinmarketcap": coinmarketcap.DEFAULT_BASE_URL,
    "alpha_vantage": alpha_vantage.DEFAULT_BASE_URL,
    "eodhd": eodhd.DEFAULT_BASE_URL,
}

# The environment variable of each provider that cannot be asked anything without a key. Binance
# needs none, and CoinGecko's key is optional (without it, the public API at its lower limit).
REQUIRED_KEY_VARIABLES: dict[str, str] = {
    "polygon": polygon.KEY_VARIABLE,
    "coinmarketcap": coinmarketcap.KEY_VARIABLE,
    "alpha_vantage": alpha_vantage.KEY_VARIABLE,
    "eodhd": eodhd.KEY_VARIABLE,
}


@dataclass(frozen=True)
class ProviderOptions:
    """How to reach one provider.

    Attributes:
        base_url: REST base URL; ``None`` for the provider's public host (CoinGecko: the host of
            its ``plan``).
        api_key: The key, when the provider takes one; a provider that needs one raises
            :class:`~fks_pipelines.providers.errors.MissingCredentials` without it.
        requests_per_s: Replaces the provider's default request windows, when set (weight
            limits and quotas stay).
        plan: CoinGecko only: ``demo`` or ``pro`` (host and key header).
    """

    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    requests_per_s: float | None = None
    plan: Literal["demo", "pro"] = "demo"


def provider_runtime(
    client_class: type[ProviderClient],
    config: RuntimeConfig,
    requests_per_s: float | None = None,
    limits: ProviderLimits | None = None,
) -> ProviderRuntime:
    """The process's runtime of ``client_class``'s provider, with ``requests_per_s`` (when set)
    in place of the default request windows."""
    limits = limits or client_class.LIMITS
    if requests_per_s is not None:
        limits = replace(limits, requests=(Window.per_second(requests_per_s),))
    return get_runtime(client_class.name, limits, config)


def build_client(provider: str, options: ProviderOptions, config: RuntimeConfig) -> ProviderClient:
    """A client of ``provider`` on the process's shared runtime of that provider.

    Raises:
        KeyError: ``provider`` is not a known provider id.
        MissingCredentials: The provider needs a key and ``options`` has none.
    """
    client_class = CLIENT_CLASSES[provider]
    if client_class is CoinGeckoClient:
        base_url = options.base_url or (
            coingecko.PRO_BASE_URL if options.plan == "pro" else coingecko.DEFAULT_BASE_URL
        )
        limits = CoinGeckoClient.LIMITS if options.api_key else CoinGeckoClient.KEYLESS_LIMITS
        return CoinGeckoClient(
            options.api_key,
            base_url,
            plan=options.plan,
            runtime=provider_runtime(client_class, config, options.requests_per_s, limits),
        )
    runtime = provider_runtime(client_class, config, options.requests_per_s)
    base_url = options.base_url or DEFAULT_BASE_URLS[provider]
    if client_class is BinanceClient:
        return BinanceClient(base_url, runtime=runtime)
    keyed: Any = client_class  # the keyed clients share (api_key, base_url, *, runtime)
    return keyed(options.api_key, base_url, runtime=runtime)
