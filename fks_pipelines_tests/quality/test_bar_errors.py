"""Planted data errors in slices of real NASDAQ Composite daily bars (fixtures/real)."""

from pathlib import Path

import pandas as pd
import pytest

from fks_pipelines.market.calendars import holiday_neighbours, session_fractions
from fks_pipelines.market.intervals import Interval
from fks_pipelines.market.universe import Instrument
from fks_pipelines.quality.assess import judge_days
from fks_pipelines.quality.bar_errors import (
    AFTER_HOLIDAY_VOLUME,
    BEFORE_HOLIDAY_VOLUME,
    HALF_DAY_VOLUME,
    volume_levels,
)

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
    judged = judge_days(planted.iloc[:60], planted.iloc[60:], XNYS, D1)
    day = planted["ts"].iloc[i].floor("D")
    assert worst(judged[day]) == "high"
    assert worst(judged[planted["ts"].iloc[i + 1].floor("D")]) == "none"


@pytest.mark.parametrize("kind", ["none", "bar*1.05"])
def test_verdict_is_the_same_daily_and_in_a_block(bars: pd.DataFrame, kind: str) -> None:
    """The final verdict of each day, from the run two days later in daily runs (its two next
    bars), equals the one a block run gives it; with whole bars shifted too, whose neighbours a
    daily run must not blame for want of the bar after."""
    series = bars.copy()
    if kind != "none":
        series.loc[70:95:8, ["open", "high", "low", "close"]] *= 1.05
    block = judge_days(series.iloc[:60], series.iloc[60:100], XNYS, D1)
    for i in range(62, 100):
        daily = judge_days(series.iloc[i - 51 : i], series.iloc[i : i + 1], XNYS, D1)
        two_before = series["ts"].iloc[i - 2].floor("D")
        assert daily[two_before].final
        assert worst(daily[two_before]) == worst(block[two_before]), two_before


def test_repeated_bar_and_broken_high_fail(bars: pd.DataFrame) -> None:
    planted = bars.copy()
    for column in ("open", "high", "low", "close", "volume"):
        planted.loc[70, column] = planted.loc[69, column]
    planted.loc[90, "high"] *= 1.2
    judged = judge_days(planted.iloc[:60], planted.iloc[60:], XNYS, D1)
    assert worst(judged[planted["ts"].iloc[70].floor("D")]) == "high"
    assert worst(judged[planted["ts"].iloc[90].floor("D")]) != "none"
    # The bar before the repeat looks "reverted" by the repeat's open (its own): not blamed.
    assert worst(judged[planted["ts"].iloc[69].floor("D")]) == "none"


def test_a_first_partition_without_history_is_judged_without_failing(bars: pd.DataFrame) -> None:
    """A new series: no stored bar before it, fewer bars than the baseline."""
    one = judge_days(bars.iloc[:0], bars.iloc[:1], XNYS, D1)
    few = judge_days(bars.iloc[:0], bars.iloc[:5], XNYS, D1)
    assert [worst(j) for j in one.values()] == ["none"]
    assert [worst(j) for j in few.values()] == ["none"] * 5


def test_a_stale_run_across_daily_partitions_shows_on_the_day_it_becomes_visible(
    bars: pd.DataFrame,
) -> None:
    """Four equal closes on four sessions, each run alone: the third holds the stale run."""
    planted = bars.copy()
    planted.loc[81:83, "close"] = planted.loc[80, "close"]
    planted.loc[80:83, "high"] = planted.loc[80:83, ["high", "close"]].max(axis=1)
    planted.loc[80:83, "low"] = planted.loc[80:83, ["low", "close"]].min(axis=1)
    runs = {}
    for i in range(80, 84):
        judged = judge_days(planted.iloc[i - 49 : i], planted.iloc[i : i + 1], XNYS, D1)
        day = planted["ts"].iloc[i].floor("D")
        runs[i] = judged[day].stale_runs
    assert runs == {80: 0, 81: 0, 82: 1, 83: 0}


def test_volume_is_expected_lower_on_a_half_day_and_next_to_a_holiday() -> None:
    # 3 July 2024 (half day, before Independence Day), 5 July (after it), 8 July (usual).
    days = pd.DatetimeIndex(["2024-07-03", "2024-07-05", "2024-07-08"], tz="UTC")
    before, after = holiday_neighbours("XNYS", days)
    levels = volume_levels(session_fractions("XNYS", days), before, after)
    assert list(before) == [True, False, False] and list(after) == [False, True, False]
    assert levels[0] == pytest.approx(
        session_fractions("XNYS", days)[0] * HALF_DAY_VOLUME * BEFORE_HOLIDAY_VOLUME
    )
    assert levels[1] == pytest.approx(AFTER_HOLIDAY_VOLUME)
    assert levels[2] == 1.0


def test_a_close_a_second_provider_matched_is_a_market_move(bars: pd.DataFrame) -> None:
    """A consolidated series: the same -10 % close, stored by one provider it is an error; matched
    by a second provider's close within tolerance, it moved with the market."""
    planted = bars.copy()
    i = 80
    planted.loc[i, "close"] *= 0.9
    planted.loc[i, "low"] = min(planted.loc[i, "low"], planted.loc[i, "close"])
    day = planted["ts"].iloc[i].floor("D")

    def judged(providers: int, agreement_bps: float) -> object:
        series = planted.assign(providers=1, agreement_bps=float("nan"))
        series.loc[i, ["providers", "agreement_bps"]] = [providers, agreement_bps]
        window = judge_days(series.iloc[:60], series.iloc[60:], XNYS, D1, confirm_bps=50.0)
        return window[day]

    alone, matched, disputed = judged(1, float("nan")), judged(2, 3.0), judged(2, 900.0)
    assert worst(alone) == "high" and alone.confirmed == 0
    assert worst(matched) == "none" and matched.confirmed == 1
    assert worst(disputed) == "high" and disputed.confirmed == 0


def test_a_whole_bar_shifted_is_blamed_on_itself_not_its_neighbours(bars: pd.DataFrame) -> None:
    planted = bars.copy()
    i = 85
    planted.loc[i, ["open", "high", "low", "close"]] *= 1.1
    judged = judge_days(planted.iloc[:60], planted.iloc[60:], XNYS, D1)
    at = {k: judged[planted["ts"].iloc[i + k].floor("D")] for k in (-1, 0, 1)}
    [shift] = [r for r in at[0].outliers if r.field == "shift"]
    assert shift.severity == "high"
    assert worst(at[-1]) == "none" and worst(at[1]) == "none"
