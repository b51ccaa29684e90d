"""Daily returns and realised volatility, computed by hand on small series."""

import numpy as np
import pandas as pd

from fks_pipelines.market.returns import COLUMNS, DTYPES, daily_returns


def series(instrument: str, day: str, closes: list[float], first_open: float) -> pd.DataFrame:
    ts = pd.date_range(day, periods=len(closes), freq="h", tz="UTC")
    opens = [first_open, *closes[:-1]]
    return pd.DataFrame({"instrument": instrument, "ts": ts, "open": opens, "close": closes})


def test_return_is_first_open_to_last_close_and_vol_sums_squared_log_returns() -> None:
    bars = pd.concat(
        [
            series("ETH-USD", "2024-01-06", [10.0, 11.0], first_open=10.0),
            series("BTC-USD", "2024-01-05", [101.0, 99.0, 100.0], first_open=100.0),
            series("BTC-USD", "2024-01-06", [110.0], first_open=100.0),
        ],
        ignore_index=True,
    )

    out = daily_returns(bars)

    assert list(out.columns) == list(COLUMNS)
    assert out.dtypes.astype(str).to_dict() == {k: str(v) for k, v in DTYPES.items()}
    assert list(zip(out["instrument"], out["day"].dt.strftime("%F"), strict=True)) == [
        ("BTC-USD", "2024-01-05"),
        ("BTC-USD", "2024-01-06"),
        ("ETH-USD", "2024-01-06"),
    ]
    first = out.iloc[0]
    assert first["day_return"] == 0.0  # 100 open -> 100 close
    expected = np.sqrt(np.log(101 / 100) ** 2 + np.log(99 / 101) ** 2 + np.log(100 / 99) ** 2)
    assert np.isclose(first["realised_vol"], expected, rtol=0, atol=1e-15)
    assert np.isclose(out.iloc[1]["day_return"], 0.1)
    assert np.isclose(out.iloc[1]["realised_vol"], abs(np.log(1.1)))  # one bar: from its open
    assert out["bars"].tolist() == [3, 1, 2]


def test_no_bars_give_an_empty_frame_with_the_columns() -> None:
    out = daily_returns(pd.DataFrame({"instrument": [], "ts": [], "open": [], "close": []}))

    assert out.empty
    assert list(out.columns) == list(COLUMNS)
