"""Pending links: an iD (and its tokens) ORCID handed to the connect endpoint before we knew
which institutional user the browser belongs to. Encrypted (through the vault), expiring,
behind a random cookie handle of which only a hash is stored. Finished, after a confirmation
page, at the next login through the proxy in that browser.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from ..orcid_id import OrcidId
from ..tokens import TokenSet
from .database import Database
from .schema import PRODUCTION, SANDBOX, PendingRow, as_utc
from .vault import Vault


@dataclass(frozen=True)
class Pending:
    orcid: OrcidId
    verified: bool
    tokens: TokenSet
    name: str | None
    amr: str | None
    created_at: datetime | None = None  # when the connect that left it started
    origin: str | None = None           # and from which network address, when known


def _hash(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


class PendingLinks:
    def __init__(self, db: Database, vault: Vault) -> None:
        self.db = db
        self.vault = vault

    def __repr__(self) -> str:
        return f"PendingLinks({self.db!r})"

    def create(self, orcid: OrcidId, tokens: TokenSet, *, name: str | None, amr: str | None, ttl: int,
               verified: bool = False, origin: str | None = None) -> str:
        """Keep ``tokens`` for ``ttl`` seconds; returns the cookie handle. ``origin``: the network
        address the connect came from (at most 64 characters)."""
        handle = secrets.token_urlsafe(32)
        now = self.db.now()
        sealed = self.vault.seal(tokens)
        with self.db.transaction() as session:
            session.add(PendingRow(
                handle_hash=_hash(handle), orcid=orcid.value, environment=SANDBOX if orcid.sandbox else PRODUCTION,
                verified=verified, access_token_enc=sealed.access_token, refresh_token_enc=sealed.refresh_token,
                expires_at_token=sealed.expires_at, scope=sealed.scope, name=name, amr=amr,
                origin=origin[:64] if origin else None, created_at=now, expires_at=now + timedelta(seconds=ttl),
            ))
        return handle

    def get(self, handle: str | None) -> Pending | None:
        if not handle or len(handle) > 128:
            return None
        with self.db.read_transaction() as session:
            row = session.get(PendingRow, _hash(handle))
            if row is None or row.expires_at <= self.db.now():
                return None
            tokens = self.vault.open(row.access_token_enc, row.refresh_token_enc, row.expires_at_token, row.scope)
            return Pending(OrcidId(row.orcid, row.environment == SANDBOX), row.verified, tokens, row.name, row.amr,
                           as_utc(row.created_at, "created_at"), row.origin)

    def mark_verified(self, handle: str, tokens: TokenSet) -> None:
        sealed = self.vault.seal(tokens)
        with self.db.transaction() as session:
            row = session.get(PendingRow, _hash(handle))
            if row is not None:
                row.verified = True
                row.access_token_enc = sealed.access_token
                row.refresh_token_enc = sealed.refresh_token
                row.expires_at_token = sealed.expires_at
                row.scope = sealed.scope

    def take(self, handle: str | None) -> Pending | None:
        """Return and delete the pending link (single use)."""
        pending = self.get(handle)
        if pending is None:
            return None
        with self.db.transaction() as session:
            deleted = session.execute(sa.delete(PendingRow).where(PendingRow.handle_hash == _hash(handle)))
            if not deleted.rowcount:
                return None  # someone else took it concurrently
        return pending

    def take_expired(self, limit: int = 50) -> list[TokenSet]:
        """Remove pending links that expired unfinished; returns their tokens so the caller
        can revoke them at ORCID (nothing we no longer hold stays valid there)."""
        now = self.db.now()
        with self.db.transaction() as session:
            rows = session.scalars(
                sa.select(PendingRow).where(PendingRow.expires_at <= now).limit(limit).with_for_update(skip_locked=True)
            ).all()
            tokens = []
            for row in rows:
                try:
                    tokens.append(self.vault.open(row.access_token_enc))
                except Exception:  # a key that was rotated away: nothing left to revoke with
                    pass
                session.delete(row)
        return tokens

    def delete(self, handle: str | None) -> None:
        if handle:
            with self.db.transaction() as session:
                session.execute(sa.delete(PendingRow).where(PendingRow.handle_hash == _hash(handle)))
