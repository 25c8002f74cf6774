"""The database under the link store: engines, transactions, locks, the clock, user keys,
audit rows, migrations and health. The only module that knows SQLite from PostgreSQL.

SQLAlchemy 2 over a SQLite file (the default, embedded) or PostgreSQL (several proxy
instances and workers sharing one database). Writers serialise per user and per iD:
PostgreSQL advisory locks, SQLite ``BEGIN IMMEDIATE`` (which serialises every writer).
Single-statement reads go through an engine without an explicit transaction (PostgreSQL
AUTOCOMMIT, SQLite without BEGIN): one round trip each.

Every call has a time budget (:class:`Budget`): the proxy's is a login's (seconds), the CLI's
and the worker's a minute. A database that does not answer in time fails the call like one
that refuses connections (StoreError), so a hung server never hangs a login.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from ..audit_log import emit_after_commit, scrub
from ..errors import ConfigError, StoreError
from ..orcid_id import OrcidId
from .schema import AuditRow, as_utc, utcnow

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest migration in migrations/versions (a test keeps this in step with alembic's head).
HEAD_REVISION = "0007"
VERSION_TABLE = "orcid_alembic_version"  # not "alembic_version": the database may be shared
# Migrations wait this long for another process's migration (SQLite busy timeout); on
# PostgreSQL they run without statement/lock timeout, serialised by an advisory lock.
MIGRATION_BUSY_TIMEOUT_S = 300
# TCP keepalives and TCP_USER_TIMEOUT on PostgreSQL connections (libpq parameters,
# https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS): a pooled
# connection to a host that vanished is noticed after about 10 + 3 * 5 s idle, or 10 s of
# unacknowledged data, instead of the kernel's default of hours.
# A pooled PostgreSQL connection idle longer than this is pinged before use; a fresher one
# only when its socket has something to read (see _needs_ping).
PING_AFTER_IDLE_S = 30.0
PG_KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3",
                 "tcp_user_timeout": "10000"}


@dataclass(frozen=True)
class Budget:
    """How long the store may take: ``connect`` seconds to open a PostgreSQL connection
    (libpq ``connect_timeout``; libpq waits at least 2 s, per address the host name has), and
    ``call`` seconds for one database call: the wait for a pooled connection, each statement
    and lock (PostgreSQL ``statement_timeout``, ``lock_timeout``), everything done on one
    checked-out connection (a client-side deadline that also holds when the server is frozen
    and cannot enforce its own timeouts), and SQLite's busy timeout."""

    connect: float = 2.0
    call: float = 60.0


# The CLI's, the worker's and the tests'; the proxy's comes from store.timeouts.login.
BACKGROUND_BUDGET = Budget()

# Execution option read by the SQLite "begin" hook: which BEGIN to emit.
_BEGIN_OPTION = "satosa_orcid_begin"

# Two-int advisory lock classes (PostgreSQL), taken in this order to avoid lock cycles.
_LOCK_USER, _LOCK_ORCID, _LOCK_MIGRATE = 0x4F524331, 0x4F524332, 0x4F524333


_AUDIT_INSERT = sa.insert(AuditRow.__table__)


# --- engine ----------------------------------------------------------------------------
def create_store_engine(database_url: str, budget: Budget = BACKGROUND_BUDGET) -> Engine:
    """An engine for ``sqlite:///path`` (WAL, foreign keys, busy timeout) or PostgreSQL, every
    call bounded by ``budget``."""
    try:
        url = sa.make_url(database_url)
    except ArgumentError:
        raise ConfigError("database_url", "not a database URL (sqlite:///path or postgresql+psycopg://...)") from None
    dialect = url.drivername.split("+", 1)[0]
    if dialect == "sqlite":
        return _sqlite_engine(url, budget)
    if dialect in ("postgresql", "postgres"):
        if "+" not in url.drivername:  # psycopg 3 is the driver we ship with
            url = url.set(drivername="postgresql+psycopg")
        try:
            return _postgresql_engine(url, budget)
        except ImportError as exc:  # the driver is an extra: satosa-orcid-plugin[postgres]
            missing = getattr(exc, "name", None) or url.drivername
            raise ConfigError("store.database_url", f"the PostgreSQL driver {missing!r} is not installed "
                              "(pip install 'satosa-orcid-plugin[postgres]' installs psycopg)") from None
    raise ConfigError("database_url", f"unsupported database {dialect!r} (use sqlite or postgresql)")


