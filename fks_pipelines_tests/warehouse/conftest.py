"""The warehouse the store tests use: an empty database with the schema, on its own engine."""

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from fks_pipelines.warehouse.store import Warehouse


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    """An empty warehouse (a fresh SQLite file, or the PostgreSQL schema with its tables
    emptied by ``pg_warehouse_url``) with its schema, on an engine disposed afterwards."""
    engine = sa.create_engine(warehouse_url)
    store = Warehouse(engine)
    store.ensure_schema()
    try:
        yield store
    finally:
        engine.dispose()
