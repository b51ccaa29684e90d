"""Planted data errors in slices of real NASDAQ Composite daily bars (fixtures/real)."""

from pathlib import Path

import pandas as pd
import pytest

from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.assess import judge_days

DATA = Path(__file__).resolve().parents[1] / "fixtures/real/nasdaq_composite_daily_1999-2018.csv.gz"
XNYS = Instrument(asset_class="equity", calendar="XNYS")
D1 = Interval.parse("1d")


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    raw = pd.read_csv(DATA)
    ts = pd.to_datetime(raw["Date"], format="%m/%d/%Y").dt.tz_localize("UTC")
    frame = pd.DataFrame(
        {
            "provider": "p",
            "symbol": "IXIC",
            "ts": ts,
            "open": raw["Open"],
            "high": raw["High"],
            "low": raw["Low"],
            "close": raw["Close"],
            "volume": raw["Volume"].astype(float),
        }
    )
    return frame.loc[(ts >= "2008-06-01") & (ts < "2008-12-31")].reset_index(drop=True)


def worst(judged) -> str:
    order = ["none", "low", "medium", "high"]
    return max((r.severity for r in judged.outliers), key=order.index)


def test_a_reverting_close_is_blamed_on_its_own_day_not_the_next(bars: pd.DataFrame) -> None:
    planted = bars.copy()
    i = 80
    planted.loc[i, "close"] *= 0.9
    planted.loc[i, "low"] = min(planted.loc[i, "low"], planted.loc[i, "close"])
    judged = judge_days(planted.iloc[:60], planted.iloc[60:], planted["ts"].iloc[60], XNYS, D1)
    day = planted["ts"].iloc[i].floor("D")
    assert worst(judged[day]) == "high"
    assert worst(judged[planted["ts"].iloc[i + 1].floor("D")]) == "none"


def test_verdict_is_the_same_daily_and_in_a_block(bars: pd.DataFrame) -> None:
    block = judge_days(bars.iloc[:60], bars.iloc[60:100], bars["ts"].iloc[60], XNYS, D1)
    for i in range(61, 100):
        daily = judge_days(
            bars.iloc[i - 49 : i], bars.iloc[i : i + 1], bars["ts"].iloc[i], XNYS, D1
        )
        before = bars["ts"].iloc[i - 1].floor("D")
        assert daily[before].final
        assert worst(daily[before]) == worst(block[before])


def test_repeated_bar_and_broken_high_fail(bars: pd.DataFrame) -> None:
    planted = bars.copy()
    for column in ("open", "high", "low", "close", "volume"):
        planted.loc[70, column] = planted.loc[69, column]
    planted.loc[90, "high"] *= 1.2
    judged = judge_days(planted.iloc[:60], planted.iloc[60:], planted["ts"].iloc[60], XNYS, D1)
    assert worst(judged[planted["ts"].iloc[70].floor("D")]) == "high"
    assert worst(judged[planted["ts"].iloc[90].floor("D")]) != "none"
