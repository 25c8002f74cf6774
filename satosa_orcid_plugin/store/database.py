"""The database under the link store: engines, transactions, locks, the clock, user keys,
audit rows, migrations and health. The only module that knows SQLite from PostgreSQL.

SQLAlchemy 2 over a SQLite file (the default, embedded) or PostgreSQL (several proxy
instances and workers sharing one database). Writers serialise per user and per iD:
PostgreSQL advisory locks, SQLite ``BEGIN IMMEDIATE`` (which serialises every writer).
Single-statement reads go through an engine without an explicit transaction (PostgreSQL
AUTOCOMMIT, SQLite without BEGIN): one round trip each.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
# The newest migration in migrations/versions (a test keeps this in step with alembic's head).
HEAD_REVISION = "0005"
VERSION_TABLE = "orcid_alembic_version"  # not "alembic_version": the database may be shared
SQLITE_BUSY_TIMEOUT_S = 30

# Execution option read by the SQLite "begin" hook: which BEGIN to emit.
_BEGIN_OPTION = "satosa_orcid_begin"

# Two-int advisory lock classes (PostgreSQL), taken in this order to avoid lock cycles.
_LOCK_USER, _LOCK_ORCID, _LOCK_MIGRATE = 0x4F524331, 0x4F524332, 0x4F524333


# --- engine ----------------------------------------------------------------------------
def create_store_engine(database_url: str) -> Engine:
    """An engine for ``sqlite:///path`` (WAL, foreign keys, busy timeout) or PostgreSQL."""
    try:
        url = sa.make_url(database_url)
    except ArgumentError:
        raise ConfigError("database_url", "not a database URL (sqlite:///path or postgresql+psycopg://...)") from None
    dialect = url.drivername.split("+", 1)[0]
    if dialect == "sqlite":
        return _sqlite_engine(url)
    if dialect in ("postgresql", "postgres"):
        if "+" not in url.drivername:  # psycopg 3 is the driver we ship with
            url = url.set(drivername="postgresql+psycopg")
        return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)
    raise ConfigError("database_url", f"unsupported database {dialect!r} (use sqlite or postgresql)")


def _sqlite_engine(url: sa.URL) -> Engine:
    in_memory = url.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {
        "hide_parameters": True,
        "connect_args": {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
    }
    if in_memory:
        kwargs["poolclass"] = StaticPool  # one shared connection, or each one sees an empty database
    else:
        Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
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
    def from_url(cls, database_url: str, **kwargs: Any) -> "Database":
        return cls(create_store_engine(database_url), **kwargs)

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
        for cls_id, value in ((_LOCK_USER, user_key), (_LOCK_ORCID, orcid_key)):
            if value is not None:
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(cls_id, sa.func.hashtext(value))))

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
        session.add(
            AuditRow(
                at=at,
                event=event,
                user_key=user_key,
                orcid=str(orcid) if orcid is not None else None,
                instance=instance,
                session_id=session_id,
                detail=json.dumps(clean, default=str, sort_keys=True) if clean else None,
            )
        )
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
    def upgrade(self, revision: str = "head") -> None:
        """Apply the alembic migrations. Safe when several processes start at once: the
        migration runs in one transaction behind a lock (SQLite BEGIN IMMEDIATE, PostgreSQL
        advisory lock); whoever comes second finds the schema current."""
        if revision == "head" and self.schema_revision() == HEAD_REVISION:
            return  # current: every proxy start skips importing alembic (about 12 MB per worker)
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        try:
            with self._write_engine.begin() as connection:
                if self.postgresql:
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_MIGRATE, 0)))
                config.attributes["connection"] = connection
                config.attributes["version_table"] = VERSION_TABLE
                command.upgrade(config, revision)
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
