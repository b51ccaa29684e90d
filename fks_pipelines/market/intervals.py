"""Bar intervals shared by every provider.

Only intervals that tile a UTC day are supported: OHLCV assets are partitioned by UTC date, so
a bar must never straddle two partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pandas as pd

_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_DAY_SECONDS = 86400


@dataclass(frozen=True)
class Interval:
    """A bar length such as ``1m``, ``1h`` or ``1d``.

    Attributes:
        name: The canonical spelling (``"15m"``). Minutes are lower-case ``m``: ``1M`` (a month
            on Binance) is not a supported interval.
        seconds: The bar length in seconds.
    """

    name: str
    seconds: int

    @classmethod
    def parse(cls, name: str) -> Interval:
        """Parse an interval name, raising ``ValueError`` with the accepted forms."""
        count, unit = name[:-1], name[-1:]
        if (
            not count.isdigit()
            or unit not in _UNIT_SECONDS
            or str(int(count)) != count
            or count == "0"
        ):
            raise ValueError(
                f"unsupported interval {name!r}: use <n>m, <n>h or 1d (e.g. 1m, 15m, 1h, 4h, 1d)"
            )
        seconds = int(count) * _UNIT_SECONDS[unit]
        if seconds > _DAY_SECONDS or _DAY_SECONDS % seconds:
            raise ValueError(
                f"unsupported interval {name!r}: bars must tile a UTC day "
                "(OHLCV partitions are UTC dates)"
            )
        return cls(name=name, seconds=seconds)

    @property
    def ms(self) -> int:
        return self.seconds * 1000

    @property
    def delta(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    @property
    def offset(self) -> pd.Timedelta:
        return pd.Timedelta(seconds=self.seconds)

    def bars_between(self, start: pd.Timestamp, end: pd.Timestamp) -> int:
        """Number of bar opens in ``[start, end)`` on this interval's UTC grid."""
        start, end = start.tz_convert("UTC"), end.tz_convert("UTC")
        first = start.ceil(self.offset)
        if first >= end:
            return 0
        return int((end - first - pd.Timedelta(1, "ns")) // self.offset) + 1

    def __str__(self) -> str:
        return self.name
