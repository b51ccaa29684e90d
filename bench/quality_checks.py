"""Quality checks on a million bars: schema + outliers + completeness next to plain pandera.

    .venv/bin/python -m bench.quality_checks [--rows 1000000] [--symbols 4] [--rounds 3]

Run from the repository root. The frame: ``--rows`` one-minute bars split evenly over
``--symbols`` crypto symbols, each a random walk with fat-tailed returns (Student t, 4 degrees of
freedom, 0.08 % a minute), consistent highs and lows and log-normal volumes, stacked symbol after
symbol as a provider window arrives. Baseline: ``OHLCVFrame.validate(frame, lazy=True)``, the
pandera model alone, which the frame passes. Measured, on the same frame in the same run:
:func:`check_schema` (the model, plus ts uniqueness, order, grid and interval),
``OutlierDetector("mad").detect(frame, ("close", "volume"))`` and :func:`check_completeness`
over the frame's whole window, each timed alone and all three together. Ratio = measured /
baseline. Baseline and measured calls are interleaved over ``--rounds`` rounds and medians of
the rounds reported.
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
from fks_pipelines.quality.completeness import check_completeness
from fks_pipelines.quality.outliers import OutlierDetector
from fks_pipelines.quality.schema import check_schema

INTERVAL = Interval.parse("1m")
START = pd.Timestamp("2024-01-01", tz="UTC")
CRYPTO = Instrument(asset_class="crypto")


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
    detector = OutlierDetector("mad")

    def schema() -> object:
        return check_schema(frame, INTERVAL)

    def outliers() -> object:
        return detector.detect(frame, ("close", "volume"))

    def completeness() -> object:
        return check_completeness(frame, CRYPTO, INTERVAL, START, end, now=end)

    def together() -> object:
        return schema(), outliers(), completeness()

    # Warm up (pandera builds its schema, the calendar module loads) and check the results.
    OHLCVFrame.validate(frame, lazy=True)
    schema_report, results, completeness_report = together()
    assert schema_report.passed, schema_report.checks  # type: ignore[attr-defined]
    assert completeness_report.ratio == 1.0  # type: ignore[attr-defined]

    timings: dict[str, list[float]] = {
        name: [] for name in ("baseline", "schema", "outliers", "completeness", "together")
    }
    calls = {
        "baseline": lambda: OHLCVFrame.validate(frame, lazy=True),
        "schema": schema,
        "outliers": outliers,
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
        ("OutlierDetector('mad').detect close+volume", "outliers"),
        ("check_completeness", "completeness"),
        ("schema + outliers + completeness", "together"),
    )
    for label, name in rows:
        value = median[name]
        print(
            f"{label + ':':<46} {value:>6.3f} s  {len(frame) / value / 1e6:>5.2f} M rows/s"
            f"  ratio {value / baseline:.2f}"
        )
    per_field = median["outliers"] / 2
    print(f"outliers per field: {per_field:.3f} s per {len(frame):,} rows")
    for result in results:  # type: ignore[attr-defined]
        print(
            f"  {result.field}: {result.count:,} outliers of {result.scored:,} bars"
            f" ({result.count / result.scored:.2%}), max score {result.max_score:.1f},"
            f" severity {result.severity}"
        )


if __name__ == "__main__":
    main()
