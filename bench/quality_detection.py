"""Detection of planted data errors in 20 years of real NASDAQ Composite daily bars.

    .venv/bin/python -m bench.quality_detection [--every 25] [--offsets 2] [--block 100]

Run from the repository root. The series: ``nasdaq_composite_daily_1999-2018.csv.gz`` (5,031
sessions, ``fks_pipelines_tests/fixtures/real``). For each error kind (close ±5/10/20 % with
high/low widened to stay schema-valid, a whole bar scaled by ±5/10 %, a repeated bar, high x1.2,
low x0.8, close x10 and ÷10 with the range widened, volume 0, volume x1000) a copy of the
series gets the error planted every ``--every`` sessions (``--offsets`` copies, shifted). Each
copy runs through :func:`~fks_pipelines.quality.assess.judge_days`, the function the OHLCV
asset calls, as the daily schedule runs it (one day per run, N bars of history; the run of day
t+1 records the final verdict of day t) and as a backfill (blocks of ``--block`` days in order;
the block after records the verdict of a block's last day). A partition's verdict is its final
one.

Reported: detection (WARN or ERROR, and ERROR alone) per kind, by year for ±5 %; false alarms on
the untouched series (ERROR and WARN per series-year, with the days); blame accuracy (of the
failing partitions of a planted copy within a day of a plant, the planted ones); verdict
agreement daily vs backfill (outcome and severity of every partition of every copy).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.assess import BASELINE_BARS, judge_days
from fks_pipelines.quality.bar_errors import history_bars

DATA = (
    Path(__file__).resolve().parents[1]
    / "fks_pipelines_tests/fixtures/real/nasdaq_composite_daily_1999-2018.csv.gz"
)
INSTRUMENT = Instrument(asset_class="equity", calendar="XNYS")
DAILY = Interval.parse("1d")
KINDS = (
    "close+5%", "close-5%", "close+10%", "close-10%", "close+20%", "close-20%",
    "bar*1.05", "bar*0.95", "bar*1.1", "bar*0.9",
    "repeated", "high*1.2", "low*0.8", "close*10", "close/10", "volume0", "volume*1000",
)  # fmt: skip


def load() -> pd.DataFrame:
    raw = pd.read_csv(DATA)
    ts = pd.to_datetime(raw["Date"], format="%m/%d/%Y").dt.tz_localize("UTC")
    return pd.DataFrame(
        {
            "provider": "bench",
            "symbol": "IXIC",
            "interval": "1d",
            "ts": ts,
            "open": raw["Open"].astype(float),
            "high": raw["High"].astype(float),
            "low": raw["Low"].astype(float),
            "close": raw["Close"].astype(float),
            "volume": raw["Volume"].astype(float),
        }
    )


def plant(frame: pd.DataFrame, kind: str, rows: np.ndarray) -> pd.DataFrame:
    out = frame.copy()
    o, h, lo, c, v = (out[k].to_numpy().copy() for k in ("open", "high", "low", "close", "volume"))
    if kind.startswith("close") and "%" in kind:
        c[rows] *= 1 + float(kind[5:-1]) / 100
    elif kind.startswith("bar*"):  # the whole bar scaled: open, high, low and close
        for column in (o, h, lo, c):
            column[rows] *= float(kind[4:])
    elif kind == "close*10":
        c[rows] *= 10
    elif kind == "close/10":
        c[rows] /= 10
    elif kind == "repeated":
        for a in ("open", "high", "low", "close", "volume"):
            col = {"open": o, "high": h, "low": lo, "close": c, "volume": v}[a]
            col[rows] = col[rows - 1]
    elif kind == "high*1.2":
        h[rows] *= 1.2
    elif kind == "low*0.8":
        lo[rows] *= 0.8
    elif kind == "volume0":
        v[rows] = 0
    elif kind == "volume*1000":
        v[rows] *= 1000
    h = np.maximum.reduce([h, o, c])  # stay schema-valid
    lo = np.minimum.reduce([lo, o, c])
    out["open"], out["high"], out["low"], out["close"], out["volume"] = o, h, lo, c, v
    return out


def severity(judged) -> str:
    order = ["none", "low", "medium", "high"]
    return max((r.severity for r in judged.outliers), key=order.index, default="none")


def verdicts(frame: pd.DataFrame, block: int) -> dict[pd.Timestamp, str]:
    """Final verdict per day: runs of ``block`` days in order, each with N bars of history."""
    keep = history_bars(BASELINE_BARS)
    final: dict[pd.Timestamp, str] = {}
    n = len(frame)
    for first in range(0, n, block):
        last = min(first + block, n)
        judged = judge_days(
            frame.iloc[max(0, first - keep) : first],
            frame.iloc[first:last],
            INSTRUMENT,
            DAILY,
        )
        for day, j in judged.items():
            final[day] = severity(j)  # a later run's verdict replaces an earlier one
    return final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--offsets", type=int, default=2)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--daily", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    base = load()
    days = pd.DatetimeIndex(base["ts"])
    years = days.year.to_numpy()
    modes = {"backfill": args.block, **({"daily": 1} if args.daily else {})}

    clean = {m: verdicts(base, b) for m, b in modes.items()}
    series_years = len(base) / 252
    for m, v in clean.items():
        sev = pd.Series(v)
        print(
            f"untouched, {m}: ERROR {int((sev == 'high').sum())} "
            f"({(sev == 'high').sum() / series_years:.2f}/series-year), "
            f"WARN {int((sev == 'medium').sum())} ({(sev == 'medium').sum() / series_years:.2f}/"
            f"series-year); ERROR days: {[d.date().isoformat() for d in sev[sev == 'high'].index]}"
        )
    agree = total = 0
    if len(clean) == 2:
        agree += sum(clean["daily"][d] == clean["backfill"][d] for d in clean["backfill"])
        total += len(clean["backfill"])

    print("\n| kind | planted | caught (WARN or ERROR) | ERROR | blame | caught 2008 |")
    print("|---|---|---|---|---|---|")
    by_year: dict[int, list[bool]] = defaultdict(list)
    for kind in KINDS:
        caught = errors = planted = blamed = flagged_near = 0
        c2008: list[bool] = []
        for offset in range(args.offsets):
            start = BASELINE_BARS + 2 + offset * (args.every // max(args.offsets, 1))
            rows = np.arange(start, len(base) - 1, args.every)
            copy = plant(base, kind, rows)
            found = {m: verdicts(copy, b) for m, b in modes.items()}
            v = found["backfill"]
            if len(found) == 2:
                agree += sum(found["daily"][d] == v[d] for d in v)
                total += len(v)
            planted_days = set(days[rows])
            for r in rows:
                s = v[days[r]]
                planted += 1
                caught += s in ("medium", "high")
                errors += s == "high"
                if years[r] == 2008:
                    c2008.append(s in ("medium", "high"))
                if kind.startswith("close") and abs(float(kind[5:-1] if "%" in kind else 0)) == 5:
                    by_year[int(years[r])].append(s in ("medium", "high"))
            near = {days[r + k] for r in rows for k in (-1, 0, 1) if 0 <= r + k < len(days)}
            for d in near:
                if v[d] in ("medium", "high") and clean["backfill"][d] == "none":
                    flagged_near += 1
                    blamed += d in planted_days
        blame = blamed / flagged_near if flagged_near else float("nan")
        print(
            f"| {kind} | {planted} | {caught / planted:.1%} | {errors / planted:.1%} | "
            f"{blame:.1%} | {np.mean(c2008):.1%} |"
        )
    print("\n±5 % close caught by year: " + ", ".join(
        f"{y} {np.mean(v):.0%}" for y, v in sorted(by_year.items())
    ))  # fmt: skip
    if total:
        print(f"\ndaily vs backfill: {agree} of {total} partition verdicts identical")


if __name__ == "__main__":
    main()
