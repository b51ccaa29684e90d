"""Idempotent writes and reads of OHLCV partitions.

A write names its *scope* (provider, interval, symbols, ``[start, end)``) and replaces exactly
the rows inside it, in one transaction: re-running a partition gives the same table, and a
failed write leaves the table as it was.

PostgreSQL, two paths chosen per write (rows travel as a numpy-built binary COPY stream, see
:mod:`.pgcopy`; measured by bench/warehouse_write.py):

- the scope holds no rows yet (a new partition, a backfill): the frame is copied straight into
  ``ohlcv``. A staging table + ``INSERT ... SELECT`` cost more than the COPY itself on 1M rows.
- the scope holds rows (a re-run): the frame is copied into a temporary staging table, then one
  statement deletes the stored rows that changed or vanished and one inserts the staged rows not
  stored yet. Re-running an unchanged partition writes nothing, where delete-all + insert-all
  rewrote every row and its index entry.

Either way a duplicate bar violates the primary key and the whole transaction rolls back.

SQLite: the scope is deleted and the rows inserted with one ``executemany``.

The consolidated series (``ohlcv_consolidated``, scoped by :class:`ConsolidatedScope`) holds
tens of thousands of rows at most per write, so both databases simply delete the scope and insert
the rows with one ``executemany``: on PostgreSQL a Core ``insert()`` with a list of parameter sets,
which psycopg 3 sends pipelined (measured: 43k rows in about 1.5 s on a local server).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
import tenacity

from fks_pipelines.market import consolidate
from fks_pipelines.market.frame import COLUMNS, conform
from fks_pipelines.warehouse import migrate, pgcopy, quality
from fks_pipelines.warehouse.reads import (
    SQLITE_TS_FORMAT,
    PostgresReader,
    ReadError,
    Select,
    read_sqlite,
)
from fks_pipelines.warehouse.tables import metadata, ohlcv, ohlcv_consolidated

_SQLITE_BUSY_TIMEOUT_MS = 60_000
_WRITE_OPTION = "fks_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


class WarehouseError(RuntimeError):
    """A warehouse write or read failed; the table is unchanged."""


def _check_window(keys: tuple[str, ...], what: str, start: pd.Timestamp, end: pd.Timestamp) -> None:
    if not keys:
        raise ValueError(f"a scope needs at least one {what}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("scope bounds must be timezone-aware")
    if start >= end:
        raise ValueError(f"empty scope window [{start}, {end})")


def _outside(
    frame: pd.DataFrame,
    equal: dict[str, str],
    column: str,
    keys: tuple[str, ...],
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> pd.DataFrame:
    """Rows of ``frame`` not matching ``equal``, ``column`` in ``keys`` and ``[start, end)``."""
    inside = frame[column].isin(keys) & (frame["ts"] >= start) & (frame["ts"] < end)
    for name, value in equal.items():
        inside &= frame[name] == value
    return frame.loc[~inside.astype(bool)]


@dataclass(frozen=True)
class Scope:
    """The rows a write replaces: one provider and interval, some symbols, ``[start, end)``."""

    provider: str
    interval: str
    symbols: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        _check_window(self.symbols, "symbol", self.start, self.end)

    def outside(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` that this scope does not cover."""
        equal = {"provider": self.provider, "interval": self.interval}
        return _outside(frame, equal, "symbol", self.symbols, self.start, self.end)


