"""The canonical OHLCV frame: the one shape every provider produces and the warehouse stores.

One row is one *closed* bar. ``ts`` is the bar's open time in UTC. A bar that has not closed yet
is never put into a canonical frame: providers drop it when they parse (see
:func:`drop_open_bars`).

Volumes keep the unit the provider states, in the column named for it, and are never converted:
``volume`` is in base units (coins, shares, contracts), ``quote_volume`` in the quote currency
(e.g. USD turnover). Either is null where the provider does not state it.

``bar_kind`` says how the bar was made:

- ``traded``: the provider's own bar of the trades in the interval;
- ``sampled``: formed by us from price samples (CoinGecko): the close is the last sample, high and
  low the extremes of the samples, so the range is narrower than the traded one;
- ``auction``: an exchange's official closing-auction print (EODHD's 16:00 New York bar): one
  price, open = high = low = close, and no volume stated.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ below imports it on first use
    from fks_pipelines.market.frame_model import OHLCVFrame as OHLCVFrame

TS_DTYPE = pd.DatetimeTZDtype(unit="ns", tz="UTC")

KEY_COLUMNS = ("provider", "symbol", "interval", "ts")
PRICE_COLUMNS = ("open", "high", "low", "close")
VOLUME_COLUMNS = ("volume", "quote_volume")
BAR_KINDS = ("traded", "sampled", "auction")
COLUMNS = (*KEY_COLUMNS, *PRICE_COLUMNS, *VOLUME_COLUMNS, "vwap", "trades", "bar_kind")
OPTIONAL_COLUMNS = (*VOLUME_COLUMNS, "vwap", "trades", "bar_kind")
"""Columns a frame may lack before :func:`conform`: null (``bar_kind``: ``traded``) when absent."""

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
    "quote_volume": "float64",
    "vwap": "float64",
    "trades": "Int64",
    "bar_kind": "string",
}


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
    volume: object = None,
    quote_volume: object = None,
    vwap: object = None,
    trades: object = None,
    bar_kind: object = "traded",
) -> pd.DataFrame:
    """Assemble a canonical frame from whole columns (no per-row work).

    Column arguments are array-likes of equal length; ``volume``, ``quote_volume``, ``vwap`` and
    ``trades`` are ``None`` when the provider does not state them. ``bar_kind`` is one of
    :data:`BAR_KINDS` for every bar, or an array-like of them. Rows are sorted by ``ts``.
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
            "volume": _floats(volume),
            "quote_volume": _floats(quote_volume),
            "vwap": _floats(vwap),
            "trades": pd.array(trades, dtype="Int64") if trades is not None else pd.NA,
            "bar_kind": bar_kind if isinstance(bar_kind, str) else pd.array(bar_kind),
        }
    )
    return conform(frame.sort_values("ts", kind="stable").reset_index(drop=True))


def _floats(values: object) -> object:
    return pd.to_numeric(values, errors="raise") if values is not None else float("nan")


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the canonical columns, order and dtypes.

    Absent :data:`OPTIONAL_COLUMNS` become null, and an absent ``bar_kind`` ``traded``.
    """
    missing = [c for c in COLUMNS if c not in frame.columns and c not in OPTIONAL_COLUMNS]
    if missing:
        raise ValueError(f"frame lacks canonical columns {missing}")
    out = frame.reindex(columns=list(COLUMNS))
    if "bar_kind" not in frame.columns:
        out["bar_kind"] = "traded"
    out["ts"] = pd.to_datetime(out["ts"], utc=True).dt.as_unit("ns")
    return out.astype({k: v for k, v in DTYPES.items() if k != "ts"})


def drop_open_bars(frame: pd.DataFrame, interval_seconds: int, now: pd.Timestamp) -> pd.DataFrame:
    """Drop bars that have not closed at ``now`` (open time + interval > now)."""
    closes = frame["ts"] + pd.Timedelta(seconds=interval_seconds)
    return frame.loc[closes <= now].reset_index(drop=True)


def validate(frame: pd.DataFrame) -> pd.DataFrame:
    """Validate ``frame`` against :class:`OHLCVFrame`, reporting every failure at once."""
    from fks_pipelines.market import frame_model  # on first use, see __getattr__

    return frame_model.OHLCVFrame.validate(frame, lazy=True)


def __getattr__(name: str) -> object:
    """``OHLCVFrame``, the pandera model, imported on first use.

    pandera (with typeguard) takes about 0.1 s to import, and every provider imports this module
    for the frame helpers above: loading the code location, or a run until its bars are checked,
    has no use for the model.
    """
    if name == "OHLCVFrame":
        from fks_pipelines.market.frame_model import OHLCVFrame

        return OHLCVFrame
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
