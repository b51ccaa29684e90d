"""What every provider client offers: OHLCV history and the latest price, in canonical form."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.providers.http import ProviderHttp, RequestStats

Clock = Callable[[], pd.Timestamp]


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


@dataclass(frozen=True)
class Quote:
    """The latest price of one symbol at one provider."""

    provider: str
    symbol: str
    price: float
    ts: pd.Timestamp


class ProviderClient(ABC):
    """A provider's three steps, OpenBB style: query -> vendor params, fetch, payload -> frame.

    Subclasses implement :meth:`fetch_ohlcv` and :meth:`latest_price` on top of ``self.http``;
    the HTTP runtime (timeouts, errors, accounting) is shared.
    """

    name: str

    def __init__(self, http: ProviderHttp, *, clock: Clock = utc_now) -> None:
        self.http = http
        self.clock = clock

    @property
    def stats(self) -> RequestStats:
        return self.http.stats

    @abstractmethod
    def fetch_ohlcv(
        self, symbol: str, interval: Interval, start: pd.Timestamp, end: pd.Timestamp
    ) -> pd.DataFrame:
        """Closed bars of ``symbol`` whose open time lies in ``[start, end)``, canonical form."""

    @abstractmethod
    def latest_price(self, symbol: str) -> Quote:
        """The provider's latest price for ``symbol``."""

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
