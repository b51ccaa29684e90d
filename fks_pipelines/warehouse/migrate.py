"""In-place upgrades of warehouse tables written by earlier versions.

Each step looks at the table as it is (its columns), so running the upgrade twice, or against a
table created by the current code, changes nothing. :meth:`Warehouse.ensure_schema` runs it in the
schema transaction, after creating missing tables: on PostgreSQL under the schema advisory lock,
on SQLite under ``BEGIN IMMEDIATE``, so concurrent processes upgrade once.

Step 1, two volumes and the bar's making (``quote_volume``, ``bar_kind``; ``volume`` nullable):

- columns: PostgreSQL alters the table in place (``ADD COLUMN`` with a constant default and
  ``DROP NOT NULL`` rewrite no rows). SQLite cannot drop a ``NOT NULL``; the table is rebuilt
  from the current definition (SQLite's documented procedure: create, copy, drop, rename).
  Alembic's batch mode would do the same move-and-copy, but it rebuilds from the *reflected*
  table, and SQLite does not reflect CHECK constraints, so they would be lost.
- values: rows keep their meaning under the new columns. CoinMarketCap's ``volume`` was
  ``quote.USD.volume`` stored as is: it moves to ``quote_volume``. CoinGecko's bars were formed
  from samples (``sampled``) and their ``volume`` was USD turnover divided by the day's mean
  sampled price, a derived number the new columns do not hold: it is cleared, and the next run of
  the partition stores the stated USD turnover as ``quote_volume``. Consolidated rows follow the
  provider they were taken from (``source``).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from fks_pipelines.warehouse.tables import ohlcv, ohlcv_consolidated

log = logging.getLogger(__name__)

# Providers whose stored volume changes meaning in step 1, by the column naming the provider.
_QUOTE_VOLUME_PROVIDERS = ("coinmarketcap",)
_SAMPLED_PROVIDERS = ("coingecko",)


def upgrade(conn: sa.Connection) -> list[str]:
    """Bring every warehouse table to the current definition; returns what was upgraded."""
    upgraded = []
    for table, provider_column in ((ohlcv, "provider"), (ohlcv_consolidated, "source")):
        if _needs_two_volumes(conn, table.name):
            _add_two_volumes(conn, table)
            _keep_meanings(conn, table.name, provider_column)
            upgraded.append(table.name)
            log.warning("warehouse: upgraded %s to volume + quote_volume + bar_kind", table.name)
    return upgraded


def _needs_two_volumes(conn: sa.Connection, table: str) -> bool:
    columns = {column["name"] for column in sa.inspect(conn).get_columns(table)}
    return "quote_volume" not in columns


def _add_two_volumes(conn: sa.Connection, table: sa.Table) -> None:
    if conn.dialect.name == "postgresql":
        new = [table.c.quote_volume, table.c.bar_kind]
        compiler = conn.dialect.ddl_compiler(conn.dialect, None)
        statements = [f"ADD COLUMN {compiler.get_column_specification(c)}" for c in new]
        statements.append("ALTER COLUMN volume DROP NOT NULL")
        conn.exec_driver_sql(f"ALTER TABLE {table.name} {', '.join(statements)}")
        # Written out rather than through sa.schema.AddConstraint, which marks the shared
        # constraint object as "added by ALTER": every later CREATE TABLE of this table in the
        # process (an SQLite warehouse, say) would leave the CHECK out.
        for constraint in table.constraints:
            if isinstance(constraint, sa.CheckConstraint) and _mentions_new(constraint):
                conn.exec_driver_sql(
                    f"ALTER TABLE {table.name} ADD CONSTRAINT {constraint.name}"
                    f" CHECK ({constraint.sqltext})"
                )
        for column in (table.c.volume, *new):
            conn.execute(sa.schema.SetColumnComment(column))
        return
    old = f"{table.name}_before_upgrade"
    kept = [c.name for c in table.columns if c.name not in ("quote_volume", "bar_kind")]
    names = ", ".join(f'"{name}"' for name in kept)
    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" RENAME TO "{old}"')
    table.create(conn)
    conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM "{old}"')
    conn.exec_driver_sql(f'DROP TABLE "{old}"')


def _mentions_new(constraint: sa.CheckConstraint) -> bool:
    text = str(constraint.sqltext)
    return "quote_volume" in text or "bar_kind" in text


def _keep_meanings(conn: sa.Connection, table: str, provider_column: str) -> None:
    conn.execute(
        sa.text(
            f"UPDATE {table} SET quote_volume = volume, volume = NULL"
            f" WHERE {provider_column} IN :quote"
        ).bindparams(sa.bindparam("quote", expanding=True)),
        {"quote": list(_QUOTE_VOLUME_PROVIDERS)},
    )
    conn.execute(
        sa.text(
            f"UPDATE {table} SET volume = NULL, bar_kind = 'sampled'"
            f" WHERE {provider_column} IN :sampled"
        ).bindparams(sa.bindparam("sampled", expanding=True)),
        {"sampled": list(_SAMPLED_PROVIDERS)},
    )
