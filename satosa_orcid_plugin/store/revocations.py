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
from .schema import NOW, RevocationRow
from .vault import Vault

log = logging.getLogger(__name__)

LEASE_SECONDS = 30  # a revoke is one POST bounded by the ORCID timeouts (3 + 10 s by default)


@dataclass(frozen=True, repr=False)
class Revocation:
    id: int
    token: str
    orcid: str | None
    reason: str
    attempts: int

    def __repr__(self) -> str:  # never the token
        return f"Revocation(id={self.id}, reason={self.reason!r}, attempts={self.attempts})"


_TABLE = RevocationRow.__table__
# Core statements of the login path, prepared once (no ORM bulk-DML bookkeeping per call).
_WITHDRAW = sa.delete(_TABLE).where(
    _TABLE.c.id == sa.bindparam("rid"),
    sa.or_(_TABLE.c.lease_until.is_(None), _TABLE.c.lease_until <= NOW))
_INTEND = sa.insert(_TABLE).returning(_TABLE.c.id)
_ANY_DUE = sa.select(_TABLE.c.id).where(
    _TABLE.c.next_attempt_at <= NOW, sa.or_(_TABLE.c.lease_until.is_(None), _TABLE.c.lease_until <= NOW)).limit(1)


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

    def intend(self, token: str, *, orcid: OrcidId | str | None, reason: str, grace_seconds: float) -> int:
        """Write-ahead, before a link write: the token is revoked ``grace_seconds`` from now
        unless the link write takes the row back (:meth:`withdraw_in`); so a process killed
        between ORCID's answer and the link leaves no live token behind."""
        now = self.db.now()
        # One INSERT committed on its own (Core, no session): it must be durable before the
        # link's transaction starts, and needs no lock.
        row = self.db.write_one(_INTEND, dict(
            access_token_enc=self.vault.cipher.encrypt(token), orcid=str(orcid) if orcid is not None else None,
            reason=reason[:32], attempts=0, next_attempt_at=now + timedelta(seconds=grace_seconds),
            lease_until=None, last_error=None, created_at=now))
        return int(row.id)

    def withdraw_in(self, session: Session, rid: int) -> None:
        """Take back an :meth:`intend` row in the link's transaction; StoreError when a drain
        has already leased it (its token may be revoked by now: the link must not hold it)."""
        now = self.db.now()
        gone = session.connection().execute(_WITHDRAW, {"rid": rid, "now": now})
        if not gone.rowcount:
            raise StoreError("the grant was already given up (its revocation started); sign in again")

    def postpone(self, rid: int, *, reason: str, error: str, delay_seconds: float) -> None:
        """An :meth:`intend` row whose link failed and whose immediate revoke failed too: due
        after ``delay_seconds``, with why (StoreError when the database is away)."""
        now = self.db.now()
        with self.db.transaction() as session:
            row = session.get(RevocationRow, rid)
            if row is None:
                return
            row.reason, row.last_error = reason[:32], error[:500]
            row.next_attempt_at = now + timedelta(seconds=delay_seconds)
            self.db.audit(session, "revocation_queued", user_key=None, orcid=row.orcid,
                          detail={"reason": reason, "error": error})

    def withdraw(self, rid: int) -> None:
        """Drop a row whose token was revoked by other means (never raises for the database)."""
        try:
            with self.db.transaction() as session:
                session.execute(sa.delete(RevocationRow).where(RevocationRow.id == rid))
        except StoreError as exc:
            log.info("revocation %d stays queued (%s); its repeat at ORCID is harmless", rid, exc.code)

    def claim(self, limit: int, *, ids: tuple[int, ...] | None = None,
              lease_seconds: float = LEASE_SECONDS) -> list[Revocation]:
        """Lease up to ``limit`` due rows (or the rows ``ids``, due or not) for one revoke each.
        A row whose token no configured key decrypts is dropped (nothing left to revoke with)."""
        now = self.db.now()
        free = sa.or_(RevocationRow.lease_until.is_(None), RevocationRow.lease_until <= now)
        which = RevocationRow.id.in_(ids) if ids is not None else RevocationRow.next_attempt_at <= now
        claimed: list[Revocation] = []
        if ids is None and self.db.first(_ANY_DUE, {"now": now}) is None:
            return claimed  # nothing due: a read, not a write transaction (after every hop)
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

    def release(self, revocations: list[Revocation]) -> None:
        """Give back leases we did not use (the worker is stopping)."""
        if revocations:
            with self.db.transaction() as session:
                session.execute(sa.update(RevocationRow).where(RevocationRow.id.in_([r.id for r in revocations]))
                                .values(lease_until=None))

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
