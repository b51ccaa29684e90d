"""Frames shared by the quality tests."""

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import build_frame


def wavy_hours(ts: pd.DatetimeIndex, closes: np.ndarray | None = None) -> pd.DataFrame:
    """Hourly BTCUSDT bars at ``ts``: by default a calm wave around 100 (``100 + sin(i / 3)``),
    high and low half a point away, volume 10."""
    if closes is None:
        closes = 100.0 + np.sin(np.arange(len(ts)) / 3.0)
    return build_frame(
        provider="binance",
        symbol="BTCUSDT",
        interval="1h",
        ts=ts,
        open=closes,
        high=closes + 0.5,
        low=closes - 0.5,
        close=closes,
        volume=np.full(len(ts), 10.0),
    )
