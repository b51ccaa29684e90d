"""The pandera model of the canonical OHLCV frame (:mod:`fks_pipelines.market.frame`).

A module of its own so that importing the frame helpers does not import pandera: the model is
needed where bars are validated, not where they are built or stored. ``frame.OHLCVFrame`` and
``frame.validate`` load it on first use.
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from fks_pipelines.market.frame import BAR_KINDS, KEY_COLUMNS, TS_DTYPE


class OHLCVFrame(pa.DataFrameModel):
    """Closed OHLCV bars of one or more instruments, one row per bar."""

    provider: Series[pd.StringDtype] = pa.Field(
        description="Provider id that served the bar (binance, polygon, coingecko, ...)."
    )
    symbol: Series[pd.StringDtype] = pa.Field(
        description="The provider's own ticker for the instrument, e.g. BTCUSDT or X:BTCUSD."
    )
    interval: Series[pd.StringDtype] = pa.Field(
        description="Bar length, e.g. 1m, 1h, 1d; minutes are lower-case m."
    )
    ts: Series[TS_DTYPE] = pa.Field(  # type: ignore[valid-type]
        description="Open time of the bar, UTC (tz-aware)."
    )
    open: Series[float] = pa.Field(gt=0, description="First traded price of the bar.")
    high: Series[float] = pa.Field(gt=0, description="Highest traded price of the bar.")
    low: Series[float] = pa.Field(gt=0, description="Lowest traded price of the bar.")
    close: Series[float] = pa.Field(gt=0, description="Last traded price of the closed bar.")
    volume: Series[float] = pa.Field(
        ge=0,
        nullable=True,
        description="Traded volume in base units (coins, shares; contracts on Binance USD-M); "
        "null where the provider states none.",
    )
    quote_volume: Series[float] = pa.Field(
        ge=0,
        nullable=True,
        description="Traded value in the quote currency (e.g. USD turnover); null where the "
        "provider states none.",
    )
    vwap: Series[float] = pa.Field(
        nullable=True,
        description="Volume-weighted average price; null where the provider gives none.",
    )
    trades: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="Number of trades in the bar; null where not provided."
    )
    bar_kind: Series[pd.StringDtype] = pa.Field(
        isin=list(BAR_KINDS),
        description="How the bar was made: traded (the provider's bar of its trades), sampled "
        "(formed from price samples) or auction (an official closing-auction print).",
    )

    @pa.dataframe_check(description="high is at least the open, the close and the low")
    def high_is_highest(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["high"] >= df[["open", "close", "low"]].max(axis=1)).astype(bool)

    @pa.dataframe_check(description="low is at most the open and the close")
    def low_is_lowest(cls, df: pd.DataFrame) -> Series[bool]:
        return (df["low"] <= df[["open", "close"]].min(axis=1)).astype(bool)

    class Config:
        strict = True
        ordered = True
        unique: ClassVar[list[str]] = list(KEY_COLUMNS)
        description = "Canonical closed OHLCV bars; ts is the bar's open time in UTC."