def _postgresql_engine(url: sa.URL, budget: Budget) -> Engine:
    """PostgreSQL with every wait bounded. Parameters given in the URL's query win."""
    ms = max(1, int(budget.call * 1000))
    params = {"connect_timeout": str(max(2, math.ceil(budget.connect))), **PG_KEEPALIVES}
    connect_args: dict[str, Any] = {k: v for k, v in params.items() if k not in url.query}
    # Server-side limits (https://www.postgresql.org/docs/current/runtime-config-client.html);
    # a later -c in the URL's own ``options`` overrides ours.
    own_options = " ".join(f"-c {name}={ms}" for name in ("statement_timeout", "lock_timeout"))
    url_options = url.query.get("options")
    connect_args["options"] = own_options + (f" {url_options}" if isinstance(url_options, str) else "")
    # No pool_pre_ping: _bound_checkouts pings under the deadline instead, and only a connection
    # that may be dead (see _needs_ping).
    engine = sa.create_engine(url, hide_parameters=True, pool_timeout=budget.call, connect_args=connect_args)
    _DEADLINES[engine] = _Deadlines(budget.call)
    _bound_checkouts(engine, _DEADLINES[engine])
    return engine


class _Deadlines:
    """A client-side deadline per checked-out PostgreSQL connection. A server that is frozen
    (or a host that stopped answering while the kernel still acknowledges) cannot enforce
    ``statement_timeout``, and libpq has no read timeout: when the deadline passes, the
    connection's socket is shut down, the call in progress fails at once, and the pool drops
    that connection.

    One watchdog thread per engine (per process) keeps every deadline: arming and disarming a
    checkout is a dictionary update under a lock, never a thread of its own (checkouts happen
    on every login's fast path). Every deadline is "now + seconds", so a new one never comes
    before those already kept: the watchdog is woken only when it had nothing to wait for."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, Any]] = {}  # id(connection) -> (monotonic deadline, connection)
        self._watchdog: threading.Thread | None = None
        self._pid = 0

    def arm(self, dbapi_connection: Any) -> None:
        with self._cond:
            idle = not self._due
            self._due[id(dbapi_connection)] = (time.monotonic() + self.seconds, dbapi_connection)
            if self._watchdog is None or self._pid != os.getpid() or not self._watchdog.is_alive():
                self._pid = os.getpid()  # a watchdog does not survive a fork (gunicorn workers)
                self._watchdog = threading.Thread(target=self._watch, name="satosa-orcid-db-deadlines", daemon=True)
                self._watchdog.start()
            elif idle:
                self._cond.notify()

    def disarm(self, dbapi_connection: Any) -> bool:
        """Stop the deadline; False when it had already expired."""
        with self._cond:
            return self._due.pop(id(dbapi_connection), None) is not None

    def _watch(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                expired = [key for key, (deadline, _) in self._due.items() if deadline <= now]
                if not expired:
                    soonest = min((deadline for deadline, _ in self._due.values()), default=None)
                    self._cond.wait(None if soonest is None else soonest - now)
                    continue
                # under the lock, as a checkin's disarm or a re-checkout's arm is: the connection
                # cannot change hands between its deadline passing and its socket closing
                for key in expired:
                    self._abort(self._due.pop(key)[1])

    def _abort(self, dbapi_connection: Any) -> None:
        if dbapi_connection.closed:
            return
        log.warning("the database did not answer within %g s: connection aborted", self.seconds)
        try:
            sock = socket.socket(fileno=os.dup(dbapi_connection.fileno()))
        except Exception:  # noqa: BLE001 - closed meanwhile
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the blocked read returns; libpq reports the loss
        except OSError:
            pass
        finally:
            sock.close()


_DEADLINES: "weakref.WeakKeyDictionary[Engine, _Deadlines]" = weakref.WeakKeyDictionary()


def _bound_checkouts(engine: Engine, deadlines: _Deadlines) -> None:
    """Arm a deadline at checkout and stop it at checkin; ping a reused connection that may be
    dead under it (what ``pool_pre_ping`` does, but bounded, since a ping to a frozen server
    never returns, and only when :func:`_needs_ping`)."""

    @event.listens_for(engine, "connect")
    def _on_connect(_dbapi_connection: Any, record: Any) -> None:
        record.info["satosa_orcid_fresh"] = True

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        deadlines.arm(dbapi_connection)
        if record.info.pop("satosa_orcid_fresh", False):
            return  # just connected (within connect_timeout): no ping needed
        if not _needs_ping(dbapi_connection, record.info.get("satosa_orcid_idle_since")):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)  # what pool_pre_ping sends
            dbapi_connection.rollback()  # no-op unless the driver opened a transaction for it
        except Exception as exc:  # noqa: BLE001 - any failure of the ping
            if not deadlines.disarm(dbapi_connection):
                # Timed out: fail this call now. Reconnecting would only wait again.
                raise sa.exc.TimeoutError(f"the database did not answer within {deadlines.seconds:g} s") from exc
            # A stale connection (server restarted, idle connection dropped): the pool
            # replaces it with a fresh one and checks out again.
            raise sa.exc.DisconnectionError(str(exc)) from exc

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        if dbapi_connection is not None:
            deadlines.disarm(dbapi_connection)
            record.info["satosa_orcid_idle_since"] = time.monotonic()

    for name in ("invalidate", "soft_invalidate", "close", "close_detached", "detach"):
        event.listen(engine, name, lambda dbapi_connection, *_rest: dbapi_connection is not None
                     and deadlines.disarm(dbapi_connection))


def _needs_ping(dbapi_connection: Any, idle_since: float | None) -> bool:
    """Whether a pooled connection must be pinged (a round trip) before it is used.

    A server that ends a connection (restart, failover, ``pg_terminate_backend``, an idle
    timeout) sends its FATAL error and closes the socket: an idle connection whose socket has
    anything to read is pinged (and replaced when the ping fails). One with nothing to read is
    used as it is, unless it sat in the pool longer than ``PING_AFTER_IDLE_S`` (a peer that
    vanished without a word, before the keepalives notice). The readability check is a
    ``poll()`` of the socket, no round trip: the login's lookup stays one."""
    if idle_since is None or time.monotonic() - idle_since > PING_AFTER_IDLE_S:
        return True
    try:
        fd = dbapi_connection.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except Exception:  # noqa: BLE001 - closed, or no socket to ask: let the ping decide
        return True


