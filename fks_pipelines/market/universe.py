"""The instrument universe: which symbols each provider serves, at which intervals, since when.

Loaded from a YAML file (``fks_pipelines/universe.yaml`` by default, ``FKS_UNIVERSE_FILE`` to
override). Every provider ticker maps to a canonical instrument so that later stages can line up
the same instrument across providers.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fks_pipelines.market.intervals import Interval

ProviderId = Literal["binance", "polygon", "coingecko", "coinmarketcap", "alpha_vantage", "eodhd"]
PROVIDER_IDS: tuple[str, ...] = get_args(ProviderId)

AssetClass = Literal["crypto", "equity"]

DEFAULT_UNIVERSE_FILE = Path(__file__).resolve().parent.parent / "universe.yaml"


class UniverseError(ValueError):
    """The universe file is missing or does not describe a valid universe."""


class Instrument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    asset_class: AssetClass
    calendar: str | None = Field(
        default=None, description="exchange_calendars code; required for equities."
    )

    @model_validator(mode="after")
    def _equities_have_a_calendar(self) -> Instrument:
        if self.asset_class == "equity" and not self.calendar:
            raise ValueError("equity instruments need a calendar (e.g. XNYS)")
        return self


class ProviderUniverse(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_date: date
    intervals: tuple[str, ...] = Field(min_length=1)
    symbols: dict[str, str] = Field(
        min_length=1, description="provider ticker -> canonical instrument"
    )
    freshness_lag_minutes: int = Field(
        default=120,
        gt=0,
        description=(
            "How long after a UTC day closes its partitions should be stored; later, the "
            "freshness check fails and the freshness sensor asks for them."
        ),
    )

    @field_validator("intervals")
    @classmethod
    def _known_intervals(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            Interval.parse(name)
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate intervals in {list(value)}")
        return value


class Tolerance(BaseModel):
    """How far another provider's close may stray from the consolidated bar's close.

    Deviations are ``|close - chosen close| / chosen close`` in basis points (1 bp = 0.01 %).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    warn_bps: float = Field(
        gt=0, description="Bars deviating more are counted as beyond tolerance (stored, reported)."
    )
    error_bps: float = Field(
        gt=0, description="Hard limit: a bar deviating more fails the agreement check."
    )

    @model_validator(mode="after")
    def _error_above_warn(self) -> Tolerance:
        if self.error_bps <= self.warn_bps:
            raise ValueError(
                f"error_bps ({self.error_bps}) must be above warn_bps ({self.warn_bps})"
            )
        return self


DEFAULT_AGREEMENT: dict[AssetClass, Tolerance] = {
    "crypto": Tolerance(warn_bps=50, error_bps=500),
    "equity": Tolerance(warn_bps=25, error_bps=200),
}


class Universe(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instruments: dict[str, Instrument]
    providers: dict[str, ProviderUniverse]
    priority: tuple[str, ...] = Field(
        default=PROVIDER_IDS, description="Providers in failover order, most preferred first."
    )
    agreement: dict[AssetClass, Tolerance] = Field(
        default_factory=lambda: dict(DEFAULT_AGREEMENT),
        description="Cross-provider close tolerances per asset class; classes not named keep "
        "their defaults.",
    )

    @field_validator("agreement", mode="after")
    @classmethod
    def _default_tolerances(cls, value: dict[AssetClass, Tolerance]) -> dict[AssetClass, Tolerance]:
        return {**DEFAULT_AGREEMENT, **value}

    @model_validator(mode="after")
    def _consistent(self) -> Universe:
        unknown_priority = sorted(set(self.priority) - set(PROVIDER_IDS))
        if unknown_priority:
            raise ValueError(f"priority names unknown providers {unknown_priority}")
        for provider, spec in self.providers.items():
            if provider not in PROVIDER_IDS:
                raise ValueError(f"unknown provider {provider!r}; known: {', '.join(PROVIDER_IDS)}")
            unknown = sorted(set(spec.symbols.values()) - set(self.instruments))
            if unknown:
                raise ValueError(f"{provider}: symbols map to undeclared instruments {unknown}")
            self._calendar_serves(provider, spec)
        return self

    def _calendar_serves(self, provider: str, spec: ProviderUniverse) -> None:
        """Refuse a start_date before the trading calendars' first day: its partitions could be
        fetched but never checked (completeness needs the calendar)."""
        # Imported here: calendars imports this module.
        from fks_pipelines.market.calendars import FIRST_DAY

        equities = sorted(
            {i for i in spec.symbols.values() if self.instruments[i].asset_class == "equity"}
        )
        if equities and spec.start_date < FIRST_DAY:
            raise ValueError(
                f"{provider}: start_date {spec.start_date} is before {FIRST_DAY}, the first day "
                f"the trading calendars cover (equities {equities})"
            )

    def provider(self, provider: str) -> ProviderUniverse:
        try:
            return self.providers[provider]
        except KeyError:
            raise UniverseError(f"provider {provider!r} is not in the universe") from None

    def canonical(self, provider: str, symbol: str) -> str:
        """The canonical instrument of a provider ticker."""
        try:
            return self.provider(provider).symbols[symbol]
        except KeyError:
            raise UniverseError(f"{provider}: symbol {symbol!r} is not in the universe") from None

    def instrument(self, instrument: str) -> Instrument:
        try:
            return self.instruments[instrument]
        except KeyError:
            raise UniverseError(f"instrument {instrument!r} is not in the universe") from None

    def tolerance(self, instrument: str) -> Tolerance:
        """The cross-provider agreement tolerance of ``instrument``'s asset class."""
        return self.agreement[self.instrument(instrument).asset_class]

    def routes(self, instrument: str) -> list[tuple[str, str]]:
        """``(provider, provider ticker)`` pairs listing ``instrument``, in ``priority`` order.

        Providers left out of ``priority`` are left out here too, as the failover manager leaves
        them out: ``priority`` is the one list of providers allowed to serve an instrument. A
        provider with several tickers for the instrument gives them in file order.

        Raises:
            UniverseError: ``instrument`` is not declared.
        """
        self.instrument(instrument)
        return [
            (provider, symbol)
            for provider in self.priority
            if provider in self.providers
            for symbol, canonical in self.providers[provider].symbols.items()
            if canonical == instrument
        ]


def load_universe(path: Path | str | None = None) -> Universe:
    """Read and validate a universe file, raising :class:`UniverseError` with its path."""
    source = Path(path) if path else DEFAULT_UNIVERSE_FILE
    try:
        raw = yaml.safe_load(source.read_text())
    except OSError as exc:
        raise UniverseError(f"cannot read universe file {source}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UniverseError(f"universe file {source} is not valid YAML: {exc}") from exc
    try:
        return Universe.model_validate(raw)
    except ValidationError as exc:
        raise UniverseError(f"universe file {source} is invalid:\n{exc}") from exc
