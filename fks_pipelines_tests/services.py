"""Real backing services for tests: PostgreSQL and Redis. Never mocks.

How a service is found, in order:

1. An external server named by an environment variable (``FKS_TEST_POSTGRES_URL``, e.g.
   ``postgresql://postgres@127.0.0.1:5432/test``; ``REDIS_URL``, e.g.
   ``redis://127.0.0.1:6379/15``), if it accepts connections.
2. A throwaway server started from local binaries, stopped at the end of the session:
   ``initdb``/``postgres``/``pg_ctl`` on ``PATH`` or under ``/usr/lib/postgresql/*/bin`` (as root
   they run as the ``postgres`` OS user through ``runuser``, since ``initdb`` refuses root), and
   ``redis-server`` on ``PATH`` (no persistence, loopback only).
3. Neither: the test is skipped, or failed when ``FKS_REQUIRE_SERVICES=1`` (CI sets it, so a
   missing service can never turn the suite silently green). See :func:`unavailable`.

Environment variables:

- ``FKS_TEST_POSTGRES_URL``: external PostgreSQL server to use.
- ``REDIS_URL``: external Redis server and database to use. The tests own that database: they
  flush it before each test that uses it, so never point it at a database holding real data.
- ``FKS_REQUIRE_SERVICES=1``: a missing service fails the test instead of skipping it.
- ``FKS_TEST_NO_LOCAL_SERVICES=1``: never start local servers from binaries (to check the
  skip/fail path, or where starting processes is unwanted).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import pytest
import redis
import sqlalchemy as sa

POSTGRES_URL_ENV = "FKS_TEST_POSTGRES_URL"
REDIS_URL_ENV = "REDIS_URL"
REQUIRE_ENV = "FKS_REQUIRE_SERVICES"
NO_LOCAL_ENV = "FKS_TEST_NO_LOCAL_SERVICES"

_POSTGRES_BINARIES = ("initdb", "postgres", "pg_ctl")
_START_TIMEOUT_S = 30.0


class ServiceUnavailable(Exception):
    """A backing service could not be found or started; the message says why."""


def unavailable(reason: str) -> NoReturn:
    """Skip the current test for lack of a service, or fail it when services are required."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1, so a missing service is a failure)", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_ENV}=1 to fail instead of skipping)")