def sqlite_directory(database: str, *, create: bool) -> Path:
    """The directory of a SQLite file; ConfigError (one line) when it cannot be created or
    written. Without ``create`` nothing is created (``check-config``)."""
    directory = Path(database).expanduser().absolute().parent
    key = "store.database_url"
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(key, f"the SQLite file's directory {directory} cannot be created: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "directory" if existing == directory else "parent directory"
        raise ConfigError(key, f"the SQLite file's {what} {existing} is not writable by this user")
    if create and existing != directory:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(key, f"the SQLite file's directory {directory} cannot be created: "
                                   f"{exc.strerror or exc}") from None
    return directory


def _sqlite_engine(url: sa.URL, budget: Budget) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {
        "hide_parameters": True,
        "connect_args": {"check_same_thread": False, "timeout": budget.call},
    }
    if in_memory:
        kwargs["poolclass"] = StaticPool  # one shared connection, or each one sees an empty database
    else:
        sqlite_directory(url.database, create=True)
    engine = sa.create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module (it skips it for SELECT and DDL) and emit
        # our own in _on_begin; see SQLAlchemy's "sqlite_transactions" documentation.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(budget.call * 1000)}")  # a writer waits this long
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # Writers take the write lock up front (IMMEDIATE): a deferred transaction that reads
        # and then writes fails with SQLITE_BUSY, which the busy timeout cannot wait out.
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        if mode != "NONE":
            conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def store_error(exc: SQLAlchemyError) -> StoreError:
    """A StoreError naming the driver's error class and the first line of its message."""
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [""])[0][:200]
    return StoreError(f"database error ({type(orig).__name__}): {first_line}")


