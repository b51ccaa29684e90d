"""The consolidated series: priority choice, gap filling and cross-provider agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fks_pipelines.market import frame as canonical
from fks_pipelines.market.consolidate import (
    COLUMNS,
    DTYPES,
    as_canonical,
    consolidate,
    empty_consolidated,
)
from fks_pipelines.market.frame import build_frame, empty_frame
from fks_pipelines.market.intervals import Interval
from fks_pipelines.quality.schema import check_schema

DAY = pd.Timestamp("2024-01-02", tz="UTC")


def window(
    provider: str,
    symbol: str,
    *,
    periods: int = 6,
    start: pd.Timestamp = DAY,
    base: float = 100.0,
    close_factor: float = 1.0,
    interval: str = "1h",
) -> pd.DataFrame:
    """Consecutive hourly bars of one provider ticker; ``close_factor`` scales the closes."""
    opens = base + np.arange(periods, dtype="float64")
    closes = (opens + 0.5) * close_factor
    return build_frame(
        provider=provider,
        symbol=symbol,
        interval=interval,
        ts=pd.date_range(start, periods=periods, freq="h"),
        open=opens,
        high=np.maximum(opens, closes) + 2.0,
        low=np.minimum(opens, closes) - 1.0,
        close=closes,
        volume=np.arange(periods, dtype="float64"),
        vwap=opens + 0.25,
        trades=np.arange(periods) * 10,
    )


def test_the_first_window_with_a_bar_wins() -> None:
    primary = window("binance", "BTCUSDT")
    secondary = window("polygon", "X:BTCUSD", base=200.0)

    out = consolidate("BTC-USD", "1h", [primary, secondary])

    assert list(out.columns) == list(COLUMNS)
    assert out.dtypes.to_dict() == {
        name: pd.api.types.pandas_dtype(d) for name, d in DTYPES.items()
    }
    assert (out["instrument"] == "BTC-USD").all()
    assert (out["interval"] == "1h").all()
    assert (out["source"] == "binance").all()
    assert (out["source_symbol"] == "BTCUSDT").all()
    assert (out["providers"] == 2).all()
    for name in ("ts", "open", "high", "low", "close", "volume", "vwap", "trades"):
        pd.testing.assert_series_equal(out[name], primary[name])


def test_priority_follows_window_order_not_provider_name() -> None:
    out = consolidate(
        "BTC-USD", "1h", [window("polygon", "X:BTCUSD"), window("binance", "BTCUSDT", base=200.0)]
    )
    assert (out["source"] == "polygon").all()
    assert out["open"].iloc[0] == 100.0


def test_a_gap_in_the_primary_is_filled_from_the_secondary() -> None:
    primary = window("binance", "BTCUSDT").drop(index=[2, 3])
    secondary = window("polygon", "X:BTCUSD", base=200.0)
    tertiary = window("coingecko", "bitcoin", base=300.0, periods=8)

    out = consolidate("BTC-USD", "1h", [primary, secondary, tertiary])

    assert out["ts"].tolist() == list(pd.date_range(DAY, periods=8, freq="h"))
    assert (
        out["source"].tolist()
        == ["binance"] * 2 + ["polygon"] * 2 + ["binance"] * 2 + ["coingecko"] * 2
    )
    assert (
        out["source_symbol"].tolist()
        == ["BTCUSDT"] * 2 + ["X:BTCUSD"] * 2 + ["BTCUSDT"] * 2 + ["bitcoin"] * 2
    )
    assert out["open"].tolist() == [100.0, 101.0, 202.0, 203.0, 104.0, 105.0, 306.0, 307.0]
    assert out["providers"].tolist() == [3, 3, 2, 2, 3, 3, 1, 1]


def test_a_failed_primary_window_is_filled_by_the_next() -> None:
    out = consolidate("BTC-USD", "1h", [empty_frame(), window("polygon", "X:BTCUSD")])
    assert (out["source"] == "polygon").all()
    assert len(out) == 6
    assert out["agreement_bps"].isna().all()


def test_a_provider_ten_bps_off_gives_ten_bps_agreement() -> None:
    primary = window("binance", "BTCUSDT", periods=24)
    off = window("polygon", "X:BTCUSD", periods=24, close_factor=1.001)

    out = consolidate("BTC-USD", "1h", [primary, off])

    assert out["agreement_bps"].to_numpy() == pytest.approx(np.full(24, 10.0), rel=1e-9)


def test_agreement_is_the_largest_deviation_from_the_chosen_close() -> None:
    primary = window("binance", "BTCUSDT")
    above = window("polygon", "X:BTCUSD", close_factor=1.001)
    below = window("coingecko", "bitcoin", close_factor=0.997)

    out = consolidate("BTC-USD", "1h", [primary, above, below])

    assert out["agreement_bps"].to_numpy() == pytest.approx(np.full(6, 30.0), rel=1e-9)


def test_agreement_is_measured_against_the_bar_that_fills_a_gap() -> None:
    primary = window("binance", "BTCUSDT").drop(index=[4])
    secondary = window("polygon", "X:BTCUSD", close_factor=1.002)
    tertiary = window("coingecko", "bitcoin", close_factor=1.002 * 1.0005)

    out = consolidate("BTC-USD", "1h", [primary, secondary, tertiary])

    assert out["source"].iloc[4] == "polygon"
    assert out["agreement_bps"].iloc[4] == pytest.approx(5.0, rel=1e-9)
    assert out["agreement_bps"].iloc[0] == pytest.approx(20.0 * 1.0005 + 5.0, rel=1e-9)


def test_bars_only_one_provider_has_have_no_agreement() -> None:
    primary = window("binance", "BTCUSDT", periods=6)
    secondary = window("polygon", "X:BTCUSD", periods=3, close_factor=1.001)

    out = consolidate("BTC-USD", "1h", [primary, secondary])

    assert out["providers"].tolist() == [2, 2, 2, 1, 1, 1]
    assert out["agreement_bps"].iloc[:3].to_numpy() == pytest.approx(np.full(3, 10.0))
    assert out["agreement_bps"].iloc[3:].isna().all()


@pytest.mark.parametrize(
    "windows",
    [
        pytest.param([], id="no-windows"),
        pytest.param([empty_frame()], id="one-empty"),
        pytest.param([empty_frame(), empty_frame()], id="all-empty"),
    ],
)
def test_no_bars_give_the_empty_shape(windows: list[pd.DataFrame]) -> None:
    out = consolidate("BTC-USD", "1h", windows)
    pd.testing.assert_frame_equal(out, empty_consolidated())
    assert list(out.columns) == list(COLUMNS)


def test_windows_of_different_tickers_line_up_by_time() -> None:
    later = DAY + pd.Timedelta(hours=3)
    out = consolidate(
        "SPY",
        "1h",
        [
            window("polygon", "SPY", start=later, periods=2),
            window("eodhd", "SPY.US", periods=4),
            window("alpha_vantage", "SPY", start=DAY + pd.Timedelta(hours=1), periods=6),
        ],
    )
    assert out["ts"].is_monotonic_increasing
    assert out["ts"].is_unique
    pairs = list(zip(out["source"], out["source_symbol"], strict=True))
    assert pairs == [
        ("eodhd", "SPY.US"),
        ("eodhd", "SPY.US"),
        ("eodhd", "SPY.US"),
        ("polygon", "SPY"),
        ("polygon", "SPY"),
        ("alpha_vantage", "SPY"),
        ("alpha_vantage", "SPY"),
    ]
    assert out["providers"].tolist() == [1, 2, 2, 3, 2, 1, 1]


def test_unsorted_windows_give_a_sorted_series() -> None:
    shuffled = window("binance", "BTCUSDT").iloc[[3, 0, 5, 1, 4, 2]]
    out = consolidate("BTC-USD", "1h", [shuffled])
    assert out["ts"].tolist() == list(pd.date_range(DAY, periods=6, freq="h"))
    assert out["open"].tolist() == [100.0, 101.0, 102.0, 103.0, 104.0, 105.0]


@pytest.mark.parametrize(
    ("windows", "match"),
    [
        pytest.param(
            [pd.concat([window("binance", "BTCUSDT"), window("polygon", "X:BTCUSD")])],
            "mixes providers",
            id="two-providers-in-one-window",
        ),
        pytest.param(
            [window("binance", "BTCUSDT"), window("binance", "BTCUSDT")],
            "earlier window",
            id="same-ticker-twice",
        ),
        pytest.param(
            [window("binance", "BTCUSDT", interval="1d")],
            "another interval",
            id="other-interval",
        ),
        pytest.param(
            [pd.concat([window("binance", "BTCUSDT"), window("binance", "BTCUSDT").iloc[[2]]])],
            "same bar twice",
            id="repeated-bar",
        ),
    ],
)
def test_malformed_windows_are_refused(windows: list[pd.DataFrame], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        consolidate("BTC-USD", "1h", windows)


def test_the_consolidated_series_reads_as_a_canonical_frame() -> None:
    consolidated = consolidate(
        "BTC-USD", "1h", [window("binance", "BTCUSDT"), window("polygon", "X:BTCUSD")]
    )

    frame = as_canonical(consolidated)

    assert list(frame.columns) == list(canonical.COLUMNS)
    assert frame.dtypes.to_dict() == {
        name: pd.api.types.pandas_dtype(d) for name, d in canonical.DTYPES.items()
    }
    assert frame["provider"].unique().tolist() == ["consolidated"]
    assert frame["symbol"].unique().tolist() == ["BTC-USD"]
    assert frame["close"].tolist() == consolidated["close"].tolist()
    assert check_schema(frame, Interval.parse("1h")).passed


def daily(provider: str, symbol: str, close: float, **columns: object) -> pd.DataFrame:
    """One daily bar of 2019-01-02 at ``close``; ``columns`` are build_frame's volume columns
    and ``bar_kind``."""
    return build_frame(
        provider=provider,
        symbol=symbol,
        interval="1d",
        ts=pd.DatetimeIndex([pd.Timestamp("2019-01-02", tz="UTC")]),
        open=[3800.0],
        high=[4000.0],
        low=[3700.0],
        close=[close],
        **columns,
    )


def test_a_traded_bar_is_preferred_to_an_earlier_providers_sampled_bar() -> None:
    sampled = daily("coingecko", "bitcoin", 3900.0, quote_volume=[5.1e9], bar_kind="sampled")
    traded = daily("coinmarketcap", "BTC", 3943.41, quote_volume=[5.2e9])

    out = consolidate("BTC-USD", "1d", [sampled, traded])

    assert out["source"].tolist() == ["coinmarketcap"]
    assert out["bar_kind"].tolist() == ["traded"]
    assert out["providers"].tolist() == [2]
    # A sampled close is not a traded close: nothing like it to compare with.
    assert out["agreement_bps"].isna().all()


def test_sampled_bars_fill_a_day_no_provider_traded_and_are_compared_among_themselves() -> None:
    first = daily("coingecko", "bitcoin", 4000.0, bar_kind="sampled")
    second = daily("coinpaprika", "btc-bitcoin", 4004.0, bar_kind="sampled")

    out = consolidate("BTC-USD", "1d", [first, second])

    assert out["bar_kind"].tolist() == ["sampled"]
    assert out["agreement_bps"].tolist() == pytest.approx([10.0])


def test_a_day_mixing_providers_keeps_each_volume_in_its_unit() -> None:
    """Binance states both volumes, CoinMarketCap USD turnover only: neither is converted."""
    binance = daily("binance", "BTCUSDT", 3943.0, volume=[1234.5], quote_volume=[4.87e6])
    binance = pd.concat(
        [binance, daily("binance", "BTCUSDT", 3836.7, volume=[1500.0], quote_volume=[5.75e6])]
    ).assign(ts=pd.DatetimeIndex(["2019-01-02", "2019-01-04"], tz="UTC"))
    cmc = pd.concat(
        [
            daily("coinmarketcap", "BTC", c, quote_volume=[q])
            for c, q in ((3943.41, 5.24e9), (3836.74, 5.0e9), (3857.72, 4.9e9))
        ]
    ).assign(ts=pd.date_range("2019-01-02", periods=3, freq="D", tz="UTC"))

    out = consolidate("BTC-USD", "1d", [binance, cmc])

    assert out["source"].tolist() == ["binance", "coinmarketcap", "binance"]
    volume, quote = out["volume"].tolist(), out["quote_volume"].tolist()
    assert volume[0] == 1234.5 and np.isnan(volume[1]) and volume[2] == 1500.0
    assert quote == [4.87e6, 5.0e9, 5.75e6]
    # Binance's closes are compared with CoinMarketCap's on the days both have.
    assert out["agreement_bps"].notna().tolist() == [True, False, True]
