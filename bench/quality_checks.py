"""Quality checks on a million bars: schema + data errors + completeness next to plain pandera.

    .venv/bin/python -m bench.quality_checks [--rows 1000000] [--symbols 4] [--rounds 3]

Run from the repository root. The frame: ``--rows`` one-minute bars split evenly over
``--symbols`` crypto symbols, each a random walk with fat-tailed returns (Student t, 4 degrees of
freedom, 0.08 % a minute), consistent highs and lows and log-normal volumes, stacked symbol after
symbol as a provider window arrives. Baseline: ``OHLCVFrame.validate(frame, lazy=True)``, the
pandera model alone, which the frame passes. Measured, on the same frame in the same run:
:func:`check_schema` (the model, plus ts uniqueness, order, grid and interval), the data-error
detectors the OHLCV asset checks run (:func:`bar_errors` on each symbol's bars sorted by ``ts``:
default baseline, no volume level as for crypto, the stale run of one-minute bars; the grouping
and sorting are timed too) and :func:`check_completeness` over the frame's whole window, each
timed alone and all three together. Ratio = measured / baseline. Baseline and measured calls are
interleaved over ``--rounds`` rounds and medians of the rounds reported. Then, per detector, the
bars flagged (scores at or above the WARN levels of ``DEFAULT_THRESHOLDS``; a repeated bar for
``bar``) out of the bars scored.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from fks_pipelines.market.frame import OHLCVFrame, build_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.bar_errors import DEFAULT_THRESHOLDS, bar_errors, default_stale_bars
from fks_pipelines.quality.completeness import check_completeness
from fks_pipelines.quality.schema import check_schema

INTERVAL = Interval.parse("1m")
START = pd.Timestamp("2024-01-01", tz="UTC")
CRYPTO = Instrument(asset_class="crypto")
WARN_LEVELS = {
    "close": DEFAULT_THRESHOLDS.close_warn,
    "shift": DEFAULT_THRESHOLDS.shift_warn,
    "high": DEFAULT_THRESHOLDS.wick_warn,
    "low": DEFAULT_THRESHOLDS.wick_warn,
    "volume": DEFAULT_THRESHOLDS.volume_warn,
    "bar": 0.5,  # 1.0 for a repeated bar, else 0.0
}


def random_walk_frame(rows: int, symbols: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    per_symbol = rows // symbols
    ts = pd.date_range(START, periods=per_symbol, freq=INTERVAL.offset)
    frames = []
    for number in range(symbols):
        returns = rng.standard_t(4, per_symbol) * 0.0008
        close = 100.0 * (number + 1) * np.exp(np.cumsum(returns))
        open_ = np.r_[close[0], close[:-1]]
        wick = np.abs(rng.normal(0.0, 0.0003, (2, per_symbol)))
        frames.append(
            build_frame(
                provider="binance",
                symbol=f"SYM{number}USDT",
                interval=INTERVAL.name,
                ts=ts,
                open=open_,
                high=np.maximum(open_, close) * (1.0 + wick[0]),
                low=np.minimum(open_, close) * (1.0 - wick[1]),
                close=close,
                volume=rng.lognormal(3.0, 0.8, per_symbol),
            )
        )
    return pd.concat(frames, ignore_index=True)


def data_errors(frame: pd.DataFrame) -> list[pd.DataFrame]:
    """The detectors' scores of each symbol's bars, as the assets score one series."""
    stale_run = default_stale_bars(INTERVAL.seconds)
    return [
        bar_errors(series.sort_values("ts", kind="stable"), volume_level=None, stale_run=stale_run)
        for _, series in frame.groupby("symbol", sort=False, observed=True)
    ]


def seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    frame = random_walk_frame(args.rows, args.symbols)
    end = frame["ts"].max() + INTERVAL.offset

    def schema() -> object:
        return check_schema(frame, INTERVAL)

    def errors() -> object:
        return data_errors(frame)

    def completeness() -> object:
        return check_completeness(frame, CRYPTO, INTERVAL, START, end, now=end)

    def together() -> object:
        return schema(), errors(), completeness()

    # Warm up (pandera builds its schema, the calendar module loads) and check the results.
    OHLCVFrame.validate(frame, lazy=True)
    schema_report, scores, completeness_report = together()
    assert schema_report.passed, schema_report.checks  # type: ignore[attr-defined]
    assert completeness_report.ratio == 1.0  # type: ignore[attr-defined]

    timings: dict[str, list[float]] = {
        name: [] for name in ("baseline", "schema", "errors", "completeness", "together")
    }
    calls = {
        "baseline": lambda: OHLCVFrame.validate(frame, lazy=True),
        "schema": schema,
        "errors": errors,
        "completeness": completeness,
        "together": together,
    }
    for _ in range(args.rounds):
        for name, call in calls.items():
            timings[name].append(seconds(call))
    median = {name: statistics.median(values) for name, values in timings.items()}
    baseline = median["baseline"]

    print(
        f"frame: {len(frame):,} rows of {INTERVAL} bars, {args.symbols} symbols;"
        f" median of {args.rounds} interleaved rounds"
    )
    rows = (
        ("pandera OHLCVFrame.validate, lazy (baseline)", "baseline"),
        ("check_schema", "schema"),
        ("data errors (bar_errors per symbol)", "errors"),
        ("check_completeness", "completeness"),
        ("schema + data errors + completeness", "together"),
    )
    for label, name in rows:
        value = median[name]
        print(
            f"{label + ':':<46} {value:>6.3f} s  {len(frame) / value / 1e6:>5.2f} M rows/s"
            f"  ratio {value / baseline:.2f}"
        )
    series_scores: list[pd.DataFrame] = scores  # type: ignore[assignment]
    every = pd.concat(series_scores, ignore_index=True)
    print(f"data errors per detector, {len(series_scores)} series (WARN level and above):")
    for name, warn in WARN_LEVELS.items():
        values = every[name].to_numpy(dtype="float64")
        scored = int((~np.isnan(values)).sum())
        flagged = int((np.nan_to_num(values) >= warn).sum())
        share = flagged / scored if scored else 0.0
        print(f"  {name:<6} >= {warn:g}: {flagged:,} bars flagged of {scored:,} ({share:.3%})")


if __name__ == "__main__":
    main()