# --- the database ----------------------------------------------------------------------
class Database:
    """Transactions, reads, locks, the clock, user keys and audit rows over one engine.

    User keys are passed raw to the store's public methods; with ``user_key_secret`` the
    database keeps only ``hmac-sha256(secret, key)`` (see :meth:`stored_user_key`).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        user_key_secret: bytes | None = None,
        instance: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self._secret = user_key_secret
        self._instance = instance
        self._clock = clock
        self.postgresql = engine.dialect.name == "postgresql"
        if engine.dialect.name == "sqlite":
            self._write_engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            self._read_engine = engine.execution_options(**{_BEGIN_OPTION: "NONE"})
        else:
            self._write_engine = engine
            self._read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def from_url(cls, database_url: str, *, budget: Budget = BACKGROUND_BUDGET, **kwargs: Any) -> "Database":
        return cls(create_store_engine(database_url, budget), **kwargs)

    def __repr__(self) -> str:
        return f"Database({self.engine.url.render_as_string(hide_password=True)!r})"

    # --- identity, keys and time ------------------------------------------------------
    @property
    def instance(self) -> str:
        # Computed late: gunicorn forks workers after the store is built.
        return self._instance or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def hashes_user_keys(self) -> bool:
        """True when user keys are stored as HMACs (so stored keys cannot be used as input)."""
        return self._secret is not None

    def stored_user_key(self, user_key: str) -> str:
        """The key as it appears in the database (and in ``Link.user_key``)."""
        if not isinstance(user_key, str) or not user_key:
            raise ValueError("user_key must be a non-empty string")
        if self._secret is None:
            return user_key
        return hmac.new(self._secret, user_key.encode("utf-8"), hashlib.sha256).hexdigest()

    def now(self) -> datetime:
        """The store's clock, in UTC."""
        return as_utc(self._clock(), "clock()")

    def epoch_seconds(self, session: Session) -> float:
        """Seconds since the epoch by the database's clock on PostgreSQL (one clock for every
        host), by this host's clock on SQLite (one host anyway)."""
        if self.postgresql:
            return float(session.scalar(sa.select(sa.extract("epoch", sa.func.clock_timestamp()))))
        return time.time()

    # --- transactions and reads -------------------------------------------------------
    @contextmanager
    def transaction(self, *, raw_integrity: bool = False) -> Iterator[Session]:
        """One write transaction (SQLite: BEGIN IMMEDIATE); database failures become
        StoreError, except IntegrityError with ``raw_integrity`` (for callers that retry)."""
        with self._session(self._write_engine, raw_integrity) as session:
            yield session

    @contextmanager
    def read_transaction(self) -> Iterator[Session]:
        """One read transaction, for reads of several statements that must agree."""
        with self._session(self.engine, False) as session:
            yield session

    @contextmanager
    def _session(self, engine: Engine, raw_integrity: bool) -> Iterator[Session]:
        try:
            with Session(engine, expire_on_commit=False) as session:
                with session.begin():
                    yield session
        except IntegrityError as exc:
            if raw_integrity:
                raise
            raise store_error(exc) from exc
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def scalar(self, stmt: sa.Select[Any]) -> Any:
        """A single-statement read outside any explicit transaction (one round trip)."""
        try:
            with Session(self._read_engine) as session:
                return session.scalar(stmt)
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def scalars(self, stmt: sa.Select[Any]) -> list[Any]:
        """Like :meth:`scalar`, every row's first column."""
        try:
            with Session(self._read_engine) as session:
                return list(session.scalars(stmt))
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def rows(self, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]:
        """Like :meth:`scalar`, every row as a tuple."""
        try:
            with Session(self._read_engine) as session:
                return [tuple(row) for row in session.execute(stmt)]
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    # The login path's statements run on a Core connection (no ORM Session, unit of work or
    # identity map): prepared once at import with bound parameters, so SQLAlchemy's compiled
    # cache serves them and each call is one driver round trip.
    def first(self, stmt: sa.Executable, params: dict[str, Any] | None = None) -> Any:
        """The first row of a single-statement read (a Core ``Row``: columns by attribute),
        outside any explicit transaction; None when there is none."""
        try:
            with self._read_engine.connect() as connection:
                return connection.execute(stmt, params).first()
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def write_one(self, stmt: sa.Executable, params: dict[str, Any] | None = None) -> Any:
        """One statement committed on its own (SQLite: an implicit transaction, PostgreSQL:
        autocommit), without BEGIN and COMMIT round trips: for a single-row write that needs no
        lock (a conflict is the unique index's to decide). Returns the first row the statement
        returns (``RETURNING``), else None."""
        try:
            with self._read_engine.connect() as connection:
                result = connection.execute(stmt, params)
                row = result.first() if result.returns_rows else None
                connection.commit()  # nothing left to send: the statement committed itself
                return row
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def upsert(self, table: type) -> Any:
        """An INSERT of ``table`` that supports ``on_conflict_do_update`` on this dialect."""
        if self.postgresql:
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    def lock(self, session: Session, user_key: str | None = None, orcid_key: str | None = None) -> None:
        """Serialise writers per (stored) user key and per iD (PostgreSQL advisory locks until
        the transaction ends); SQLite's BEGIN IMMEDIATE already serialises all writers."""
        if not self.postgresql:
            return
        # One statement, one round trip. Every writer that takes both locks takes them through
        # this same statement, so all take them in the same order (no lock cycle).
        locks = [sa.func.pg_advisory_xact_lock(cls_id, sa.func.hashtext(value))
                 for cls_id, value in ((_LOCK_USER, user_key), (_LOCK_ORCID, orcid_key)) if value is not None]
        if locks:
            session.connection().execute(sa.select(*locks))

    # --- audit ------------------------------------------------------------------------
    def audit(
        self,
        session: Session,
        event: str,
        *,
        user_key: str | None,
        orcid: OrcidId | str | None = None,
        session_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Add an audit row in ``session``'s transaction (``user_key`` as stored), and its
        JSON log line once that transaction commits. Secrets in ``detail`` are redacted."""
        clean = scrub(detail or {})  # the same redaction as the audit log line (audit_log.SECRET_KEYS)
        at, instance = self.now(), self.instance[:255]
        # A Core INSERT on the session's connection, now (prepared once; no ORM unit of work)
        session.connection().execute(_AUDIT_INSERT, {
            "at": at, "event": event, "user_key": user_key, "orcid": str(orcid) if orcid is not None else None,
            "instance": instance, "session_id": session_id,
            "detail": json.dumps(clean, default=str, sort_keys=True) if clean else None,
        })
        emit_after_commit(session, event, at=at, user_key=user_key, orcid=orcid, session_id=session_id,
                          instance=instance, detail=clean)

    def append_audit(
        self,
        event: str,
        *,
        user_key: str | None = None,
        orcid: OrcidId | str | None = None,
        session_id: str | None = None,
        **detail: Any,
    ) -> None:
        """Append an audit event in its own transaction (``user_key`` raw)."""
        key = self.stored_user_key(user_key) if user_key is not None else None
        with self.transaction() as session:
            self.audit(session, event, user_key=key, orcid=orcid, session_id=session_id, detail=detail)

    def audit_events(self, user_key: str | None = None, limit: int = 100, *,
                     orcid: str | None = None) -> list[dict[str, Any]]:
        """Audit events, newest first, of one user and/or one iD (its 16 digits, hyphenated):
        dicts with id, at, event, user_key, orcid, instance, session_id and detail (a dict)."""
        stmt = sa.select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if user_key is not None:
            stmt = stmt.where(AuditRow.user_key == self.stored_user_key(user_key))
        if orcid is not None:
            stmt = stmt.where(AuditRow.orcid == orcid)
        return [
            {
                "id": row.id,
                "at": row.at,
                "event": row.event,
                "user_key": row.user_key,
                "orcid": row.orcid,
                "instance": row.instance,
                "session_id": row.session_id,
                "detail": json.loads(row.detail) if row.detail else {},
            }
            for row in self.scalars(stmt)
        ]

    # --- schema and life cycle --------------------------------------------------------
    def upgrade(self, revision: str = "head", *, existing_issuer: str | None = None) -> None:
        """Apply the alembic migrations. Safe when several processes start at once: the
        migration runs in one transaction behind a lock (SQLite BEGIN IMMEDIATE, PostgreSQL
        advisory lock); whoever comes second finds the schema current.

        ``existing_issuer``: the issuer given to links and decisions written before user keys
        were issuer-bound (revision 0006; "" for issuer-free keys). Without it, that revision
        stops with a ConfigError naming ``default_issuer`` when there are such rows."""
        if revision == "head" and self.schema_revision() == HEAD_REVISION:
            return  # current: every proxy start skips importing alembic (about 12 MB per worker)
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        try:
            with self._write_engine.connect() as connection:
                # A migration may wait for another process's and may take long: it runs
                # outside the call budget (the caller is an operator or a starting proxy).
                raw = connection.connection.dbapi_connection
                if not self.postgresql:
                    busy_ms = raw.execute("PRAGMA busy_timeout").fetchone()[0]
                    raw.execute(f"PRAGMA busy_timeout={MIGRATION_BUSY_TIMEOUT_S * 1000}")
                try:
                    with connection.begin():
                        if self.postgresql:
                            deadlines = _DEADLINES.get(self.engine)
                            if deadlines is not None:
                                deadlines.disarm(raw)
                            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
                            connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
                            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_MIGRATE, 0)))
                        config.attributes["connection"] = connection
                        config.attributes["version_table"] = VERSION_TABLE
                        config.attributes["existing_issuer"] = existing_issuer
                        command.upgrade(config, revision)
                finally:
                    if not self.postgresql:
                        raw.execute(f"PRAGMA busy_timeout={busy_ms}")
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def schema_revision(self) -> str | None:
        """The applied migration, or None for an empty database."""
        try:
            with self._read_engine.connect() as connection:
                if not sa.inspect(connection).has_table(VERSION_TABLE):
                    return None
                return connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        except SQLAlchemyError as exc:
            raise store_error(exc) from exc

    def health(self) -> bool:
        """True when the database answers."""
        try:
            with self._read_engine.connect() as connection:
                connection.execute(sa.select(1))
            return True
        except SQLAlchemyError:
            return False

    def dispose(self) -> None:
        self.engine.dispose()
