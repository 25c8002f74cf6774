"""Parked logins: what a login in the middle of an ORCID hop needs to resume (SATOSA's
``InternalData`` with every attribute, the OAuth state and nonce, the user), kept here while
the browser is away, so SATOSA's state cookie carries only a handle.

Browsers drop cookies over 4096 bytes (RFC 6265 section 6.1) and SATOSA keeps its whole
flow in one cookie; a login with a long group list (``isMemberOf``, ``eduPersonEntitlement``)
would not fit. Rows are encrypted with the token keys (the attributes are personal data),
expire with the hop (``flow_ttl``), are taken once (a second read of the same handle finds
nothing), and are shared by every worker and instance using the database. Only a hash of the
handle is stored: a database dump does not name any browser's login.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ..errors import StoreError
from ..tokens import TokenCipher
from .database import Database
from .schema import NOW, ParkedRow

HANDLE_BYTES = 24  # 32 URL-safe characters in the cookie
MAX_HANDLE = 64


# The hop's two statements, prepared once (Core, no ORM unit of work).
_PARKED = ParkedRow.__table__
_PARK = sa.insert(_PARKED)
_TAKE = (sa.delete(_PARKED).where(_PARKED.c.handle_hash == sa.bindparam("handle_hash"))
         .returning(_PARKED.c.data_enc, _PARKED.c.expires_at))
_PURGE = sa.delete(_PARKED).where(_PARKED.c.expires_at <= NOW)


def _hash(handle: str) -> str:
    return hashlib.sha256(b"parked|" + handle.encode()).hexdigest()


class ParkedLogins:
    def __init__(self, db: Database, cipher: TokenCipher) -> None:
        self.db = db
        self.cipher = cipher

    def __repr__(self) -> str:
        return f"ParkedLogins({self.db!r})"

    def park(self, payload: dict[str, Any], ttl: int) -> str:
        """Keep ``payload`` (JSON-able) for ``ttl`` seconds; returns the handle for the cookie."""
        handle = secrets.token_urlsafe(HANDLE_BYTES)
        sealed = self.cipher.encrypt(json.dumps(payload, separators=(",", ":")))
        now = self.db.now()
        # One statement committed on its own (no lock: the handle is new), like the take.
        self.db.write_one(_PARK, {"handle_hash": _hash(handle), "data_enc": sealed, "created_at": now,
                                  "expires_at": now + timedelta(seconds=ttl)})
        if secrets.randbelow(50) == 0:  # keep the table small without a cron job
            self.db.write_one(_PURGE, {"now": now})
        return handle

    def get(self, handle: str | None) -> dict[str, Any] | None:
        """The parked payload, or None when there is none (never parked, taken, expired)."""
        if not handle or len(handle) > MAX_HANDLE:
            return None
        with self.db.read_transaction() as session:
            row = session.get(ParkedRow, _hash(handle))
            if row is None or row.expires_at <= self.db.now():
                return None
            return self._open(row.data_enc)

    def take(self, handle: str | None) -> dict[str, Any] | None:
        """Return and delete the payload (single use: whoever deletes the row gets it, in one
        statement: DELETE ... RETURNING, PostgreSQL and SQLite 3.35+)."""
        if not handle or len(handle) > MAX_HANDLE:
            return None
        row = self.db.write_one(_TAKE, {"handle_hash": _hash(handle)})
        if row is None or row.expires_at <= self.db.now():
            return None  # never parked, taken already (a double-submitted callback), or expired
        return self._open(row.data_enc)

    def discard(self, handle: str | None) -> None:
        if handle and len(handle) <= MAX_HANDLE:
            with self.db.transaction() as session:
                session.execute(sa.delete(ParkedRow).where(ParkedRow.handle_hash == _hash(handle)))

    def purge_expired(self) -> int:
        with self.db.transaction() as session:
            return session.execute(_PURGE, {"now": self.db.now()}).rowcount or 0

    def _open(self, sealed: str) -> dict[str, Any] | None:
        try:
            payload = json.loads(self.cipher.decrypt(sealed))
        except (StoreError, ValueError):  # no configured key opens it (rotated away): it cannot resume
            return None
        return payload if isinstance(payload, dict) else None
