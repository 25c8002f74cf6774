"""Single-use markers: an OAuth callback state, or a state-less connect code, is processed at
most once across every proxy instance sharing the database."""
from __future__ import annotations

import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .database import Database
from .schema import OnceRow, as_utc


class Once:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"Once({self.db!r})"

    def consume(self, key: str, expires_at: datetime) -> bool:
        """True the first time ``key`` is presented (until ``expires_at``), False on every replay."""
        if not key or len(key) > 128:
            raise ValueError("key must be 1-128 characters")
        expires_at = as_utc(expires_at, "expires_at")
        now = self.db.now()
        try:
            with self.db.transaction(raw_integrity=True) as session:
                session.execute(sa.delete(OnceRow).where(OnceRow.key == key, OnceRow.expires_at <= now))
                session.add(OnceRow(key=key, expires_at=expires_at))
        except IntegrityError:
            return False
        if secrets.randbelow(100) == 0:  # keep the table small without a cron job
            with self.db.transaction() as session:
                session.execute(sa.delete(OnceRow).where(OnceRow.expires_at <= now))
        return True

    def release(self, key: str) -> None:
        """Forget ``key`` (a code ORCID refused: its own single use guards it from here on)."""
        with self.db.transaction() as session:
            session.execute(sa.delete(OnceRow).where(OnceRow.key == key))
