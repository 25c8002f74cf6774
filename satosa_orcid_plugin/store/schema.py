"""Every table of the link store, its UTC datetime type and its status constants.

The alembic migrations (``migrations/env.py``) compare against ``Base.metadata``; a change
here needs a migration. All datetimes are timezone-aware UTC.
"""
from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACTIVE, REVOKED, UNLINKED = "active", "revoked", "unlinked"
STATUSES = (ACTIVE, REVOKED, UNLINKED)
PRODUCTION, SANDBOX = "production", "sandbox"
ENVIRONMENTS = (PRODUCTION, SANDBOX)
NOT_NOW, NEVER = "not_now", "never"
# The issuer of an issuer-free user key (user_key_scope: global): links and decisions keyed
# by the user key alone, whichever IdP asserted it.
GLOBAL_ISSUER = ""


def check_issuer(issuer: object) -> str:
    """``issuer`` as a key part (a string; ``GLOBAL_ISSUER`` for issuer-free keys), else ValueError."""
    if not isinstance(issuer, str):
        raise ValueError("issuer must be a string (\"\" for an issuer-free user key)")
    return issuer


DECISIONS = (NOT_NOW, NEVER)
QUEUED, RETRY, DONE, PARKED = "queued", "retry", "done", "parked"
ITEM_STATUSES = (QUEUED, RETRY, DONE, PARKED)

# Literal, not a bound parameter: the planners only use a partial index when the query's
# WHERE visibly implies the index's WHERE (SQLite always, PostgreSQL for generic plans).
_ACTIVE_SQL = "status = 'active'"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime, what: str = "datetime") -> datetime:
    """``value`` in UTC; ValueError for a naive datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC)")
    return value.astimezone(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on PostgreSQL and SQLite alike
    (SQLite has no time zone type: store naive UTC there)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# The bound "now" of the store's prepared statements (reaps, leases), typed for both databases.
NOW = sa.bindparam("now", type_=UTCDateTime)


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
        # One active link per (user key, issuer): the issuer is the entity ID of the IdP that
        # asserted the key, or "" for issuer-free keys (user_key_scope: global).
        sa.Index(
            "uq_orcid_links_active_user", "user_key", "issuer", unique=True,
            postgresql_where=sa.text(_ACTIVE_SQL), sqlite_where=sa.text(_ACTIVE_SQL),
        ),
        sa.Index(
            "uq_orcid_links_active_orcid", "orcid", "environment", unique=True,
            postgresql_where=sa.text(_ACTIVE_SQL), sqlite_where=sa.text(_ACTIVE_SQL),
        ),
        sa.Index("ix_orcid_links_user_key_issuer_id", "user_key", "issuer", "id"),
        sa.Index("ix_orcid_links_orcid_id", "orcid", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_key: Mapped[str] = mapped_column(sa.String(512))
    issuer: Mapped[str] = mapped_column(sa.String(1024))
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


# The WHERE of the partial unique indexes, as every query for active links writes it.
IS_ACTIVE = LinkRow.status == sa.literal_column("'active'")


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
    issuer: Mapped[str] = mapped_column(sa.String(1024), primary_key=True)
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


class AffiliationRow(Base):
    __tablename__ = "orcid_affiliations"
    __table_args__ = (
        sa.CheckConstraint("kind IN ('employment', 'education')", name="kind"),
        sa.CheckConstraint("status IN ('queued', 'retry', 'done', 'parked')", name="status"),
        sa.UniqueConstraint("user_key", "orcid", "kind"),
        sa.Index("ix_orcid_affiliations_status_next_attempt_at", "status", "next_attempt_at"),
        sa.Index("ix_orcid_affiliations_link_id", "link_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_key: Mapped[str] = mapped_column(sa.String(512))
    link_id: Mapped[int] = mapped_column(sa.ForeignKey("orcid_links.id", ondelete="CASCADE"))
    orcid: Mapped[str] = mapped_column(sa.String(19))
    kind: Mapped[str] = mapped_column(sa.String(16))
    self_id: Mapped[str] = mapped_column(sa.String(64))
    desired: Mapped[str] = mapped_column(sa.Text)
    desired_hash: Mapped[str] = mapped_column(sa.String(64))
    synced_hash: Mapped[str | None] = mapped_column(sa.String(64))
    put_code: Mapped[int | None] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(16))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    posted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(255))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PendingRow(Base):
    __tablename__ = "orcid_pending"
    __table_args__ = (sa.Index("ix_orcid_pending_expires_at", "expires_at"),)

    handle_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    orcid: Mapped[str] = mapped_column(sa.String(19))
    environment: Mapped[str] = mapped_column(sa.String(16))
    verified: Mapped[bool] = mapped_column(sa.Boolean)
    access_token_enc: Mapped[str] = mapped_column(sa.Text)
    refresh_token_enc: Mapped[str | None] = mapped_column(sa.Text)
    expires_at_token: Mapped[datetime | None] = mapped_column(UTCDateTime)
    scope: Mapped[str] = mapped_column(sa.Text)
    name: Mapped[str | None] = mapped_column(sa.Text)
    amr: Mapped[str | None] = mapped_column(sa.String(64))
    origin: Mapped[str | None] = mapped_column(sa.String(64))  # the network address the connect came from
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RateBucketRow(Base):
    __tablename__ = "orcid_rate_buckets"

    name: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    tokens: Mapped[float] = mapped_column(sa.Float)
    refilled_at: Mapped[float] = mapped_column(sa.Float)


class RevocationRow(Base):
    """A token ORCID issued that no link holds, waiting to be revoked at ORCID (the immediate
    revoke failed, or the link write that replaced it queued it in its own transaction)."""

    __tablename__ = "orcid_revocations"
    __table_args__ = (sa.Index("ix_orcid_revocations_next_attempt_at", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    access_token_enc: Mapped[str] = mapped_column(sa.Text)
    orcid: Mapped[str | None] = mapped_column(sa.String(19))
    reason: Mapped[str] = mapped_column(sa.String(32))
    attempts: Mapped[int] = mapped_column(sa.Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ParkedRow(Base):
    """A login parked during an ORCID hop (encrypted), named by a hash of the cookie's handle."""

    __tablename__ = "orcid_parked"
    __table_args__ = (sa.Index("ix_orcid_parked_expires_at", "expires_at"),)

    handle_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    data_enc: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
