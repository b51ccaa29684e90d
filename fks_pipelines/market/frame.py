"""The canonical OHLCV frame: the one shape every provider produces and the warehouse stores.

One row is one *closed* bar. ``ts`` is the bar's open time in UTC. A bar that has not closed yet
is never put into a canonical frame: providers drop it when they parse (see
:func:`drop_open_bars`).
"""

from __future__ import annotations

from typing import ClassVar

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

TS_DTYPE = pd.DatetimeTZDtype(unit="ns", tz="UTC")

KEY_COLUMNS = ("provider", "symbol", "interval", "ts")
PRICE_COLUMNS = ("open", "high", "low", "close")
COLUMNS = (*KEY_COLUMNS, *PRICE_COLUMNS, "volume", "vwap", "trades")

DTYPES: dict[str, object] = {
    "provider": "string",
    "symbol": "string",
    "interval": "string",
    "ts": TS_DTYPE,
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "float64",
    "vwap": "float64",
    "trades": "Int64",
}


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
        ge=0, description="Traded volume in base units (contracts on Binance USD-M)."
    )
    vwap: Series[float] = pa.Field(
        nullable=True,
        description="Volume-weighted average price; null where the provider gives none.",
    )
    trades: Series[pd.Int64Dtype] = pa.Field(
        nullable=True, ge=0, description="Number of trades in the bar; null where not provided."
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


def empty_frame() -> pd.DataFrame:
    """A canonical frame with no rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in DTYPES.items()})


def build_frame(
    *,
    provider: str,
    symbol: str,
    interval: str,
    ts: pd.Series | pd.DatetimeIndex,
    open: object,
    high: object,
    low: object,
    close: object,
    volume: object,
    vwap: object = None,
    trades: object = None,
) -> pd.DataFrame:
    """Assemble a canonical frame from whole columns (no per-row work).

    Column arguments are array-likes of equal length; ``vwap`` and ``trades`` may be ``None``
    when the provider does not report them. Rows are sorted by ``ts``.
    """
    ts_values = pd.DatetimeIndex(ts)
    if ts_values.tz is None:
        raise ValueError("ts must be timezone-aware UTC")
    n = len(ts_values)
    frame = pd.DataFrame(
        {
            "provider": pd.array([provider] * n, dtype="string"),
            "symbol": pd.array([symbol] * n, dtype="string"),
            "interval": pd.array([interval] * n, dtype="string"),
            "ts": ts_values.tz_convert("UTC").as_unit("ns"),
            "open": pd.to_numeric(open, errors="raise"),
            "high": pd.to_numeric(high, errors="raise"),
            "low": pd.to_numeric(low, errors="raise"),
            "close": pd.to_numeric(close, errors="raise"),
            "volume": pd.to_numeric(volume, errors="raise"),
            "vwap": pd.to_numeric(vwap, errors="raise") if vwap is not None else float("nan"),
            "trades": pd.array(trades, dtype="Int64") if trades is not None else pd.NA,
        }
    )
    return conform(frame.sort_values("ts", kind="stable").reset_index(drop=True))


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the canonical columns, order and dtypes."""
    missing = [c for c in COLUMNS if c not in frame.columns and c not in ("vwap", "trades")]
    if missing:
        raise ValueError(f"frame lacks canonical columns {missing}")
    out = frame.reindex(columns=list(COLUMNS))
    out["ts"] = pd.to_datetime(out["ts"], utc=True).dt.as_unit("ns")
    return out.astype({k: v for k, v in DTYPES.items() if k != "ts"})


def drop_open_bars(frame: pd.DataFrame, interval_seconds: int, now: pd.Timestamp) -> pd.DataFrame:
    """Drop bars that have not closed at ``now`` (open time + interval > now)."""
    closes = frame["ts"] + pd.Timedelta(seconds=interval_seconds)
    return frame.loc[closes <= now].reset_index(drop=True)


def validate(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate ``frame`` against :class:`OHLCVFrame`, reporting every failure at once."""
    return OHLCVFrame.validate(frame, lazy=True)