@dataclass(frozen=True)
class ConsolidatedScope:
    """The consolidated rows a write replaces: one interval, some instruments, ``[start, end)``."""

    interval: str
    instruments: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        _check_window(self.instruments, "instrument", self.start, self.end)

    def outside(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Rows of ``frame`` that this scope does not cover."""
        equal = {"interval": self.interval}
        return _outside(frame, equal, "instrument", self.instruments, self.start, self.end)


class Warehouse:
    """The OHLCV store behind one SQLAlchemy engine; bars are read through :mod:`.reads`.

    ``statement_timeout_ms`` (PostgreSQL): every statement of this warehouse's connections,
    reads and writes, is cancelled after that long (the HTTP service's reads).
    """

    def __init__(self, engine: sa.Engine, statement_timeout_ms: int | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        if self.dialect not in ("postgresql", "sqlite"):
            raise WarehouseError(f"unsupported warehouse dialect {self.dialect!r}")
        if self.dialect == "sqlite":
            _configure_sqlite(engine)
        self._postgres: PostgresReader | None = None
        if self.dialect == "postgresql":
            reader = self._postgres = PostgresReader(engine.url)
            if statement_timeout_ms is not None:
                # The same SET on every new connection, the engine's and the reader's.
                on_connect = _session_settings(
                    {"statement_timeout": str(int(statement_timeout_ms))}
                )
                sa.event.listen(engine, "connect", on_connect)
                sa.event.listen(reader.pool, "connect", on_connect)
            # The reader's pool lives as long as the engine's: disposing the engine closes both.
            sa.event.listen(engine, "engine_disposed", lambda _engine: reader.dispose())
        self._writer = engine.execution_options(**{_WRITE_OPTION: True})

    @staticmethod
    @cache
    def from_url(url: str) -> Warehouse:
        """The warehouse at ``url`` (one per URL and process), its schema created if missing."""
        warehouse = Warehouse(_engine(url))
        warehouse.ensure_schema()
        return warehouse

    def ensure_schema(self) -> None:
        """Create missing tables and upgrade old ones (see :mod:`.migrate`); safe to run twice,
        and from concurrent processes."""
        with self._writer.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('fks_schema'))"))
            metadata.create_all(conn, checkfirst=True)
            migrate.upgrade(conn)

    def write_ohlcv(self, frame: pd.DataFrame, scope: Scope) -> int:
        """Replace the rows in ``scope`` with ``frame``; returns the number of rows written.

        Raises:
            ValueError: ``frame`` has rows outside ``scope`` (they would not be replaced on a
                re-run, so the write would not be idempotent).
            WarehouseError: The database refused the write (e.g. duplicate bars); nothing changed.
        """
        frame = conform(frame)
        stray = scope.outside(frame)
        if not stray.empty:
            raise ValueError(
                f"{len(stray)} rows fall outside the write scope, e.g. "
                f"{stray.iloc[0][['provider', 'symbol', 'interval', 'ts']].to_dict()}"
            )
        with self.transaction(
            f"writing {len(frame)} {scope.provider}/{scope.interval} rows"
        ) as conn:
            if self.dialect == "postgresql":
                _write_postgres(conn, frame, scope)
            else:
                _write_sqlite(conn, frame, scope)
        return len(frame)

    def write_consolidated(self, frame: pd.DataFrame, scope: ConsolidatedScope) -> int:
        """Replace the consolidated rows in ``scope`` with ``frame``; returns the rows written.

        Raises:
            ValueError: ``frame`` lacks consolidated columns or has rows outside ``scope``.
            WarehouseError: The database refused the write (e.g. a bar twice); nothing changed.
        """
        frame = consolidate.conform_consolidated(frame)
        stray = scope.outside(frame)
        if not stray.empty:
            raise ValueError(
                f"{len(stray)} rows fall outside the write scope, e.g. "
                f"{stray.iloc[0][['instrument', 'interval', 'ts']].to_dict()}"
            )
        with self.transaction(f"writing {len(frame)} consolidated {scope.interval} rows") as conn:
            conn.execute(
                sa.delete(ohlcv_consolidated).where(
                    *_consolidated_filter(
                        scope.interval, scope.instruments, scope.start, scope.end, self.dialect
                    )
                )
            )
            if not frame.empty:
                _insert_consolidated(conn, frame, self.dialect)
        return len(frame)

    def write_quality(self, frame: pd.DataFrame) -> int:
        """Insert or replace quality rows (see :mod:`.quality`); returns the rows written.

        Each row replaces the stored row of its provider, interval, symbol and day; rows without
        ``updated_at`` are stamped with the time of the write. All rows or none are written.

        Raises:
            ValueError: ``frame`` lacks quality columns, repeats a key or has unknown values.
            WarehouseError: The database refused the write (e.g. a score above 100); nothing
                changed.
        """
        frame = quality.conform_quality(frame)
        quality.validate_quality(frame)
        now = pd.Timestamp.now(tz="UTC")
        with self.transaction(f"writing {len(frame)} quality rows") as conn:
            return quality.upsert_quality(conn, frame, now)

    @contextmanager
    def transaction(self, what: str) -> Iterator[sa.Connection]:
        """One write transaction; a database error becomes :class:`WarehouseError`."""
        try:
            with self._writer.begin() as conn:
                yield conn
        except (sa.exc.DBAPIError, self.engine.dialect.loaded_dbapi.Error) as exc:
            cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
            raise WarehouseError(f"{what} failed, nothing was changed: {cause}") from exc

    def read_ohlcv(
        self,
        provider: str,
        interval: str,
        symbols: Sequence[str],
        start: pd.Timestamp,
        end: pd.Timestamp,
    ) -> pd.DataFrame:
        """Stored bars of ``symbols`` opening in ``[start, end)``, canonical form, sorted by
        symbol and ``ts``.

        Raises:
            WarehouseError: The database failed the read.
        """
        select = Select(
            "ohlcv",
            COLUMNS,
            {"provider": provider, "interval": interval},
            "symbol",
            list(symbols),
            start,
            end,
        )
        return conform(self._read(select, f"{provider}/{interval}"))

    def read_consolidated(
        self,
        interval: str,
        instruments: Sequence[str],
        start: pd.Timestamp,
        end: pd.Timestamp,
    ) -> pd.DataFrame:
        """Stored consolidated bars of ``instruments`` opening in ``[start, end)``, sorted by
        instrument and ``ts``, in the consolidated dtypes.

        Raises:
            WarehouseError: The database failed the read.
        """
        select = Select(
            "ohlcv_consolidated",
            consolidate.COLUMNS,
            {"interval": interval},
            "instrument",
            list(instruments),
            start,
            end,
        )
        frame = self._read(select, f"consolidated/{interval}")
        return consolidate.conform_consolidated(frame)

    def _read(self, select: Select, what: str) -> pd.DataFrame:
        if not select.keys:
            return pd.DataFrame({name: [] for name in select.columns})
        if self._postgres is None:
            try:
                return read_sqlite(self.engine, select)
            except sqlite3.Error as exc:
                raise WarehouseError(f"reading {what} bars failed: {exc}") from exc
        try:
            return self._postgres.read(select)
        except ReadError as exc:
            raise WarehouseError(f"reading {what} bars failed: {exc}") from exc

    def read_quality(
        self, day_start: date, day_end: date, providers: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Stored quality rows of the UTC days ``[day_start, day_end)``, of ``providers`` only
        if given, in :data:`.quality.QUALITY_DTYPES`, sorted by provider, interval, symbol, day."""
        with self.engine.connect() as conn:
            return quality.select_quality(conn, day_start, day_end, providers)

    def count_ohlcv(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(ohlcv)).scalar_one()


@cache
def _engine(url: str) -> sa.Engine:
    """One engine (and connection pool) per URL and process."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return sa.create_engine(url)


def _session_settings(settings: dict[str, str]) -> Callable[[Any, object], None]:
    """A ``connect`` listener giving every new connection ``settings`` (``SET`` of the session,
    so no option of the URL, such as a ``search_path``, is replaced); psycopg's and ADBC's
    DB-API connections alike."""

    def on_connect(dbapi_connection: Any, _record: object) -> None:
        with dbapi_connection.cursor() as cursor:
            for name, value in settings.items():
                cursor.execute(f"SET {name} = {value}")
        dbapi_connection.commit()

    return on_connect


def _configure_sqlite(engine: sa.Engine) -> None:
    """Real transactions on SQLite, safe for the several run processes of ``dagster dev``.

    pysqlite's own transaction handling sends no BEGIN before DDL, so ``create_all``'s check and
    create could interleave with another process's. SQLAlchemy's documented remedy: turn the
    driver's handling off and emit BEGIN ourselves; schema creation and writes use
    ``BEGIN IMMEDIATE`` to take the write lock up front (waiting up to the busy timeout) instead
    of failing when a read lock cannot be upgraded. WAL lets readers go on during a write.
    """
    if sa.event.contains(engine, "connect", _sqlite_connect):
        return
    sa.event.listen(engine, "connect", _sqlite_connect)
    sa.event.listen(engine, "begin", _sqlite_begin)


def _sqlite_connect(dbapi_connection: Any, _record: object) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
        if cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            _switch_to_wal(cursor)
    finally:
        cursor.close()


@tenacity.retry(
    retry=tenacity.retry_if_exception(
        lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
    ),
    wait=tenacity.wait_random_exponential(multiplier=0.05, max=1),
    stop=tenacity.stop_after_delay(_SQLITE_BUSY_TIMEOUT_MS / 1000),
    reraise=True,
)
def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """WAL is a property of the file, set once; the switch answers "locked" at once, without the
    busy handler, while another process of a fresh file's first moments is switching too."""
    cursor.execute("PRAGMA journal_mode=WAL")


def _sqlite_begin(conn: sa.Connection) -> None:
    immediate = conn.get_execution_options().get(_WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _bind_ts(ts: pd.Timestamp, dialect: str) -> object:
    if dialect == "sqlite":
        return ts.tz_convert("UTC").strftime(SQLITE_TS_FORMAT)
    return ts.to_pydatetime()


def _scope_filter(scope: Scope, dialect: str) -> list[sa.ColumnElement[bool]]:
    return [
        ohlcv.c.provider == scope.provider,
        ohlcv.c.interval == scope.interval,
        ohlcv.c.symbol.in_(scope.symbols),
        ohlcv.c.ts >= _bind_ts(scope.start, dialect),
        ohlcv.c.ts < _bind_ts(scope.end, dialect),
    ]


def _write_postgres(conn: sa.Connection, frame: pd.DataFrame, scope: Scope) -> None:
    stored = conn.execute(
        sa.select(sa.exists().where(*_scope_filter(scope, "postgresql")))
    ).scalar_one()
    if not stored:
        _copy(conn, frame, "ohlcv")
        return
    conn.execute(
        sa.text("CREATE TEMPORARY TABLE ohlcv_stage (LIKE ohlcv INCLUDING DEFAULTS) ON COMMIT DROP")
    )
    _copy(conn, frame, "ohlcv_stage")
    conn.execute(sa.text("ANALYZE ohlcv_stage"))
    # Both sides are whole scopes. Statistics of ohlcv lag behind fresh writes (measured: 1 row
    # expected in a scope of 1M), which made the planner pick a quadratic nested-loop anti join.
    conn.execute(sa.text("SET LOCAL enable_nestloop = off"))
    conn.execute(_DELETE_CHANGED, _scope_params(scope))
    conn.execute(_INSERT_NEW, _scope_params(scope))


def _copy(conn: sa.Connection, frame: pd.DataFrame, table: str) -> None:
    if frame.empty:
        return
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(pgcopy.copy_sql(table)) as copy:
        for chunk in pgcopy.chunks(frame):
            copy.write(chunk)


_SAME_BAR = (
    's.provider = o.provider AND s.symbol = o.symbol AND s."interval" = o."interval"'
    " AND s.ts = o.ts"
)
_IN_SCOPE = (
    'o.provider = :provider AND o."interval" = :interval'
    " AND o.symbol = ANY(:symbols) AND o.ts >= :start AND o.ts < :end"
)
_DELETE_CHANGED = sa.text(
    f"DELETE FROM ohlcv o WHERE {_IN_SCOPE}"
    f" AND NOT EXISTS (SELECT 1 FROM ohlcv_stage s WHERE {_SAME_BAR}"
    " AND s.open = o.open AND s.high = o.high AND s.low = o.low AND s.close = o.close"
    " AND s.volume IS NOT DISTINCT FROM o.volume"
    " AND s.quote_volume IS NOT DISTINCT FROM o.quote_volume"
    " AND s.vwap IS NOT DISTINCT FROM o.vwap AND s.trades IS NOT DISTINCT FROM o.trades"
    " AND s.bar_kind = o.bar_kind)"
)
# Rows still stored after the delete are identical to their staged twin: insert the others. Two
# staged copies of one bar both pass NOT EXISTS and the primary key refuses the second.
_INSERT_NEW = sa.text(
    f"INSERT INTO ohlcv ({pgcopy.COLUMNS_SQL}) SELECT {pgcopy.COLUMNS_SQL} FROM ohlcv_stage s"
    f" WHERE NOT EXISTS (SELECT 1 FROM ohlcv o WHERE {_IN_SCOPE} AND {_SAME_BAR})"
)


def _scope_params(scope: Scope) -> dict[str, object]:
    return {
        "provider": scope.provider,
        "interval": scope.interval,
        "symbols": list(scope.symbols),
        "start": scope.start.to_pydatetime(),
        "end": scope.end.to_pydatetime(),
    }


def _write_sqlite(conn: sa.Connection, frame: pd.DataFrame, scope: Scope) -> None:
    conn.execute(sa.delete(ohlcv).where(*_scope_filter(scope, "sqlite")))
    if frame.empty:
        return
    conn.exec_driver_sql(_SQLITE_INSERT_OHLCV, _sqlite_rows(frame, COLUMNS))


def _consolidated_filter(
    interval: str,
    instruments: Sequence[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    dialect: str,
) -> list[sa.ColumnElement[bool]]:
    table = ohlcv_consolidated
    return [
        table.c.interval == interval,
        table.c.instrument.in_(list(instruments)),
        table.c.ts >= _bind_ts(start, dialect),
        table.c.ts < _bind_ts(end, dialect),
    ]


def _sqlite_rows(frame: pd.DataFrame, names: Sequence[str]) -> list[tuple[object, ...]]:
    """Rows of ``frame``'s ``names`` as SQLite parameters (NULL for missing values), converted
    column by column (no per-row pandas)."""
    columns = _python_columns(frame, names)
    columns["ts"] = frame["ts"].dt.strftime(SQLITE_TS_FORMAT).tolist()
    return list(zip(*columns.values(), strict=True))


def _python_columns(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, list[object]]:
    """Columns as Python lists, missing values as ``None``."""
    return {name: _python_values(frame[name]) for name in names}


def _python_values(column: pd.Series) -> list[object]:
    if column.hasnans:
        return column.astype(object).where(column.notna(), None).tolist()
    return column.tolist()


def _insert_consolidated(conn: sa.Connection, frame: pd.DataFrame, dialect: str) -> None:
    """Insert a conformed consolidated frame."""
    if dialect == "sqlite":
        conn.exec_driver_sql(_SQLITE_INSERT_CONSOLIDATED, _sqlite_rows(frame, consolidate.COLUMNS))
        return
    columns = _python_columns(frame, consolidate.COLUMNS)
    # Replacing ts keeps its place in the dict, so the values stay in COLUMNS order.
    columns["ts"] = list(frame["ts"].array.to_pydatetime())
    # One executemany: SQLAlchemy hands the list to psycopg, which pipelines the inserts.
    rows = [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
    conn.execute(sa.insert(ohlcv_consolidated), rows)


def _sqlite_insert(table: str, names: Sequence[str]) -> str:
    return "INSERT INTO {} ({}) VALUES ({})".format(
        table, ", ".join(f'"{name}"' for name in names), ", ".join("?" for _ in names)
    )


_SQLITE_INSERT_OHLCV = _sqlite_insert("ohlcv", COLUMNS)
_SQLITE_INSERT_CONSOLIDATED = _sqlite_insert("ohlcv_consolidated", consolidate.COLUMNS)
