"""Pending links: an iD (and its tokens) ORCID handed to the connect endpoint before we knew
which institutional user the browser belongs to. Encrypted, expiring, behind a random
cookie handle of which only a hash is stored. Finished, after a confirmation page, at the
next login through the proxy in that browser.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .orcid_id import OrcidId
from .store import Base, Store, UTCDateTime
from .tokens import TokenSet, parse_scope


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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class Pending:
    orcid: OrcidId
    verified: bool
    tokens: TokenSet
    name: str | None
    amr: str | None


def _hash(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


class PendingLinks:
    def __init__(self, store: Store) -> None:
        self.store = store

    def create(self, orcid: OrcidId, tokens: TokenSet, *, name: str | None, amr: str | None, ttl: int,
               verified: bool = False) -> str:
        handle = secrets.token_urlsafe(32)
        now = self.store._now()
        cipher = self.store.cipher
        with self.store._session(write=True) as session:
            session.add(PendingRow(
                handle_hash=_hash(handle), orcid=orcid.value, environment="sandbox" if orcid.sandbox else "production",
                verified=verified, access_token_enc=cipher.encrypt(tokens.access_token),
                refresh_token_enc=cipher.encrypt(tokens.refresh_token) if tokens.refresh_token else None,
                expires_at_token=tokens.expires_at, scope=" ".join(tokens.scope), name=name, amr=amr,
                created_at=now, expires_at=now + timedelta(seconds=ttl),
            ))
        return handle

    def get(self, handle: str | None) -> Pending | None:
        if not handle or len(handle) > 128:
            return None
        with self.store._session() as session:
            row = session.get(PendingRow, _hash(handle))
            if row is None or row.expires_at <= self.store._now():
                return None
            cipher = self.store.cipher
            tokens = TokenSet(
                access_token=cipher.decrypt(row.access_token_enc),
                refresh_token=cipher.decrypt(row.refresh_token_enc) if row.refresh_token_enc else None,
                expires_at=row.expires_at_token,
                scope=parse_scope(row.scope),
            )
            return Pending(OrcidId(row.orcid, row.environment == "sandbox"), row.verified, tokens, row.name, row.amr)

    def mark_verified(self, handle: str, tokens: TokenSet) -> None:
        cipher = self.store.cipher
        with self.store._session(write=True) as session:
            row = session.get(PendingRow, _hash(handle))
            if row is not None:
                row.verified = True
                row.access_token_enc = cipher.encrypt(tokens.access_token)
                row.refresh_token_enc = cipher.encrypt(tokens.refresh_token) if tokens.refresh_token else None
                row.expires_at_token = tokens.expires_at
                row.scope = " ".join(tokens.scope)

    def take(self, handle: str | None) -> Pending | None:
        """Return and delete the pending link (single use)."""
        pending = self.get(handle)
        if pending is None:
            return None
        with self.store._session(write=True) as session:
            deleted = session.execute(sa.delete(PendingRow).where(PendingRow.handle_hash == _hash(handle)))
            if not deleted.rowcount:
                return None  # someone else took it concurrently
        return pending

    def take_expired(self, limit: int = 50) -> list[TokenSet]:
        """Remove pending links that expired unfinished; returns their tokens so the caller
        can revoke them at ORCID (nothing we no longer hold stays valid there)."""
        now = self.store._now()
        cipher = self.store.cipher
        with self.store._session(write=True) as session:
            rows = session.scalars(
                sa.select(PendingRow).where(PendingRow.expires_at <= now).limit(limit).with_for_update(skip_locked=True)
            ).all()
            tokens = []
            for row in rows:
                try:
                    tokens.append(TokenSet(access_token=cipher.decrypt(row.access_token_enc)))
                except Exception:  # a key that was rotated away: nothing left to revoke with
                    pass
                session.delete(row)
        return tokens

    def delete(self, handle: str | None) -> None:
        if handle:
            with self.store._session(write=True) as session:
                session.execute(sa.delete(PendingRow).where(PendingRow.handle_hash == _hash(handle)))
