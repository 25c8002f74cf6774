"""Tokens no link holds are revoked at ORCID: at once where possible, else by a stored retry.

ORCID issues a token at every code exchange. When the link that should hold it is not written
(the database failed, the iD belongs to someone else, the pending grant was given up) or a new
grant replaces it, the token would otherwise stay valid at ORCID with nobody able to use or
revoke it. :meth:`TokenRevoker.give_up` posts it to ``/oauth/revoke`` (RFC 7009; ORCID answers
200 for a token it no longer knows, so a repeat is harmless) and, when that fails, stores it
encrypted in the ``orcid_revocations`` table; :meth:`TokenRevoker.drain` retries those with
exponential backoff. It runs after completed hops (a few rows, on the proxy; when it found
nothing due, a process looks again after ``HOUSEKEEPING_QUIET_SECONDS``) and in every round
of the affiliation worker (``satosa-orcid sync run``).

Every outcome is counted in ``satosa_orcid_tokens_revoked_total{reason,result}`` and audited
(``token_revoked``, ``revocation_queued``, ``revocation_abandoned``) when the database answers.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Callable

from ..errors import OrcidError, StoreError
from ..metrics import record_revocation
from ..orcid_client import OrcidClient
from ..orcid_id import OrcidId
from ..store import Revocation, Store

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 6 * 3600.0
MAX_ATTEMPTS = 20  # about four days of retries at the capped backoff
HOUSEKEEPING_LIMIT = 3  # rows a login drains besides its own
# After a look that found nothing due, a process's next hops do not look again for this long:
# on a busy proxy, one read per quiet period instead of one per hop. A row that becomes due
# meanwhile waits at most this much longer (its backoff is BACKOFF_BASE_SECONDS or more, and
# the affiliation worker drains without waiting).
HOUSEKEEPING_QUIET_SECONDS = 10.0
# A link write is bounded by the store's time budget (seconds); a write-ahead row becomes due
# only well after that, so a drain never races a link write that is still running.
INTENT_GRACE_SECONDS = 300.0


class TokenRevoker:
    def __init__(self, client: OrcidClient, store: Store) -> None:
        self.client = client
        self.store = store
        self._quiet_until = 0.0  # time.monotonic(): nothing was due at the last look

    def __repr__(self) -> str:
        return f"TokenRevoker({self.store!r})"

    def intend(self, token: str, *, orcid: OrcidId | str | None) -> int:
        """Before a link write: a stored promise to revoke ``token`` unless the link takes it
        (StoreError when the database is away; the link would fail too)."""
        return self.store.revocations.intend(token, orcid=orcid, reason="link_interrupted",
                                             grace_seconds=INTENT_GRACE_SECONDS)

    def give_up(self, token: str | None, *, orcid: OrcidId | str | None, reason: str,
                intent: int | None = None) -> bool:
        """Revoke ``token`` at ORCID now; when ORCID does not confirm, store it for a retry
        (or keep its write-ahead row ``intent``). Never raises. True when ORCID confirmed."""
        if not token:
            return False
        try:
            self.client.revoke(token)
        except OrcidError as exc:
            error = f"{exc.code}: {exc.message}"
        else:
            record_revocation(reason, "revoked")
            self._audit("token_revoked", orcid, reason=reason, queued=False)
            if intent is not None:
                self.store.revocations.withdraw(intent)
            return True
        try:
            if intent is not None:  # the write-ahead row is there: give it the reason and a sooner retry
                self.store.revocations.postpone(intent, reason=reason, error=error, delay_seconds=BACKOFF_BASE_SECONDS)
            else:
                self.store.revocations.add(token, orcid=orcid, reason=reason, error=error,
                                           delay_seconds=BACKOFF_BASE_SECONDS)
        except StoreError as exc:
            if intent is not None:  # the row is stored: it is retried after the grace period
                log.warning("revoking an ORCID token (%s) failed (%s); its stored revocation will retry", reason, error)
                record_revocation(reason, "queued")
                return False
            # Neither ORCID nor the database answered: the token stays valid at ORCID until it
            # expires or the researcher revokes it (orcid.org > Trusted parties).
            log.error("an ORCID token (%s, iD %s) could not be revoked (%s) nor queued for a retry (%s)",
                      reason, orcid or "unknown", error, exc.code)
            record_revocation(reason, "lost")
            return False
        log.warning("revoking an ORCID token (%s) failed (%s); queued for a retry", reason, error)
        record_revocation(reason, "queued")
        return False

    def drain(self, limit: int = 50, *, ids: tuple[int, ...] | None = None,
              stopping: Callable[[], bool] | None = None) -> int:
        """Revoke due queued tokens (or the rows ``ids``); returns how many ORCID confirmed.
        When ``stopping()`` turns true, the rows not tried yet are given back at once.
        Raises StoreError when the database is away (the callers decide whether that matters)."""
        return self._attempt_all(self.store.revocations.claim(limit, ids=ids), stopping)

    def _attempt_all(self, claimed: list[Revocation], stopping: Callable[[], bool] | None = None) -> int:
        done = 0
        for index, item in enumerate(claimed):
            if stopping is not None and stopping():
                self.store.revocations.release(claimed[index:])
                break
            done += self._attempt(item)
        return done

    def housekeeping(self, ids: tuple[int, ...] = ()) -> int:
        """After a link write: its own superseded tokens, then a few due ones (unless the last
        look, less than ``HOUSEKEEPING_QUIET_SECONDS`` ago, found none). Never raises."""
        try:
            done = self.drain(len(ids), ids=ids) if ids else 0
            if time.monotonic() < self._quiet_until:
                return done
            claimed = self.store.revocations.claim(HOUSEKEEPING_LIMIT)
            if not claimed:
                self._quiet_until = time.monotonic() + HOUSEKEEPING_QUIET_SECONDS
            return done + self._attempt_all(claimed)
        except StoreError as exc:
            log.warning("token revocation housekeeping skipped: %s", exc.code)
            return 0

    def _attempt(self, item: Revocation) -> int:
        try:
            self.client.revoke(item.token)
        except OrcidError as exc:
            error = f"{exc.code}: {exc.message}"
            attempts = item.attempts + 1
            if attempts >= MAX_ATTEMPTS:
                log.error("giving up revoking an ORCID token (%s, iD %s) after %d attempts: %s",
                          item.reason, item.orcid or "unknown", attempts, error)
                self.store.revocations.give_up(item, error)
                record_revocation(item.reason, "abandoned")
                return 0
            delay = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
            self.store.revocations.retry(item, error, self.store.db.now() + timedelta(seconds=delay))
            record_revocation(item.reason, "retried")
            return 0
        self.store.revocations.done(item)
        record_revocation(item.reason, "revoked")
        return 1

    def _audit(self, event: str, orcid: OrcidId | str | None, **detail: object) -> None:
        try:
            self.store.db.append_audit(event, orcid=orcid, **detail)
        except StoreError as exc:
            log.info("audit of %s skipped: %s", event, exc.code)


__all__ = ["TokenRevoker"]
