"""Revocations: tokens ORCID issued that no link holds, waiting to be revoked at ORCID.

A row is written when a revoke at ORCID failed (ORCID down, a timeout), and by
:meth:`Links.link` in its own transaction for the tokens a new grant replaces, so a token
leaves a link only together with a durable promise to revoke it. The access token is
encrypted like a link's (through the vault); revoking it revokes its refresh token too
(RFC 7009 section 2.1; ORCID-Source ``OrcidTokenStoreServiceImpl`` disables the token row,
which holds both). Workers lease due rows (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so any
number of proxies and sync workers may drain the same table.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..errors import StoreError
from ..orcid_id import OrcidId
from .database import Database
from .schema import RevocationRow
from .vault import Vault

log = logging.getLogger(__name__)

LEASE_SECONDS = 60  # a revoke is one POST bounded by the ORCID timeouts


@dataclass(frozen=True, repr=False)
class Revocation:
    id: int
    token: str
    orcid: str | None
    reason: str
    attempts: int

    def __repr__(self) -> str:  # never the token
        return f"Revocation(id={self.id}, reason={self.reason!r}, attempts={self.attempts})"


class Revocations:
    def __init__(self, db: Database, vault: Vault) -> None:
        self.db = db
        self.vault = vault

    def __repr__(self) -> str:
        return f"Revocations({self.db!r})"

    def add_in(self, session: Session, token: str, *, orcid: OrcidId | str | None, reason: str,
               now: datetime, due: datetime | None = None, error: str | None = None) -> int:
        """Queue ``token`` in ``session``'s transaction (due at ``due``, default at once);
        returns the row id."""
        row = RevocationRow(access_token_enc=self.vault.cipher.encrypt(token),
                            orcid=str(orcid) if orcid is not None else None, reason=reason[:32], attempts=0,
                            next_attempt_at=due or now, lease_until=None, last_error=error, created_at=now)
        session.add(row)
        session.flush()
        return row.id

    def add(self, token: str, *, orcid: OrcidId | str | None, reason: str, error: str | None = None,
            delay_seconds: float = 0) -> int:
        """Queue ``token`` in its own transaction (StoreError when the database is away)."""
        now = self.db.now()
        with self.db.transaction() as session:
            rid = self.add_in(session, token, orcid=orcid, reason=reason, now=now, error=error,
                              due=now + timedelta(seconds=delay_seconds))
            self.db.audit(session, "revocation_queued", user_key=None, orcid=orcid,
                          detail={"reason": reason, "error": error})
        return rid

    def claim(self, limit: int, *, ids: tuple[int, ...] | None = None,
              lease_seconds: float = LEASE_SECONDS) -> list[Revocation]:
        """Lease up to ``limit`` due rows (or the rows ``ids``, due or not) for one revoke each.
        A row whose token no configured key decrypts is dropped (nothing left to revoke with)."""
        now = self.db.now()
        free = sa.or_(RevocationRow.lease_until.is_(None), RevocationRow.lease_until <= now)
        which = RevocationRow.id.in_(ids) if ids is not None else RevocationRow.next_attempt_at <= now
        claimed: list[Revocation] = []
        with self.db.transaction() as session:
            rows = session.scalars(
                sa.select(RevocationRow).where(which, free).order_by(RevocationRow.next_attempt_at)
                .limit(limit).with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                try:
                    token = self.vault.cipher.decrypt(row.access_token_enc)
                except StoreError:
                    log.warning("revocation %d: the token cannot be decrypted (key removed?); dropped", row.id)
                    self.db.audit(session, "revocation_dropped", user_key=None, orcid=row.orcid,
                                  detail={"reason": row.reason, "why": "undecryptable"})
                    session.delete(row)
                    continue
                row.lease_until = now + timedelta(seconds=lease_seconds)
                claimed.append(Revocation(row.id, token, row.orcid, row.reason, row.attempts))
        return claimed

    def done(self, revocation: Revocation) -> None:
        """ORCID revoked the token: forget it."""
        with self.db.transaction() as session:
            session.execute(sa.delete(RevocationRow).where(RevocationRow.id == revocation.id))
            self.db.audit(session, "token_revoked", user_key=None, orcid=revocation.orcid,
                          detail={"reason": revocation.reason, "attempts": revocation.attempts + 1, "queued": True})

    def retry(self, revocation: Revocation, error: str, at: datetime) -> None:
        with self.db.transaction() as session:
            row = session.get(RevocationRow, revocation.id)
            if row is not None:
                row.attempts = revocation.attempts + 1
                row.next_attempt_at = at
                row.lease_until = None
                row.last_error = error[:500]

    def give_up(self, revocation: Revocation, error: str) -> None:
        with self.db.transaction() as session:
            session.execute(sa.delete(RevocationRow).where(RevocationRow.id == revocation.id))
            self.db.audit(session, "revocation_abandoned", user_key=None, orcid=revocation.orcid,
                          detail={"reason": revocation.reason, "attempts": revocation.attempts + 1, "error": error})

    def waiting(self) -> int:
        """Rows still waiting (for dashboards and tests)."""
        return int(self.db.scalar(sa.select(sa.func.count()).select_from(RevocationRow)) or 0)
