"""The warehouses the store tests use: an empty database with the schema, on its own engine."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from fks_pipelines.warehouse.store import Warehouse


def _opened(url: str) -> Iterator[Warehouse]:
    engine = sa.create_engine(url)
    store = Warehouse(engine)
    store.ensure_schema()
    try:
        yield store
    finally:
        engine.dispose()


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    """An empty warehouse (a fresh SQLite file, or the PostgreSQL schema with its tables
    emptied by ``pg_warehouse_url``) with its schema, on an engine disposed afterwards."""
    yield from _opened(warehouse_url)


@pytest.fixture
def pg_warehouse(pg_warehouse_url: str) -> Iterator[Warehouse]:
    """Like ``warehouse``, on PostgreSQL only."""
    yield from _opened(pg_warehouse_url)
