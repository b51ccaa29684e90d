"""Partitions of the OHLCV assets: UTC date x the provider's symbols."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import pandas as pd

from fks_pipelines.market.universe import ProviderUniverse

DATE = "date"
SYMBOL = "symbol"


def ohlcv_partitions(spec: ProviderUniverse) -> dg.MultiPartitionsDefinition:
    """``date`` (daily, UTC, finished days only) x ``symbol``; keys read ``2024-01-05|BTCUSDT``."""
    return dg.MultiPartitionsDefinition(
        {
            DATE: dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat()),
            SYMBOL: dg.StaticPartitionsDefinition(list(spec.symbols)),
        }
    )


@dataclass(frozen=True)
class DaySymbol:
    """One partition: a symbol's bars opening in ``[start, end)`` of one UTC day."""

    symbol: str
    start: pd.Timestamp

    @property
    def end(self) -> pd.Timestamp:
        return self.start + pd.Timedelta(days=1)

    @classmethod
    def from_key(cls, key: str | dg.MultiPartitionKey) -> DaySymbol:
        if not isinstance(key, dg.MultiPartitionKey):
            dims = dict(zip((DATE, SYMBOL), key.split("|"), strict=True))
        else:
            dims = key.keys_by_dimension
        return cls(symbol=dims[SYMBOL], start=pd.Timestamp(dims[DATE], tz="UTC"))
