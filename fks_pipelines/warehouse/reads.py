"""Fast reads of stored bars: one query, straight into columns.

The bars leave the database column by column, never as Python row objects (the SQLAlchemy
path built one tuple and one ``datetime`` per row: 0.12x a raw binary ``COPY ... TO STDOUT`` of
the same rows on PostgreSQL, 0.22x a raw ``sqlite3`` fetch on SQLite).

- **PostgreSQL**: ADBC's libpq driver (``adbc-driver-postgresql``) reads the result in
  PostgreSQL's binary format into Arrow arrays, and pyarrow hands them to pandas. Measured in one
  run against ConnectorX and the alternatives (bench/warehouse_read.py, docs/benchmarks.md): it
  was the fastest that keeps NULLs and types without a hand-written decoder. An ADBC connection
  costs about 60 ms to open (it loads the server's type catalogue), so connections are pooled
  per warehouse (SQLAlchemy's ``QueuePool`` over the driver's DB-API connections).
- **SQLite**: the engine's own ``sqlite3`` connection, ``fetchall`` and one conversion per
  column (the stored ``ts`` text parsed with its known format). SQLite's ADBC driver was faster
  still but infers each column's type from its first rows, which a NULL-led column breaks.

Both answer the frames :func:`~fks_pipelines.market.frame.conform` and
:func:`~fks_pipelines.market.consolidate.conform_consolidated` define, in the same order as the
SQLAlchemy query they replace (tests compare both on the same rows).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

import adbc_driver_manager
import adbc_driver_postgresql.dbapi
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from psycopg import sql

SQLITE_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's storage format for DateTime on SQLite
_POOL_SIZE = 4
_POOL_OVERFLOW = 8
# Arrow types into the pandas dtypes the frames use, without a detour through float or object.
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.string(): pd.StringDtype()}


class ReadError(RuntimeError):
    """The database refused or failed a read."""


@dataclass(frozen=True)
class Select:
    """Stored bars of one table: ``columns`` where ``equal`` holds, ``key`` in ``keys`` and ``ts``
    in ``[start, end)``, ordered by ``key`` and ``ts``."""

    table: str
    columns: Sequence[str]
    equal: dict[str, str]
    key: str
    keys: Sequence[str]
    start: pd.Timestamp
    end: pd.Timestamp

    def sqlite(self) -> tuple[str, list[object]]:
        """The statement with ``?`` parameters, and the parameters (``ts`` as stored text)."""
        conditions = [f'"{name}" = ?' for name in self.equal]
        conditions.append(f'"{self.key}" IN ({", ".join("?" for _ in self.keys)})')
        conditions.append("ts >= ? AND ts < ?")
        params: list[object] = [*self.equal.values(), *self.keys]
        params += [ts.tz_convert("UTC").strftime(SQLITE_TS_FORMAT) for ts in (self.start, self.end)]
        columns = ", ".join(f'"{name}"' for name in self.columns)
        statement = (
            f"SELECT {columns} FROM {self.table} WHERE {' AND '.join(conditions)}"
            f' ORDER BY "{self.key}", ts'
        )
        return statement, params

    def postgres(self) -> str:
        """The statement with its values written in as literals, quoted by psycopg.

        ADBC's driver reads a statement without parameters as a binary ``COPY ... TO STDOUT``;
        with bound parameters it fetches an ordinary result, measured 1.8x slower.
        """
        values = [
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Literal(value))
            for name, value in self.equal.items()
        ]
        statement = sql.SQL(
            "SELECT {columns} FROM {table} WHERE {values} AND {key} IN ({keys})"
            " AND ts >= {start} AND ts < {end} ORDER BY {key}, ts"
        ).format(
            columns=sql.SQL(", ").join(map(sql.Identifier, self.columns)),
            table=sql.Identifier(self.table),
            values=sql.SQL(" AND ").join(values),
            key=sql.Identifier(self.key),
            keys=sql.SQL(", ").join(map(sql.Literal, self.keys)),
            start=sql.Literal(self.start.tz_convert("UTC").to_pydatetime()),
            end=sql.Literal(self.end.tz_convert("UTC").to_pydatetime()),
        )
        return statement.as_string(None)


class PostgresReader:
    """Reads through pooled ADBC connections to the database of ``url``.

    ``pool`` is SQLAlchemy's ``QueuePool``: its ``connect`` event configures each new connection
    as an engine's does (the warehouse's session settings, see :class:`.store.Warehouse`).
    """

    def __init__(self, url: sa.URL) -> None:
        uri = libpq_uri(url)
        # Autocommit: each read is one statement, and an idle pooled connection holds no
        # transaction open (nor a snapshot) between reads.
        self.pool = sa.pool.QueuePool(
            lambda: adbc_driver_postgresql.dbapi.connect(uri, autocommit=True),
            pool_size=_POOL_SIZE,
            max_overflow=_POOL_OVERFLOW,
            reset_on_return=None,
        )

    def read(self, select: Select) -> pd.DataFrame:
        statement = select.postgres()
        try:
            try:
                return self._read(statement)
            except adbc_driver_manager.Error as exc:
                if not _connection_lost(exc):
                    raise
                # Pooled connections the server has since closed (a restart): SQLAlchemy's
                # engines ping before use, a bare pool cannot; its idle connections are closed
                # and the read tried once more on a new one.
                self.pool.dispose()
                return self._read(statement)
        except adbc_driver_manager.Error as exc:
            raise ReadError(str(exc).splitlines()[0]) from exc

    def _read(self, statement: str) -> pd.DataFrame:
        conn = self.pool.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                table = cursor.fetch_arrow_table()
        except adbc_driver_manager.Error as exc:
            if _connection_lost(exc):
                conn.invalidate()
            raise
        finally:
            conn.close()
        return table.to_pandas(types_mapper=_PANDAS_TYPES.get)

    def dispose(self) -> None:
        self.pool.dispose()


def _connection_lost(exc: adbc_driver_manager.Error) -> bool:
    """Whether the driver lost the connection (status IO). A statement timeout is CANCELLED
    (SQLSTATE 57014) and leaves the connection usable: neither dropped nor read again."""
    return exc.status_code == adbc_driver_manager.AdbcStatusCode.IO


def libpq_uri(url: sa.URL) -> str:
    """``url`` as libpq reads it: host, database, user, password and the query's connection
    parameters (``sslmode``, ``options=-csearch_path=...``), without SQLAlchemy's driver name.

    The query is percent-encoded: SQLAlchemy writes a space as ``+``, which libpq keeps.
    """
    base = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    if not url.query:
        return base
    return f"{base}?{urllib.parse.urlencode(url.query, doseq=True, quote_via=urllib.parse.quote)}"


def read_sqlite(engine: sa.Engine, select: Select) -> pd.DataFrame:
    """``select`` through one of ``engine``'s own ``sqlite3`` connections."""
    statement, params = select.sqlite()
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        try:
            rows = cursor.execute(statement, params).fetchall()
        finally:
            cursor.close()
    finally:
        conn.close()
    # Object columns: pandas would infer float64 for an integer column holding NULLs, and round
    # integers beyond 2**53; the frames' own dtypes are applied by the caller.
    frame = pd.DataFrame(rows, columns=list(select.columns), dtype=object)
    frame["ts"] = pd.to_datetime(frame["ts"], format=SQLITE_TS_FORMAT, utc=True)
    return frame
