"""Fixtures shared by the Dagster wiring tests: a throwaway instance and a local Binance."""

from collections.abc import Iterator

import dagster as dg
import pytest

from fks_pipelines_tests.fakes.binance import FakeBinance


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    """An ephemeral Dagster instance (its own temporary storage)."""
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture
def binance() -> Iterator[FakeBinance]:
    """A local server speaking Binance USD-M futures' wire format."""
    with FakeBinance() as fake:
        yield fake
