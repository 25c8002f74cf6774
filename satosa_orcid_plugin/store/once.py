"""Single-use markers: an OAuth callback state, or a state-less connect code, is processed at
most once across every proxy instance sharing the database."""
from __future__ import annotations

import functools
import secrets
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .database import Database
from .schema import NOW, OnceRow, as_utc


_REAP = sa.delete(OnceRow).where(OnceRow.expires_at <= NOW)


class Once:
    def __init__(self, db: Database) -> None:
        self.db = db

    def __repr__(self) -> str:
        return f"Once({self.db!r})"

    def consume(self, key: str, expires_at: datetime) -> bool:
        """True the first time ``key`` is presented (until ``expires_at``), False on every replay.

        One statement, committed on its own before the caller goes on (the callback's code
        exchange must not start before the claim is durable): insert the marker, or take over
        an expired one with the same key; a live one changes nothing (no row returned): a replay."""
        if not key or len(key) > 128:
            raise ValueError("key must be 1-128 characters")
        expires_at = as_utc(expires_at, "expires_at")
        now = self.db.now()
        if self.db.write_one(self._claim, {"key": key, "expires_at": expires_at, "now": now}) is None:
            return False
        if secrets.randbelow(100) == 0:  # keep the table small without a cron job
            self.db.write_one(_REAP, {"now": now})
        return True

    @functools.cached_property
    def _claim(self) -> Any:
        insert = self.db.upsert(OnceRow).values(key=sa.bindparam("key"), expires_at=sa.bindparam("expires_at"))
        return insert.on_conflict_do_update(
            index_elements=[OnceRow.key], set_={"expires_at": insert.excluded.expires_at},
            where=OnceRow.expires_at <= NOW).returning(OnceRow.key)

    def release(self, key: str) -> None:
        """Forget ``key`` (a code ORCID refused: its own single use guards it from here on)."""
        with self.db.transaction() as session:
            session.execute(sa.delete(OnceRow).where(OnceRow.key == key))
