"""Decisions: a user's "not now" (until a time) or "never" to linking an ORCID iD."""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .database import Database
from .schema import DECISIONS, GLOBAL_ISSUER, NEVER, NOT_NOW, DecisionRow, as_utc, check_issuer


_FORGET = sa.delete(DecisionRow.__table__).where(DecisionRow.__table__.c.user_key == sa.bindparam("key"),
                                                  DecisionRow.__table__.c.issuer == sa.bindparam("issuer"))


class Decisions:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"Decisions({self.db!r})"

    def record(self, user_key: str, decision: str, until: datetime | None, session_id: str | None = None, *,
               issuer: str = GLOBAL_ISSUER) -> None:
        """Remember that the user (``user_key`` asserted by ``issuer``) said "not now" (until a
        time) or "never"."""
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
        if decision == NOT_NOW and until is None:
            raise ValueError("a 'not_now' decision needs an 'until' time")
        until = as_utc(until, "until") if until is not None else None
        key = self.db.stored_user_key(user_key)
        now = self.db.now()
        stmt = self.db.upsert(DecisionRow).values(user_key=key, issuer=check_issuer(issuer), decision=decision, until=until,
                                                  created_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[DecisionRow.user_key, DecisionRow.issuer],
            set_={"decision": stmt.excluded.decision, "until": stmt.excluded.until, "created_at": stmt.excluded.created_at},
        )
        with self.db.transaction() as session:
            session.execute(stmt)
            self.db.audit(
                session, "decline", user_key=key, session_id=session_id,
                detail={"decision": decision, "until": until.isoformat() if until else None, "issuer": issuer},
            )

    def get(self, user_key: str, now: datetime, *, issuer: str = GLOBAL_ISSUER) -> str | None:
        """``"never"``, ``"not_now"`` while its period lasts, else None."""
        now = as_utc(now, "now")
        row = self.db.scalar(sa.select(DecisionRow).where(DecisionRow.user_key == self.db.stored_user_key(user_key),
                                                          DecisionRow.issuer == check_issuer(issuer)))
        return self.in_force(row.decision, row.until, now) if row is not None else None

    @staticmethod
    def in_force(decision: str | None, until: datetime | None, now: datetime) -> str | None:
        """A stored decision as it stands at ``now``: "never", "not_now" while it runs, else None."""
        if decision == NEVER:
            return NEVER
        return NOT_NOW if decision == NOT_NOW and until is not None and until > now else None

    def clear(self, user_key: str, *, issuer: str = GLOBAL_ISSUER) -> None:
        key = self.db.stored_user_key(user_key)
        with self.db.transaction() as session:
            if self.forget(session, key, issuer):
                self.db.audit(session, "decision_cleared", user_key=key, detail={"issuer": issuer})

    def issuers_of(self, user_key: str) -> list[str]:
        """The issuers under which this user key has a decision, sorted."""
        key = self.db.stored_user_key(user_key)
        return sorted(self.db.scalars(sa.select(DecisionRow.issuer).where(DecisionRow.user_key == key)))

    @staticmethod
    def forget(session: Session, key: str, issuer: str) -> int:
        """Delete the decision of a (stored) user key of ``issuer`` in ``session``'s transaction
        (a new link answers it); the number of rows deleted."""
        # Core on the session's connection: no ORM bulk-delete bookkeeping on the link path
        return session.connection().execute(_FORGET, {"key": key, "issuer": check_issuer(issuer)}).rowcount

    def counts(self, session: Session, now: datetime) -> tuple[int, int]:
        """(``not_now`` decisions still running at ``now``, ``never`` decisions)."""
        not_now = session.scalar(
            sa.select(sa.func.count()).select_from(DecisionRow)
            .where(DecisionRow.decision == NOT_NOW, DecisionRow.until > now)
        )
        never = session.scalar(sa.select(sa.func.count()).select_from(DecisionRow).where(DecisionRow.decision == NEVER))
        return not_now or 0, never or 0