def psycopg_url(url: str) -> sa.URL:
    """``url`` with the psycopg 3 driver named explicitly."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ServiceUnavailable(f"{POSTGRES_URL_ENV}={url!r} is not a PostgreSQL URL")
    return parsed.set(drivername="postgresql+psycopg")


def check_postgres(url: sa.URL) -> None:
    """Connect once to ``url``, raising :class:`ServiceUnavailable` with the driver's reason."""
    engine = sa.create_engine(url, poolclass=sa.NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        raise ServiceUnavailable(f"cannot connect: {str(exc.orig).strip()}") from exc
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin_dir() -> Path:
    """A directory holding initdb, postgres and pg_ctl."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    candidates += [Path(d) for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for directory in candidates:
        if all((directory / name).is_file() for name in _POSTGRES_BINARIES):
            return directory
    raise ServiceUnavailable("no initdb/postgres/pg_ctl on PATH or under /usr/lib/postgresql/*/bin")


@dataclass
class LocalPostgres:
    """A throwaway PostgreSQL server in a temporary directory, trust auth, user ``postgres``."""

    bin_dir: Path
    root: Path
    port: int
    run_as: str | None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> sa.URL:
        return sa.URL.create(
            "postgresql+psycopg",
            username="postgres",
            host="127.0.0.1",
            port=self.port,
            database="postgres",
        )

    def _command(self, binary: str, *args: str) -> list[str]:
        command = [str(self.bin_dir / binary), *args]
        return ["runuser", "-u", self.run_as, "--", *command] if self.run_as else command

    @classmethod
    def start(cls) -> LocalPostgres:
        """Initialise and start a server; raises :class:`ServiceUnavailable` if it cannot."""
        bin_dir = _postgres_bin_dir()
        run_as: str | None = None
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceUnavailable(
                    "running as root and there is no 'postgres' OS user to run initdb as"
                ) from None
            if shutil.which("runuser") is None:
                raise ServiceUnavailable("running as root and runuser is not available")
            run_as = "postgres"
        root = Path(tempfile.mkdtemp(prefix="fks-pg-"))
        if owner is not None:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        server = cls(bin_dir=bin_dir, root=root, port=_free_port(), run_as=run_as)
        try:
            server._initdb()
            server._launch()
        except BaseException:
            server.stop()
            raise
        return server

    def _initdb(self) -> None:
        result = subprocess.run(
            self._command(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8"
            ),
            capture_output=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceUnavailable(
                f"initdb failed ({result.returncode}): {result.stderr.decode(errors='replace')}"
            )

    def _launch(self) -> None:
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                self._command(
                    "postgres",
                    "-D",
                    str(self.data_dir),
                    "-k",
                    str(self.root),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait_until_ready(
            "local postgres", self.process, lambda: check_postgres(self.url), self.log_file
        )

    def stop(self) -> None:
        """Stop the server (immediate mode: its data is thrown away) and delete its files."""
        if self.process is not None and self.process.poll() is None:
            subprocess.run(
                self._command("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop"),
                capture_output=True,
                check=False,
            )
            try:
                self.process.wait(timeout=_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class PostgresServer:
    """A reachable PostgreSQL server; ``local`` is set when this session started it."""

    url: sa.URL
    local: LocalPostgres | None = None

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()


def find_postgres() -> PostgresServer:
    """The external server from ``FKS_TEST_POSTGRES_URL`` if reachable, else a local one.

    Raises:
        ServiceUnavailable: Neither works; the message gives every reason.
    """
    reasons: list[str] = []
    external = os.environ.get(POSTGRES_URL_ENV)
    if external:
        try:
            url = psycopg_url(external)
            check_postgres(url)
            return PostgresServer(url=url)
        except ServiceUnavailable as exc:
            reasons.append(f"{POSTGRES_URL_ENV}={external}: {exc}")
    else:
        reasons.append(f"{POSTGRES_URL_ENV} is not set")
    if os.environ.get(NO_LOCAL_ENV) == "1":
        reasons.append(f"local server disabled by {NO_LOCAL_ENV}=1")
    else:
        try:
            local = LocalPostgres.start()
            return PostgresServer(url=local.url, local=local)
        except ServiceUnavailable as exc:
            reasons.append(f"local server: {exc}")
    raise ServiceUnavailable("PostgreSQL unavailable: " + "; ".join(reasons))


def check_redis(url: str) -> None:
    """PING ``url`` once, raising :class:`ServiceUnavailable` with the client's reason."""
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    except ValueError as exc:
        raise ServiceUnavailable(f"not a Redis URL: {exc}") from exc
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ServiceUnavailable(f"cannot connect: {exc}") from exc
    finally:
        client.close()


@dataclass
class LocalRedis:
    """A throwaway ``redis-server`` on a loopback port, without persistence."""

    root: Path
    port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_file(self) -> Path:
        return self.root / "redis.log"

    @classmethod
    def start(cls, port: int | None = None) -> LocalRedis:
        """Start a server, on ``port`` if given.

        Raises:
            ServiceUnavailable: There is no ``redis-server`` or it did not start.
        """
        if shutil.which("redis-server") is None:
            raise ServiceUnavailable("no redis-server on PATH")
        server = cls(root=Path(tempfile.mkdtemp(prefix="fks-redis-")), port=port or _free_port())
        try:
            server.launch()
        except BaseException:
            server.stop()
            raise
        return server

    def launch(self) -> None:
        """Start the server process (again, after :meth:`stop_process`) on the same port."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--logfile",
                str(self.log_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until_ready(
            "local redis-server", self.process, lambda: check_redis(self.url), self.log_file
        )

    def stop_process(self) -> None:
        """Stop the server process, keeping its directory so that it can be launched again."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=_START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def stop(self) -> None:
        """Stop the server and delete its files."""
        self.stop_process()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer:
    """A reachable Redis server and database; ``local`` is set when this session started it."""

    url: str
    local: LocalRedis | None = None

    def stop(self) -> None:
        if self.local is not None:
            self.local.stop()


def find_redis() -> RedisServer:
    """The external server from ``REDIS_URL`` if reachable, else a local one.

    Raises:
        ServiceUnavailable: Neither works; the message gives every reason.
    """
    reasons: list[str] = []
    external = os.environ.get(REDIS_URL_ENV)
    if external:
        try:
            check_redis(external)
            return RedisServer(url=external)
        except ServiceUnavailable as exc:
            reasons.append(f"{REDIS_URL_ENV}={external}: {exc}")
    else:
        reasons.append(f"{REDIS_URL_ENV} is not set")
    if os.environ.get(NO_LOCAL_ENV) == "1":
        reasons.append(f"local server disabled by {NO_LOCAL_ENV}=1")
    else:
        try:
            local = LocalRedis.start()
            return RedisServer(url=local.url, local=local)
        except ServiceUnavailable as exc:
            reasons.append(f"local server: {exc}")
    raise ServiceUnavailable("Redis unavailable: " + "; ".join(reasons))


def _wait_until_ready(
    name: str, process: subprocess.Popen, check: Callable[[], None], log_file: Path
) -> None:
    """Poll ``check`` until it passes; raise with the server's log if it exits or times out."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise ServiceUnavailable(
                f"{name} exited with {process.returncode}: {_log_tail(log_file)}"
            )
        try:
            check()
            return
        except ServiceUnavailable as exc:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"{name} did not answer within {_START_TIMEOUT_S:.0f}s: {exc}; "
                    f"log: {_log_tail(log_file)}"
                ) from exc
        time.sleep(0.05)


def _log_tail(log_file: Path) -> str:
    try:
        return log_file.read_text(errors="replace")[-2000:]
    except OSError:
        return "(no log)"
