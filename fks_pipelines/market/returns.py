"""Daily returns and realised volatility of a bar series: what a researcher computes first.

For each instrument and UTC day of the bars: the day's return from the first bar's open to the
last bar's close, and the realised volatility of the day, the square root of the sum of squared
log returns of its bars (the first bar's from its open). Neither is annualised: a day of 24
hourly crypto bars and a 7-bar equity session are each one day.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

COLUMNS = ("instrument", "day", "open", "close", "day_return", "realised_vol", "bars")
DTYPES: dict[str, object] = {
    "instrument": "string",
    "day": "datetime64[s]",
    "open": "float64",
    "close": "float64",
    "day_return": "float64",
    "realised_vol": "float64",
    "bars": "int64",
}


def daily_returns(bars: pd.DataFrame, key: str = "instrument") -> pd.DataFrame:
    """One row per ``key`` value and UTC day of ``bars`` (columns ``ts``, ``open``, ``close``),
    sorted by instrument and day, in :data:`DTYPES` (``key`` becomes ``instrument``)."""
    if bars.empty:
        return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in DTYPES.items()})
    frame = bars.sort_values([key, "ts"], kind="stable")
    day = frame["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
    groups = [frame[key], day]
    # Each bar's log return from the bar before it in its day; the day's first bar from its own
    # open (the gap from yesterday's close is not today's intraday variation).
    previous = frame.groupby(groups, sort=False)["close"].shift(1).fillna(frame["open"])
    squared = np.log(frame["close"] / previous) ** 2
    grouped = frame.assign(squared=squared).groupby(groups, sort=True)
    out = pd.DataFrame(
        {
            "open": grouped["open"].first(),
            "close": grouped["close"].last(),
            "realised_vol": np.sqrt(grouped["squared"].sum()),
            "bars": grouped.size(),
        }
    )
    out["day_return"] = out["close"] / out["open"] - 1.0
    out = out.rename_axis(["instrument", "day"]).reset_index()
    return out.loc[:, list(COLUMNS)].astype(DTYPES)
