"""Which partitions of the provider OHLCV assets a stored webhook event affects.

An event names a provider, a symbol, an interval and a window of bars. If the bars are final
(a closed Binance kline, any Polygon minute aggregate, a generic window) and the code location
has the asset ``ohlcv/<provider>/<interval>`` with that symbol, the event affects that asset's
partitions of each UTC day the window touches, from the asset's first partition up to the last
finished day (a day's partition exists once the day is over; the daily schedule fetches it
then). Everything else is not lost but marked, with the reason:

- ``unmapped``: no such asset or symbol, or the window lies before the asset's first partition.
- ``ignored``: the bars are not final yet, or their day has not closed.

Pure: no Dagster, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from fks_pipelines.warehouse.webhook_events import StoredEvent

REQUESTED = "requested"
UNMAPPED = "unmapped"
IGNORED = "ignored"
MAX_NAMED = 5  # partitions or days named in a reason


@dataclass(frozen=True)
class AssetScope:
    """What mapping needs to know of one provider OHLCV asset."""

    provider: str
    interval: str
    symbols: frozenset[str]
    first_day: date

    @property
    def name(self) -> str:
        return f"ohlcv/{self.provider}/{self.interval}"


@dataclass(frozen=True)
class Decision:
    """What to do with one event: refresh ``days`` of ``asset`` for its symbol, or nothing."""

    status: Literal["requested", "unmapped", "ignored"]
    reason: str
    asset: AssetScope | None = None
    days: tuple[date, ...] = ()


def decide(
    event: StoredEvent, assets: Mapping[tuple[str, str], AssetScope], now: datetime
) -> Decision:
    """The partitions ``event`` affects among ``assets`` (by provider and interval) at ``now``."""
    if not event.closed:
        return Decision(IGNORED, "open bar: not final yet; its close comes as another event")
    asset = assets.get((event.provider, event.interval))
    if asset is None:
        kept = sorted(i for p, i in assets if p == event.provider)
        if not kept:
            return Decision(UNMAPPED, f"no OHLCV asset of provider {event.provider!r}")
        return Decision(
            UNMAPPED,
            f"ohlcv/{event.provider} keeps no {event.interval} bars (intervals: {', '.join(kept)})",
        )
    if event.symbol not in asset.symbols:
        return Decision(UNMAPPED, f"{event.symbol!r} is not a symbol of {asset.name}")
    first = event.start.astimezone(UTC).date()
    last = (event.end.astimezone(UTC) - timedelta(microseconds=1)).date()
    # The newest partition is yesterday's (UTC): today's exists once today is over.
    newest = now.astimezone(UTC).date() - timedelta(days=1)
    lo, hi = max(first, asset.first_day), min(last, newest)
    if lo > hi:
        if last < asset.first_day:
            return Decision(
                UNMAPPED, f"before the first partition of {asset.name} ({asset.first_day})"
            )
        return Decision(
            IGNORED,
            f"UTC day {max(first, newest + timedelta(days=1))} has not closed: its partition "
            "exists once it has, and the daily schedule fetches it",
        )
    days = tuple(lo + timedelta(days=n) for n in range((hi - lo).days + 1))
    named = ", ".join(f"{d}|{event.symbol}" for d in days[:MAX_NAMED])
    more = f" and {len(days) - MAX_NAMED} more" if len(days) > MAX_NAMED else ""
    left = []
    if first < lo:
        left.append(f"days before {asset.first_day}")
    if last > hi:
        left.append(f"days from {newest + timedelta(days=1)} (not closed)")
    tail = f"; left out: {', '.join(left)}" if left else ""
    return Decision(REQUESTED, f"refresh {asset.name} {named}{more}{tail}", asset, days)
