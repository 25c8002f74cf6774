"""The link store: which user holds which ORCID iD, their encrypted tokens, decisions, audit.

SQLAlchemy 2 over a SQLite file (the default, embedded) or PostgreSQL (several proxy
instances and workers sharing one database)::

    store = Store.from_url("sqlite:///var/orcid.sqlite", TokenCipher.from_env())
    store.upgrade()                                   # alembic migrations, safe to run at start-up
    store.link("alice@example.org", OrcidId.parse("0000-0002-1825-0097"), tokens)
    store.get_active_link("alice@example.org")        # the fast path of every login

The database enforces the two invariants: at most one *active* link per user and at most one
*active* link per (iD, environment), as partial unique indexes. Code never "checks then
inserts" and trusts the check; it takes per-user locks (PostgreSQL advisory locks, SQLite
``BEGIN IMMEDIATE``) and still turns an ``IntegrityError`` into a re-read and one retry.

Only Fernet ciphertext of tokens is stored. The audit table is append-only and never holds
tokens, codes or secrets. All datetimes are timezone-aware UTC.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from .audit_log import emit_after_commit, scrub
from .errors import ConfigError, LinkConflict, NotFound, StoreError
from .orcid_id import OrcidId
from .tokens import TokenCipher, TokenSet, parse_scope

log = logging.getLogger(__name__)

ACTIVE, REVOKED, UNLINKED = "active", "revoked", "unlinked"
STATUSES = (ACTIVE, REVOKED, UNLINKED)
PRODUCTION, SANDBOX = "production", "sandbox"
ENVIRONMENTS = (PRODUCTION, SANDBOX)
NOT_NOW, NEVER = "not_now", "never"
DECISIONS = (NOT_NOW, NEVER)

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
# The newest migration in migrations/versions (a test keeps this in step with alembic's head).
HEAD_REVISION = "0004"
VERSION_TABLE = "orcid_alembic_version"  # not "alembic_version": the database may be shared
SQLITE_BUSY_TIMEOUT_S = 30
ROTATE_BATCH = 500

# Literal, not a bound parameter: the planners only use a partial index when the query's
# WHERE visibly implies the index's WHERE (SQLite always, PostgreSQL for generic plans).
_ACTIVE_SQL = "status = 'active'"

# Execution option read by the SQLite "begin" hook: which BEGIN to emit.
_BEGIN_OPTION = "satosa_orcid_begin"

# Two-int advisory lock classes (PostgreSQL), taken in this order to avoid lock cycles.
_LOCK_USER, _LOCK_ORCID, _LOCK_MIGRATE = 0x4F524331, 0x4F524332, 0x4F524333


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime, what: str = "datetime") -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc)


# --- schema ----------------------------------------------------------------------------
class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on PostgreSQL and SQLite alike
    (SQLite has no time zone type: store naive UTC there)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = _utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class LinkRow(Base):
    __tablename__ = "orcid_links"
    __table_args__ = (
        sa.CheckConstraint("status IN ('active', 'revoked', 'unlinked')", name="status"),
        sa.CheckConstraint("environment IN ('production', 'sandbox')", name="environment"),
        sa.Index(
            "uq_orcid_links_active_user", "user_key", unique=True,
            postgresql_where=sa.text(_ACTIVE_SQL), sqlite_where=sa.text(_ACTIVE_SQL),
        ),
        sa.Index(
            "uq_orcid_links_active_orcid", "orcid", "environment", unique=True,
            postgresql_where=sa.text(_ACTIVE_SQL), sqlite_where=sa.text(_ACTIVE_SQL),
        ),
        sa.Index("ix_orcid_links_user_key_id", "user_key", "id"),
        sa.Index("ix_orcid_links_orcid_id", "orcid", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_key: Mapped[str] = mapped_column(sa.String(512))
    orcid: Mapped[str] = mapped_column(sa.String(19))
    environment: Mapped[str] = mapped_column(sa.String(16))
    status: Mapped[str] = mapped_column(sa.String(16))
    scopes: Mapped[str] = mapped_column(sa.Text)
    name: Mapped[str | None] = mapped_column(sa.Text)
    amr: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoke_reason: Mapped[str | None] = mapped_column(sa.Text)


class TokenRow(Base):
    __tablename__ = "orcid_tokens"

    link_id: Mapped[int] = mapped_column(sa.ForeignKey("orcid_links.id", ondelete="CASCADE"), primary_key=True)
    access_token_enc: Mapped[str] = mapped_column(sa.Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(sa.Text)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scope: Mapped[str] = mapped_column(sa.Text)
    key_version: Mapped[str] = mapped_column(sa.String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class DecisionRow(Base):
    __tablename__ = "orcid_decisions"
    __table_args__ = (sa.CheckConstraint("decision IN ('not_now', 'never')", name="decision"),)

    user_key: Mapped[str] = mapped_column(sa.String(512), primary_key=True)
    decision: Mapped[str] = mapped_column(sa.String(16))
    until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuditRow(Base):
    __tablename__ = "orcid_audit"
    __table_args__ = (
        sa.Index("ix_orcid_audit_user_key_id", "user_key", "id"),
        sa.Index("ix_orcid_audit_at", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(sa.String(32))
    user_key: Mapped[str | None] = mapped_column(sa.String(512))
    orcid: Mapped[str | None] = mapped_column(sa.String(19))
    instance: Mapped[str] = mapped_column(sa.String(255))
    session_id: Mapped[str | None] = mapped_column(sa.String(255))
    detail: Mapped[str | None] = mapped_column(sa.Text)


class OnceRow(Base):
    __tablename__ = "orcid_once"
    __table_args__ = (sa.Index("ix_orcid_once_expires_at", "expires_at"),)

    key: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


_IS_ACTIVE = LinkRow.status == sa.literal_column("'active'")


# --- values ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    """One link between a user and an ORCID iD, as the store holds it.

    ``user_key`` is the key as stored: the caller's key, or its HMAC when the store hashes keys.
    """

    user_key: str
    orcid: OrcidId
    environment: str
    status: str
    scopes: tuple[str, ...]
    name: str | None
    amr: str | None
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    id: int | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


def _to_link(row: LinkRow) -> Link:
    return Link(
        user_key=row.user_key,
        # Re-validated on the way out: a bad checksum never leaves the store.
        orcid=OrcidId.parse(row.orcid, sandbox=row.environment == SANDBOX),
        environment=row.environment,
        status=row.status,
        scopes=parse_scope(row.scopes),
        name=row.name,
        amr=row.amr,
        created_at=row.created_at,
        updated_at=row.updated_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
        id=row.id,
    )


class _Conflict(Exception):
    """Internal: the iD is active for another user (turned into LinkConflict after rollback)."""

    def __init__(self, holder: str) -> None:
        self.holder = holder


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


def _store_error(exc: SQLAlchemyError) -> StoreError:
    orig = getattr(exc, "orig", None) or exc
    first_line = (str(orig).strip().splitlines() or [""])[0][:200]
    return StoreError(f"database error ({type(orig).__name__}): {first_line}")


# --- the store -------------------------------------------------------------------------
class Store:
    """Links, tokens, decisions and audit events, behind one small API.

    Every method is its own transaction. User keys are passed raw; with ``user_key_secret``
    the store keeps only ``hmac-sha256(secret, key)``.
    """

    def __init__(
        self,
        engine: Engine,
        cipher: TokenCipher,
        *,
        user_key_secret: bytes | None = None,
        instance: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.cipher = cipher
        self._secret = user_key_secret
        self._instance = instance
        self._clock = clock
        self._dialect = engine.dialect.name
        if self._dialect == "sqlite":
            self._write_engine = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
            self._read_engine = engine.execution_options(**{_BEGIN_OPTION: "NONE"})
        else:
            self._write_engine = engine
            self._read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def from_url(
        cls,
        database_url: str,
        cipher: TokenCipher,
        *,
        user_key_secret: bytes | None = None,
        instance: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> "Store":
        return cls(
            create_store_engine(database_url), cipher,
            user_key_secret=user_key_secret, instance=instance, clock=clock,
        )

    def __repr__(self) -> str:
        return f"Store({self.engine.url.render_as_string(hide_password=True)!r})"

    # --- plumbing ---------------------------------------------------------------------
    @property
    def instance(self) -> str:
        # Computed late: gunicorn forks workers after the store is built.
        return self._instance or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def user_key_secret_set(self) -> bool:
        """True when user keys are stored as HMACs (so stored keys cannot be used as input)."""
        return self._secret is not None

    def stored_user_key(self, user_key: str) -> str:
        """The key as it appears in the database (and in ``Link.user_key``)."""
        if not isinstance(user_key, str) or not user_key:
            raise ValueError("user_key must be a non-empty string")
        if self._secret is None:
            return user_key
        return hmac.new(self._secret, user_key.encode("utf-8"), hashlib.sha256).hexdigest()

    def _now(self) -> datetime:
        return _utc(self._clock(), "clock()")

    @contextmanager
    def _session(self, *, write: bool = False, raw_integrity: bool = False) -> Iterator[Session]:
        """One transaction; database failures become StoreError."""
        try:
            with Session(self._write_engine if write else self.engine, expire_on_commit=False) as session:
                with session.begin():
                    yield session
        except IntegrityError as exc:
            if raw_integrity:
                raise
            raise _store_error(exc) from exc
        except SQLAlchemyError as exc:
            raise _store_error(exc) from exc

    def _read(self, stmt: sa.Select[Any]) -> Any:
        """A single-statement read outside any explicit transaction (one round trip)."""
        try:
            with Session(self._read_engine) as session:
                return session.scalar(stmt)
        except SQLAlchemyError as exc:
            raise _store_error(exc) from exc

    def _read_all(self, stmt: sa.Select[Any]) -> list[Any]:
        try:
            with Session(self._read_engine) as session:
                return list(session.scalars(stmt))
        except SQLAlchemyError as exc:
            raise _store_error(exc) from exc

    def _lock(self, session: Session, user_key: str | None = None, orcid_key: str | None = None) -> None:
        """Serialise writers per user and per iD (PostgreSQL); SQLite's BEGIN IMMEDIATE
        already serialises all writers."""
        if self._dialect != "postgresql":
            return
        for cls_id, value in ((_LOCK_USER, user_key), (_LOCK_ORCID, orcid_key)):
            if value is not None:
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(cls_id, sa.func.hashtext(value))))

    def _audit_row(
        self,
        session: Session,
        event: str,
        *,
        user_key: str | None,
        orcid: OrcidId | str | None,
        session_id: str | None,
        detail: dict[str, Any],
    ) -> None:
        clean = scrub(detail)  # the same redaction as the audit log line (audit_log.SECRET_KEYS)
        session.add(
            AuditRow(
                at=self._now(),
                event=event,
                user_key=user_key,
                orcid=str(orcid) if orcid is not None else None,
                instance=self.instance[:255],
                session_id=session_id,
                detail=json.dumps(clean, default=str, sort_keys=True) if clean else None,
            )
        )
        # The same event as one JSON log line, after commit.
        emit_after_commit(session, event, at=self._now(), user_key=user_key, orcid=orcid, session_id=session_id,
                          instance=self.instance[:255], detail=clean)

    def _put_tokens(self, session: Session, link_id: int, tokens: TokenSet, now: datetime) -> None:
        row = session.get(TokenRow, link_id)
        if row is None:
            row = TokenRow(link_id=link_id)
            session.add(row)
        row.access_token_enc = self.cipher.encrypt(tokens.access_token)
        row.refresh_token_enc = self.cipher.encrypt(tokens.refresh_token) if tokens.refresh_token else None
        row.expires_at = tokens.expires_at
        row.scope = " ".join(tokens.scope)
        row.key_version = self.cipher.key_id
        row.updated_at = now

    def _decrypt(self, row: TokenRow) -> TokenSet:
        return TokenSet(
            access_token=self.cipher.decrypt(row.access_token_enc),
            refresh_token=self.cipher.decrypt(row.refresh_token_enc) if row.refresh_token_enc else None,
            expires_at=row.expires_at,
            scope=parse_scope(row.scope),
        )

    @staticmethod
    def _retire(session: Session, row: LinkRow, status: str, now: datetime) -> None:
        """Take a link out of service; its tokens go with it (the caller revokes them first)."""
        row.status = status
        row.updated_at = now
        session.execute(sa.delete(TokenRow).where(TokenRow.link_id == row.id))
        session.flush()  # before any INSERT that the partial unique indexes would reject

    @staticmethod
    def _newest_of_user(key: str) -> sa.Select[tuple[LinkRow]]:
        return sa.select(LinkRow).where(LinkRow.user_key == key).order_by(LinkRow.id.desc()).limit(1)

    @staticmethod
    def _environment(orcid: OrcidId, environment: str | None) -> str:
        if environment is None:
            return SANDBOX if orcid.sandbox else PRODUCTION
        if environment not in ENVIRONMENTS:
            raise ValueError(f"environment must be one of {ENVIRONMENTS}, not {environment!r}")
        if orcid.sandbox and environment == PRODUCTION:
            raise ValueError("a sandbox ORCID iD cannot be linked in the production environment")
        return environment

    # --- schema -----------------------------------------------------------------------
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
                if self._dialect == "postgresql":
                    connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_MIGRATE, 0)))
                config.attributes["connection"] = connection
                config.attributes["version_table"] = VERSION_TABLE
                command.upgrade(config, revision)
        except SQLAlchemyError as exc:
            raise _store_error(exc) from exc

    def schema_revision(self) -> str | None:
        """The applied migration, or None for an empty database."""
        try:
            with self._read_engine.connect() as connection:
                if not sa.inspect(connection).has_table(VERSION_TABLE):
                    return None
                return connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        except SQLAlchemyError as exc:
            raise _store_error(exc) from exc

    # --- reads ------------------------------------------------------------------------
    def get_active_link(self, user_key: str) -> Link | None:
        """The user's active link: one indexed query, no network (every login's fast path)."""
        key = self.stored_user_key(user_key)
        row = self._read(sa.select(LinkRow).where(LinkRow.user_key == key, _IS_ACTIVE))
        return _to_link(row) if row is not None else None

    def get_link(self, user_key: str) -> Link | None:
        """The user's current link, active or revoked; None when there is none or it was unlinked."""
        row = self._read(self._newest_of_user(self.stored_user_key(user_key)))
        return _to_link(row) if row is not None and row.status != UNLINKED else None

    def find_by_orcid(self, orcid: OrcidId, *, environment: str | None = None) -> Link | None:
        """The current (active or revoked) link of an iD; the environment follows ``orcid.sandbox``
        unless given."""
        env = self._environment(orcid, environment)
        row = self._read(
            sa.select(LinkRow)
            .where(LinkRow.orcid == orcid.value, LinkRow.environment == env)
            .order_by(LinkRow.id.desc())
            .limit(1)
        )
        return _to_link(row) if row is not None and row.status != UNLINKED else None

    def tokens_for(self, user_key: str) -> TokenSet | None:
        """The decrypted tokens of the user's active link."""
        key = self.stored_user_key(user_key)
        row = self._read(
            sa.select(TokenRow).join(LinkRow, LinkRow.id == TokenRow.link_id).where(LinkRow.user_key == key, _IS_ACTIVE)
        )
        return self._decrypt(row) if row is not None else None

    def list_links(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Link]:
        """Links, newest first, optionally of one status."""
        stmt = sa.select(LinkRow).order_by(LinkRow.id.desc()).limit(limit).offset(offset)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
            stmt = stmt.where(LinkRow.status == status)
        return [_to_link(row) for row in self._read_all(stmt)]

    # --- link lifecycle ---------------------------------------------------------------
    def link(
        self,
        user_key: str,
        orcid: OrcidId,
        tokens: TokenSet | None,
        *,
        name: str | None = None,
        amr: str | None = None,
        environment: str | None = None,
        on_conflict: str = "refuse",
        session_id: str | None = None,
        extra: Callable[[Session, LinkRow], None] | None = None,
    ) -> Link:
        """Make ``orcid`` the user's active iD, in one transaction.

        * same active iD: tokens (and name/amr when given) are updated; audit ``relink``;
        * another active iD: that link becomes ``unlinked``; audit ``switch``;
        * the iD is active for another user: ``LinkConflict`` (audit ``conflict``), or with
          ``on_conflict="move"`` the other user's link becomes ``unlinked`` (audit ``moved``).

        A recorded "not now"/"never" decision of the user is cleared. ``environment`` defaults
        to the iD's (``orcid.sandbox``). ``extra(session, link_row)`` runs in the same
        transaction after the link row is written (e.g. to queue affiliation outbox rows).
        """
        if on_conflict not in ("refuse", "move"):
            raise ValueError(f"on_conflict must be 'refuse' or 'move', not {on_conflict!r}")
        if not isinstance(orcid, OrcidId):
            orcid = OrcidId.parse(orcid)
        env = self._environment(orcid, environment)
        key = self.stored_user_key(user_key)
        for attempt in (1, 2):
            try:
                with self._session(write=True, raw_integrity=True) as session:
                    self._lock(session, key, f"{env}:{orcid.value}")
                    return self._link_in(session, key, orcid, env, tokens, name, amr, on_conflict, session_id, extra)
            except _Conflict as conflict:
                with self._session(write=True) as session:
                    self._audit_row(
                        session, "conflict", user_key=key, orcid=orcid, session_id=session_id,
                        detail={"environment": env, "held_by": conflict.holder},
                    )
                raise LinkConflict(f"ORCID iD {orcid} is already linked to another user") from None
            except IntegrityError as exc:
                # A concurrent writer got there first; the next attempt re-reads its result.
                if attempt == 2:
                    raise StoreError("link failed twice on concurrent changes; try again") from exc
                log.info("link for one user raced another writer; retrying once")
        raise AssertionError("unreachable")

    def _link_in(
        self,
        session: Session,
        key: str,
        orcid: OrcidId,
        env: str,
        tokens: TokenSet | None,
        name: str | None,
        amr: str | None,
        on_conflict: str,
        session_id: str | None,
        extra: Callable[[Session, LinkRow], None] | None = None,
    ) -> Link:
        now = self._now()
        mine = session.scalar(sa.select(LinkRow).where(LinkRow.user_key == key, _IS_ACTIVE))
        holder = session.scalar(
            sa.select(LinkRow).where(LinkRow.orcid == orcid.value, LinkRow.environment == env, _IS_ACTIVE)
        )
        if holder is not None and holder.user_key != key:
            if on_conflict == "refuse":
                raise _Conflict(holder.user_key)
            self._retire(session, holder, UNLINKED, now)
            self._audit_row(
                session, "moved", user_key=holder.user_key, orcid=orcid, session_id=session_id,
                detail={"environment": env, "to_user": key},
            )

        detail: dict[str, Any] = {"environment": env}
        if mine is not None and mine.orcid == orcid.value and mine.environment == env:
            event, row = "relink", mine
            row.updated_at = now
            row.name = name if name is not None else row.name
            row.amr = amr if amr is not None else row.amr
            if tokens is not None:
                row.scopes = " ".join(tokens.scope)
        else:
            if mine is not None:
                event = "switch"
                detail["previous"] = mine.orcid
                self._retire(session, mine, UNLINKED, now)
            else:
                event = "link"
            row = LinkRow(
                user_key=key, orcid=orcid.value, environment=env, status=ACTIVE,
                scopes=" ".join(tokens.scope) if tokens else "", name=name, amr=amr,
                created_at=now, updated_at=now,
            )
            session.add(row)
            session.flush()
        if tokens is not None:
            self._put_tokens(session, row.id, tokens, now)
        session.execute(sa.delete(DecisionRow).where(DecisionRow.user_key == key))
        detail["scopes"] = row.scopes
        self._audit_row(session, event, user_key=key, orcid=orcid, session_id=session_id, detail=detail)
        session.flush()
        if extra is not None:
            extra(session, row)
            session.flush()
        return _to_link(row)

    def mark_revoked(self, user_key: str, reason: str, session_id: str | None = None) -> Link | None:
        """ORCID no longer honours the user's token (401): the active link becomes ``revoked``
        and its tokens are dropped. None when the user has no active link."""
        key = self.stored_user_key(user_key)
        with self._session(write=True) as session:
            self._lock(session, key)
            row = session.scalar(sa.select(LinkRow).where(LinkRow.user_key == key, _IS_ACTIVE))
            if row is None:
                return None
            now = self._now()
            row.revoked_at = now
            row.revoke_reason = reason
            self._retire(session, row, REVOKED, now)
            self._audit_row(
                session, "revoke", user_key=key, orcid=row.orcid, session_id=session_id,
                detail={"reason": reason, "environment": row.environment},
            )
            return _to_link(row)

    def unlink(
        self, user_key: str, *, reason: str = "admin", session_id: str | None = None
    ) -> tuple[Link, TokenSet | None]:
        """Unlink the user's current (active or revoked) link. Returns it with its tokens, now
        deleted from the store, so the caller can revoke them at ORCID. NotFound if none."""
        key = self.stored_user_key(user_key)
        with self._session(write=True) as session:
            self._lock(session, key)
            row = session.scalar(self._newest_of_user(key))
            if row is None or row.status == UNLINKED:
                raise NotFound("this user has no ORCID link")
            tokens = None
            token_row = session.get(TokenRow, row.id)
            detail: dict[str, Any] = {"reason": reason, "environment": row.environment, "was": row.status}
            if token_row is not None:
                try:
                    tokens = self._decrypt(token_row)
                except StoreError:
                    # A lost key must not stop an unlink; the tokens just cannot be revoked.
                    log.warning("unlink: the stored tokens cannot be decrypted; they are dropped unrevoked")
                    detail["tokens_undecryptable"] = True
            self._retire(session, row, UNLINKED, self._now())
            self._audit_row(session, "unlink", user_key=key, orcid=row.orcid, session_id=session_id, detail=detail)
            return _to_link(row), tokens

    # --- decisions --------------------------------------------------------------------
    def record_decision(
        self, user_key: str, decision: str, until: datetime | None, session_id: str | None = None
    ) -> None:
        """Remember that the user said "not now" (until a time) or "never"."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
        if decision == NOT_NOW and until is None:
            raise ValueError("a 'not_now' decision needs an 'until' time")
        until = _utc(until, "until") if until is not None else None
        key = self.stored_user_key(user_key)
        now = self._now()
        values = {"user_key": key, "decision": decision, "until": until, "created_at": now}
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(DecisionRow).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[DecisionRow.user_key],
            set_={"decision": stmt.excluded.decision, "until": stmt.excluded.until, "created_at": stmt.excluded.created_at},
        )
        with self._session(write=True) as session:
            session.execute(stmt)
            self._audit_row(
                session, "decline", user_key=key, orcid=None, session_id=session_id,
                detail={"decision": decision, "until": until.isoformat() if until else None},
            )

    def decision_for(self, user_key: str, now: datetime) -> str | None:
        """``"never"``, ``"not_now"`` while its period lasts, else None."""
        now = _utc(now, "now")
        row = self._read(sa.select(DecisionRow).where(DecisionRow.user_key == self.stored_user_key(user_key)))
        if row is None:
            return None
        if row.decision == NEVER:
            return NEVER
        return NOT_NOW if row.until is not None and row.until > now else None

    def clear_decision(self, user_key: str) -> None:
        key = self.stored_user_key(user_key)
        with self._session(write=True) as session:
            result = session.execute(sa.delete(DecisionRow).where(DecisionRow.user_key == key))
            if result.rowcount:
                self._audit_row(session, "decision_cleared", user_key=key, orcid=None, session_id=None, detail={})

    # --- audit and reporting ----------------------------------------------------------
    def audit(
        self,
        event: str,
        *,
        user_key: str | None = None,
        orcid: OrcidId | str | None = None,
        session_id: str | None = None,
        **detail: Any,
    ) -> None:
        """Append an audit event. ``detail`` is stored as JSON; token-like keys are redacted."""
        key = self.stored_user_key(user_key) if user_key is not None else None
        with self._session(write=True) as session:
            self._audit_row(session, event, user_key=key, orcid=orcid, session_id=session_id, detail=detail)

    def audit_events(self, user_key: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Audit events, newest first: dicts with id, at, event, user_key, orcid, instance,
        session_id and detail (a dict)."""
        stmt = sa.select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if user_key is not None:
            stmt = stmt.where(AuditRow.user_key == self.stored_user_key(user_key))
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
            for row in self._read_all(stmt)
        ]

    def stats(self, now: datetime) -> dict[str, int]:
        """Counts for dashboards and metrics."""
        now = _utc(now, "now")
        with self._session() as session:
            by_status = dict(session.execute(sa.select(LinkRow.status, sa.func.count()).group_by(LinkRow.status)).all())
            not_now = session.scalar(
                sa.select(sa.func.count()).select_from(DecisionRow)
                .where(DecisionRow.decision == NOT_NOW, DecisionRow.until > now)
            )
            never = session.scalar(
                sa.select(sa.func.count()).select_from(DecisionRow).where(DecisionRow.decision == NEVER)
            )
            last_day = session.scalar(
                sa.select(sa.func.count()).select_from(LinkRow).where(LinkRow.created_at > now - timedelta(days=1))
            )
        return {
            "linked": by_status.get(ACTIVE, 0),
            "revoked": by_status.get(REVOKED, 0),
            "unlinked": by_status.get(UNLINKED, 0),
            "declined_not_now": not_now or 0,
            "declined_never": never or 0,
            "links_last_day": last_day or 0,
        }

    # --- keys and housekeeping --------------------------------------------------------
    def rotate_keys(self, batch_size: int = ROTATE_BATCH) -> int:
        """Re-encrypt every token row not yet under the newest key, one batch per transaction.
        Returns the number of rows rewritten; afterwards older keys can be removed."""
        newest = self.cipher.key_id
        total, last_id = 0, 0
        while True:
            with self._session(write=True) as session:
                rows = session.scalars(
                    sa.select(TokenRow)
                    .where(TokenRow.link_id > last_id, TokenRow.key_version != newest)
                    .order_by(TokenRow.link_id)
                    .limit(batch_size)
                    .with_for_update()
                ).all()
                if not rows:
                    break
                for row in rows:
                    row.access_token_enc = self.cipher.rotate(row.access_token_enc)
                    if row.refresh_token_enc:
                        row.refresh_token_enc = self.cipher.rotate(row.refresh_token_enc)
                    row.key_version = newest
                last_id = rows[-1].link_id
                total += len(rows)
        self.audit("keys_rotated", rows=total, key_version=newest)
        return total

    def consume_once(self, key: str, expires_at: datetime) -> bool:
        """True the first time ``key`` is presented (until ``expires_at``), False on every replay.

        Used so that an OAuth callback, and the single-use code it carries, is processed at
        most once across every proxy instance sharing this database.
        """
        if not key or len(key) > 128:
            raise ValueError("key must be 1-128 characters")
        expires_at = _utc(expires_at, "expires_at")
        now = self._now()
        try:
            with self._session(write=True, raw_integrity=True) as session:
                session.execute(sa.delete(OnceRow).where(OnceRow.key == key, OnceRow.expires_at <= now))
                session.add(OnceRow(key=key, expires_at=expires_at))
        except IntegrityError:
            return False
        if secrets.randbelow(100) == 0:  # keep the table small without a cron job
            with self._session(write=True) as session:
                session.execute(sa.delete(OnceRow).where(OnceRow.expires_at <= now))
        return True

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


# The affiliation outbox and the rate-limit bucket live in their own modules; importing them
# here registers their tables on Base.metadata (alembic autogenerate, schema checks).
from . import outbox as _outbox, pending as _pending, ratelimit as _ratelimit  # noqa: E402,F401
