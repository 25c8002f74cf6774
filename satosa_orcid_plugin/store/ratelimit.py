"""One token bucket in the database, shared by every worker on every host.

ORCID's member API limits each client to 24 requests/s with bursts of 40
(https://info.orcid.org/ufaqs/what-are-the-api-limits/), however many processes send them.
The bucket is one row: a worker takes a token in a short transaction that locks the row
(PostgreSQL ``SELECT ... FOR UPDATE``; SQLite ``BEGIN IMMEDIATE``, which serialises all
writers), refills it from the elapsed time and either takes a token or learns how long to
wait. On PostgreSQL the time is the database's ``clock_timestamp()``, so hosts with skewed
clocks still share one consistent bucket::

    limiter = store.rate_limiter(rate=22, burst=36)
    limiter.acquire()          # blocks until a request may be sent
"""
from __future__ import annotations

import logging
import random
import time
from typing import Callable

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import StoreError
from .database import Database
from .schema import RateBucketRow

log = logging.getLogger(__name__)

DEFAULT_BUCKET = "orcid-member-api"
MAX_SINGLE_WAIT = 5.0


class RateLimiter:
    """A token bucket of ``burst`` tokens refilled at ``rate`` per second, kept in the
    database. ``clock`` (epoch seconds) defaults to the database clock on PostgreSQL and
    ``time.time`` on SQLite; ``sleep`` is injectable for tests."""

    def __init__(
        self,
        db: Database,
        *,
        rate: float,
        burst: int,
        name: str = DEFAULT_BUCKET,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.db = db
        self.rate = float(rate)
        self.burst = float(burst)
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self.waited = 0.0  # total seconds spent waiting (for reports and tests)

    def __repr__(self) -> str:
        return f"RateLimiter({self.name!r}, rate={self.rate:g}/s, burst={self.burst:g})"

    def acquire(self, timeout: float | None = None) -> bool:
        """Take one token, waiting as long as needed (or up to ``timeout`` seconds: False then)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = self.try_acquire()
            if wait <= 0:
                return True
            # A little jitter so that workers woken together do not collide on the row lock.
            wait = min(wait, MAX_SINGLE_WAIT) * (1 + random.random() * 0.1)
            if deadline is not None and time.monotonic() + wait > deadline:
                return False
            self.waited += wait
            self._sleep(wait)

    def try_acquire(self) -> float:
        """Take a token now and return 0, or return the seconds until one will be there."""
        for attempt in (1, 2):
            try:
                with self.db.transaction(raw_integrity=True) as session:
                    return self._take(session)
            except IntegrityError:
                # Two processes created the row at once; the loser reads the winner's row.
                if attempt == 2:
                    raise StoreError("rate limit bucket could not be created") from None
        raise AssertionError("unreachable")

    def _now(self, session: Session) -> float:
        return self._clock() if self._clock is not None else self.db.epoch_seconds(session)

    def _take(self, session: Session) -> float:
        row = session.scalar(
            sa.select(RateBucketRow).where(RateBucketRow.name == self.name).with_for_update()
        )
        now = self._now(session)
        if row is None:
            row = RateBucketRow(name=self.name, tokens=self.burst, refilled_at=now)
            session.add(row)
            session.flush()
        elapsed = max(0.0, now - row.refilled_at)  # a clock that went back refills nothing
        tokens = min(self.burst, row.tokens + elapsed * self.rate)
        row.refilled_at = max(now, row.refilled_at)
        if tokens >= 1.0:
            row.tokens = tokens - 1.0
            return 0.0
        row.tokens = tokens
        return (1.0 - tokens) / self.rate

    def forget_refilled(self, prefix: str) -> int:
        """Delete the buckets named ``prefix``... (of this rate and burst) that have refilled
        completely: a full bucket and no bucket are the same, and per-client buckets would
        otherwise pile up one row per address ever seen."""
        with self.db.transaction() as session:
            now = self._now(session)
            result = session.execute(sa.delete(RateBucketRow).where(
                RateBucketRow.name.startswith(prefix, autoescape=True),
                RateBucketRow.refilled_at + (self.burst - RateBucketRow.tokens) / self.rate <= now))
        return int(result.rowcount or 0)

    def reset(self) -> None:
        """Forget the bucket (tests, or after changing the rate)."""
        try:
            with self.db.transaction() as session:
                session.execute(sa.delete(RateBucketRow).where(RateBucketRow.name == self.name))
        except SQLAlchemyError as exc:  # pragma: no cover - transaction() already translates
            raise StoreError(str(exc)) from exc
