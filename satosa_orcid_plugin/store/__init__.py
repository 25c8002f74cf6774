"""The link store: links and their encrypted tokens, decisions, the affiliation outbox,
pending links, single-use markers and the shared rate-limit bucket, over one database.

::

    store = Store.from_url("sqlite:///var/orcid.sqlite", TokenCipher.from_keys(keys))
    store.db.upgrade()                                # alembic migrations, safe at start-up
    store.links.link("alice@example.org", OrcidId.parse("0000-0002-1825-0097"), tokens)
    store.links.get_active("alice@example.org")       # the fast path of every login

``db`` (:class:`Database`) owns engines, transactions, locks, audit rows and migrations;
each other attribute is the repository of one aggregate and uses only ``db`` (and the
``vault`` for tokens). No module outside this package touches a session or a row class.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from ..tokens import TokenCipher
from .database import BACKGROUND_BUDGET, HEAD_REVISION, MIGRATIONS_DIR, VERSION_TABLE, Budget, Database
from .decisions import Decisions
from .links import Link, Links
from .once import Once
from .outbox import ACTIVITIES_UPDATE, Item, Outbox
from .pending import Pending, PendingLinks
from .revocations import Revocation, Revocations
from .ratelimit import DEFAULT_BUCKET, RateLimiter
from .schema import (ACTIVE, DECISIONS, DONE, ENVIRONMENTS, GLOBAL_ISSUER, ITEM_STATUSES, NEVER, NOT_NOW, PARKED, PRODUCTION, QUEUED,
                     RETRY, REVOKED, SANDBOX, STATUSES, UNLINKED, utcnow)
from .vault import Vault


class Store:
    """The store's repositories over one :class:`Database`; build it with :meth:`from_url`."""

    def __init__(self, db: Database, cipher: TokenCipher) -> None:
        self.db = db
        self.vault = Vault(db, cipher)
        self.decisions = Decisions(db)
        self.revocations = Revocations(db, self.vault)
        self.links = Links(db, self.vault, self.decisions, self.revocations)
        self.outbox = Outbox(db, self.links)
        self.pending = PendingLinks(db, self.vault)
        self.once = Once(db)

    @classmethod
    def from_url(
        cls,
        database_url: str,
        cipher: TokenCipher,
        *,
        user_key_secret: bytes | None = None,
        instance: str | None = None,
        clock: Callable[[], datetime] = utcnow,
        budget: Budget = BACKGROUND_BUDGET,
    ) -> "Store":
        db = Database.from_url(database_url, budget=budget, user_key_secret=user_key_secret, instance=instance,
                               clock=clock)
        return cls(db, cipher)

    def __repr__(self) -> str:
        return f"Store({self.db.engine.url.render_as_string(hide_password=True)!r})"

    def rate_limiter(self, *, rate: float, burst: int, name: str = DEFAULT_BUCKET, **options: Any) -> RateLimiter:
        """The token bucket ``name`` in this database, shared by every process using it
        (``options``: ``clock`` and ``sleep`` of :class:`RateLimiter`, for tests)."""
        return RateLimiter(self.db, rate=rate, burst=burst, name=name, **options)


__all__ = [
    "Store", "Database", "Budget", "BACKGROUND_BUDGET", "Link", "Item", "Pending", "Outbox", "RateLimiter",
    "Revocation", "Revocations",
    "ACTIVE", "REVOKED", "UNLINKED", "STATUSES", "PRODUCTION", "SANDBOX", "ENVIRONMENTS",
    "NOT_NOW", "NEVER", "DECISIONS", "GLOBAL_ISSUER", "QUEUED", "RETRY", "DONE", "PARKED", "ITEM_STATUSES",
    "ACTIVITIES_UPDATE", "HEAD_REVISION", "MIGRATIONS_DIR", "VERSION_TABLE", "utcnow",
]
