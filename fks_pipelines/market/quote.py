"""A latest price: the other shape every provider produces."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Quote:
    """The latest price of one symbol at one provider, as of ``ts`` (UTC)."""

    provider: str
    symbol: str
    price: float
    ts: pd.Timestamp
