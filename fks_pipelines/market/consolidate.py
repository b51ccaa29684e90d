"""The consolidated ("golden") series of one instrument, built from several providers' windows.

Each bar open time present in any provider's window gets one row, taken from the most preferred
provider that has a traded bar (or an auction print) there, and only when none has from the most
preferred provider with a *sampled* one (formed from price samples, see market/frame.py): a gap
or a failed window of the primary is filled from the next provider. Every row says where it came
from (``source``, ``source_symbol``), how it was made (``bar_kind``), how many providers had the
bar (``providers``) and how far the other providers' closes stray from the chosen one
(``agreement_bps``), so that cross-provider agreement can be measured and stored. Closes are
compared like with like: a sampled close (the last sample of a day) is not a traded close, so a
traded bar is compared with the other traded bars and a sampled bar with the sampled ones.

Volumes are taken with their bar, each in its own column (``volume`` in base units,
``quote_volume`` in the quote currency), never converted: a row filled from a provider that
states only one of them has the other null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import COLUMNS as CANONICAL_COLUMNS
from fks_pipelines.market.frame import TS_DTYPE, conform

KEY_COLUMNS = ("instrument", "interval", "ts")
BAR_COLUMNS = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "quote_volume",
    "vwap",
    "trades",
    "bar_kind",
)
COLUMNS = (*KEY_COLUMNS, *BAR_COLUMNS, "source", "source_symbol", "providers", "agreement_bps")

DTYPES: dict[str, object] = {
    "instrument": "string",
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
    "source": "string",
    "source_symbol": "string",
    "providers": "int64",
    "agreement_bps": "float64",  # NaN where only one provider has the bar
}

_BPS = 1e4
CONSOLIDATED = "consolidated"
"""The ``provider`` of a consolidated series seen as a canonical frame."""


def empty_consolidated() -> pd.DataFrame:
    """A consolidated frame with no rows."""
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in DTYPES.items()})


def conform_consolidated(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with exactly the consolidated columns, order and dtypes."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks consolidated columns {missing}")
    out = frame.reindex(columns=list(COLUMNS))
    out["ts"] = pd.to_datetime(out["ts"], utc=True).dt.as_unit("ns")
    return out.astype({k: v for k, v in DTYPES.items() if k != "ts"})


def as_canonical(consolidated: pd.DataFrame) -> pd.DataFrame:
    """The consolidated bars as a canonical OHLCV frame (``provider`` ``consolidated``, ``symbol``
    the instrument), so that the provider assets' schema and completeness checks apply as is."""
    frame = consolidated.rename(columns={"instrument": "symbol"}).assign(provider=CONSOLIDATED)
    return conform(frame.loc[:, list(CANONICAL_COLUMNS)])


def consolidate(instrument: str, interval: str, windows: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """One bar per open time from provider windows of one instrument, most preferred first.

    Args:
        instrument: The canonical instrument the windows hold (e.g. ``BTC-USD``); the caller
            pairs each provider ticker with it (see ``Universe.routes``).
        interval: The bar length of every window, e.g. ``1h``.
        windows: Canonical OHLCV frames in priority order, most preferred first. Each holds one
            provider ticker's bars; an empty frame (a provider that served nothing) is skipped.

    Returns:
        A frame in :data:`DTYPES`, sorted by ``ts``: for each open time, the bar of the first
        window that has a bar not ``sampled`` there, else of the first window that has one, with
        ``source``/``source_symbol`` naming that window, ``providers`` the number of windows
        having the bar and ``agreement_bps`` the largest
        ``|close - chosen close| / chosen close * 1e4`` over the other windows whose bar is
        sampled exactly when the chosen one is (NaN when there is none).

    Raises:
        ValueError: A window mixes providers or tickers, holds another interval or repeats a bar,
            or two windows hold the same provider ticker.
    """
    parts = []
    seen: set[tuple[str, str]] = set()
    for rank, window in enumerate(windows):
        if window.empty:
            continue
        frame = conform(window)
        route = _single_route(frame, rank)
        if route in seen:
            raise ValueError(f"window {rank}: {route[0]}/{route[1]} is in an earlier window too")
        seen.add(route)
        if not (frame["interval"] == interval).all():
            raise ValueError(
                f"window {rank} ({route[0]}) holds bars of another interval than {interval!r}"
            )
        if frame["ts"].duplicated().any():
            raise ValueError(f"window {rank} ({route[0]}) holds the same bar twice")
        parts.append(frame.assign(_rank=rank))
    if not parts:
        return empty_consolidated()

    stacked = pd.concat(parts, ignore_index=True)
    stacked["_sampled"] = (stacked["bar_kind"] == "sampled").to_numpy(dtype=bool)
    stacked = stacked.sort_values(["ts", "_sampled", "_rank"], kind="stable", ignore_index=True)
    # ts is sorted, so each open time is one contiguous run whose first row is the chosen bar.
    first = ~stacked["ts"].duplicated().to_numpy()
    starts = np.flatnonzero(first)
    group = np.cumsum(first) - 1
    sampled = stacked["_sampled"].to_numpy()
    alike = sampled == sampled[starts][group]
    close = stacked["close"].to_numpy(dtype="float64")
    chosen_close = close[starts][group]
    deviation = np.where(alike, np.abs(close - chosen_close) / chosen_close * _BPS, np.nan)
    # The chosen row's own deviation is 0, so the run's maximum is the others' maximum; fmax
    # skips a NaN (an unlike bar, a NaN close) rather than letting it hide the others.
    largest = np.fmax.reduceat(deviation, starts)
    counts = np.diff(np.append(starts, len(stacked)))
    alike_counts = np.add.reduceat(alike.astype(np.int64), starts)

    chosen = stacked.iloc[starts].reset_index(drop=True)
    out = pd.DataFrame(
        {
            "instrument": instrument,
            "interval": interval,
            "ts": chosen["ts"],
            **{name: chosen[name] for name in BAR_COLUMNS},
            "source": chosen["provider"],
            "source_symbol": chosen["symbol"],
            "providers": counts,
            "agreement_bps": np.where(alike_counts > 1, largest, np.nan),
        }
    )
    return conform_consolidated(out)


def _single_route(frame: pd.DataFrame, rank: int) -> tuple[str, str]:
    providers, symbols = frame["provider"].unique(), frame["symbol"].unique()
    if len(providers) != 1 or len(symbols) != 1:
        raise ValueError(
            f"window {rank} mixes providers {list(providers)} or tickers {list(symbols)}; "
            "pass one window per provider ticker"
        )
    return str(providers[0]), str(symbols[0])
