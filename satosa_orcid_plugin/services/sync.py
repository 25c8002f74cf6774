"""The affiliation worker: drains the outbox into ORCID records through the member API.

``SyncWorker.run_once()`` processes every due item once (``satosa-orcid sync run --once``);
``run_forever(stop_event)`` loops around it (``satosa-orcid sync run``). Any number of workers
on any number of hosts may run against one PostgreSQL database: they lease rows with ``FOR
UPDATE SKIP LOCKED`` and share one rate-limit bucket in the database.

Per item (ORCID API v3.0 member API; ORCID-Source ``AffiliationsManagerImpl``):

* no put-code: commit ``posted_at``, POST, store the put-code from ``Location``; a 409 names
  the put-code of the item we already created (matched by our ``self`` external id): adopt it
  and PUT. An item that was already in flight (``posted_at`` set, the worker crashed or timed
  out before storing the put-code) is first looked for on ``/employments``.
* put-code and a changed desired state: PUT with the put-code in the body.
* affiliation gone: PUT with an ``end-date`` (or DELETE with ``on_leave: delete``).
* 401 ``invalid_token``, confirmed by ``OrcidClient.check_token``: the link is marked revoked,
  the item parked (unconfirmed: retried). 400: parked with
  ORCID's error code and message. 5xx, 503 (rate limit), timeouts: retried with exponential
  backoff and jitter, parked after ``max_attempts``.

Built by :func:`satosa_orcid_plugin.wiring.sync_worker`.
"""
from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Callable

from ..config import SyncSettings
from ..errors import (
    DuplicateItem,
    OrcidApiError,
    OrcidPluginError,
    OrcidProtocolError,
    OrcidUnavailable,
    OrcidValidationError,
    StoreError,
    TokenRevoked,
)
from ..orcid_client import OrcidClient
from ..orcid_records import affiliation_body
from ..store import ACTIVITIES_UPDATE, Item, Outbox, RateLimiter, utcnow
from .revocation import TokenRevoker

log = logging.getLogger(__name__)



@dataclass
class SyncReport:
    """What one ``run_once`` did (counts of items, and of requests sent to ORCID)."""

    claimed: int = 0
    posted: int = 0
    updated: int = 0
    ended: int = 0
    deleted: int = 0
    adopted: int = 0
    unchanged: int = 0
    retried: int = 0
    parked: int = 0
    revoked: int = 0
    released: int = 0
    requests: int = 0
    tokens_revoked: int = 0  # queued token revocations ORCID confirmed (not outbox items)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class SyncWorker:
    """Processes outbox items against ORCID.

    ``client`` is an :class:`OrcidClient` (its ``client_id`` identifies our items on the
    record), ``limiter`` the shared :class:`RateLimiter` (None: no limit, tests only),
    ``clock``/``rng`` are injectable for tests.
    """

    def __init__(
        self,
        client: OrcidClient,
        outbox: Outbox,
        settings: SyncSettings,
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: Callable[[], float] = random.random,
        owner: str | None = None,
        revoker: TokenRevoker | None = None,
    ) -> None:
        self.client = client
        self.revoker = revoker
        self.outbox = outbox
        self.settings = settings
        self.limiter = limiter
        self.clock = clock
        self.rng = rng
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}"
        self.client_id = client.settings.client_id
        self._stop: threading.Event | None = None

    def __repr__(self) -> str:
        return f"SyncWorker(owner={self.owner!r}, {self.outbox!r})"

    # --- loops ------------------------------------------------------------------------
    def run_once(self, now: datetime | None = None, *, max_items: int | None = None) -> SyncReport:
        """Process every item that is due (at ``now``, default the clock), then return."""
        report = SyncReport()
        if self.revoker is not None:  # tokens no link holds, whose revoke failed before
            report.tokens_revoked = self.revoker.drain(stopping=self._stopping)
        while not self._stopping():
            batch = self.outbox.claim(self.owner, self.settings.batch_size, self.settings.lease_seconds,
                                      now or self.clock())
            if not batch:
                break
            report.claimed += len(batch)
            # Items not started within half the lease are given back (and all of them when the
            # worker is told to stop); the one started gets a full lease of its own.
            deadline = time.monotonic() + self.settings.lease_seconds / 2
            for index, item in enumerate(batch):
                if self._stopping() or time.monotonic() > deadline:
                    self.outbox.release(batch[index:])
                    report.released += len(batch) - index
                    return report
                if index and not self.outbox.renew(item, self.settings.lease_seconds):
                    report.released += 1  # our lease ran out: someone else has it now
                    continue
                self.process(item, report, now)
            if max_items is not None and report.claimed >= max_items:
                break
        return report

    def run_forever(self, stop_event: threading.Event, on_report: Callable[[SyncReport], None] | None = None) -> None:
        """Loop until ``stop_event`` is set; idle ``poll_interval`` seconds when nothing is due."""
        self._stop = stop_event
        log.info("affiliation sync worker %s started", self.owner)
        while not stop_event.is_set():
            try:
                report = self.run_once()
            except OrcidPluginError as exc:  # the database is away: wait and try again
                log.warning("affiliation sync: %s: %s", exc.code, exc.message)
                stop_event.wait(self.settings.poll_interval)
                continue
            if report.claimed or report.tokens_revoked:
                log.info("affiliation sync: %s", " ".join(f"{k}={v}" for k, v in report.as_dict().items() if v))
                if on_report:
                    on_report(report)
            else:
                stop_event.wait(self.settings.poll_interval)
        log.info("affiliation sync worker %s stopped", self.owner)

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    # --- one item ---------------------------------------------------------------------
    def process(self, item: Item, report: SyncReport, now: datetime | None = None) -> None:
        label = f"item {item.id} ({item.kind})"
        try:
            try:
                tokens = self.outbox.tokens_for_link(item.link_id)
            except StoreError as exc:  # e.g. the key that encrypted the token was removed
                self._retry(item, report, exc.message, now)
                log.warning("affiliation sync: %s: cannot read the link's tokens: %s", label, exc.code)
                return
            if tokens is None:
                self._park(item, report, "the ORCID link is no longer active (revoked or unlinked); "
                                         "it is queued again when the researcher links again")
                return
            if ACTIVITIES_UPDATE not in tokens.scope:
                self._park(item, report, "the researcher's grant lacks /activities/update")
                return
            self._sync(item, tokens.access_token, report)
        except TokenRevoked:
            if not self.client.check_token(item.orcid, tokens).revoked:  # a 401 can be an introspection blip
                self._retry(item, report, "ORCID refused the access token once (401) but not when asked again", now)
                return
            self.outbox.revoke_link(item, "ORCID rejected the access token (401 invalid_token) during affiliation sync")
            self._park(item, report, "ORCID rejected the access token (401 invalid_token); the link is marked revoked")
            report.revoked += 1
            log.info("affiliation sync: %s: token revoked at ORCID; link marked revoked", label)
        except OrcidValidationError as exc:
            self._park(item, report, f"ORCID rejected the item ({exc.error_code}): {exc.developer_message}")
            log.warning("affiliation sync: %s parked: ORCID %s %s", label, exc.status, exc.error_code)
        except (OrcidUnavailable, OrcidProtocolError) as exc:
            self._retry(item, report, exc.message, now)
            log.info("affiliation sync: %s will be retried: %s", label, exc.code)
        except OrcidApiError as exc:
            self._park(item, report, f"ORCID answered HTTP {exc.status} ({exc.error_code}): {exc.developer_message}")
            log.warning("affiliation sync: %s parked: ORCID %s %s", label, exc.status, exc.error_code)

    def _sync(self, item: Item, token: str, report: SyncReport) -> None:
        orcid, kind = item.orcid, item.kind
        put_code = item.put_code
        adopted = False
        if put_code is None and item.posted_at is not None:
            # A POST was sent before and its answer never stored: it may be on the record.
            put_code = self._recover(item, token, report)
            if put_code is not None:
                self.outbox.adopt_put_code(item, put_code)
                report.adopted += 1
                adopted = True

        if not item.present:
            if put_code is None:  # never reached the record: nothing to end
                self.outbox.complete(item, put_code=None)
                report.unchanged += 1
            elif item.desired.get("delete"):
                try:
                    self._call(report, self.client.delete_affiliation, orcid, kind, put_code, token)
                except OrcidApiError as exc:
                    if exc.status != 404:
                        raise
                self.outbox.complete(item, put_code=None, wrote="delete")
                report.deleted += 1
            elif self._put(item, put_code, token, report):
                self.outbox.complete(item, put_code=put_code, wrote="end")
                report.ended += 1
            return

        if put_code is None:
            if not self.outbox.mark_posting(item):
                report.released += 1  # our lease ran out: someone else has it now
                return
            body = affiliation_body(item.desired, item.self_id)
            try:
                put_code = self._call(report, self.client.post_affiliation, orcid, kind, body, token)
            except DuplicateItem as dup:
                put_code = dup.put_code
                self.outbox.adopt_put_code(item, put_code)
                report.adopted += 1
                adopted = True
            else:
                self.outbox.complete(item, put_code=put_code, wrote="post")
                report.posted += 1
                return

        if not adopted and item.synced_hash == item.desired_hash:
            self.outbox.complete(item, put_code=put_code)
            report.unchanged += 1
            return
        if self._put(item, put_code, token, report):
            self.outbox.complete(item, put_code=put_code, wrote="put")
            report.updated += 1

    def _put(self, item: Item, put_code: int, token: str, report: SyncReport) -> bool:
        body = affiliation_body(item.desired, item.self_id, put_code=put_code)
        try:
            self._call(report, self.client.put_affiliation, item.orcid, item.kind, put_code, body, token)
        except OrcidApiError as exc:
            if exc.status != 404:
                raise
            # The researcher deleted our item on orcid.org: respect that until an admin resyncs.
            self._park(item, report, "the item is no longer on the ORCID record (deleted there?); "
                                     "`satosa-orcid affiliations resync USER` adds it again", forget_put_code=True)
            return False
        return True

    def _recover(self, item: Item, token: str, report: SyncReport) -> int | None:
        summaries = self._call(report, self.client.list_affiliations, item.orcid, item.kind, token)
        mine = sorted(
            s.put_code for s in summaries if s.source_client_id == self.client_id and s.has_self_id(item.self_id)
        )
        if len(mine) > 1:
            log.warning("affiliation sync: item %d: %d items on the record carry our self id; keeping put-code %d",
                        item.id, len(mine), mine[0])
        return mine[0] if mine else None

    def _call(self, report: SyncReport, fn: Callable[..., Any], *args: Any) -> Any:
        if self.limiter is not None:
            self.limiter.acquire()
        report.requests += 1
        return fn(*args)

    def _park(self, item: Item, report: SyncReport, reason: str, *, forget_put_code: bool = False) -> None:
        self.outbox.park(item, reason, forget_put_code=forget_put_code)
        report.parked += 1

    def _retry(self, item: Item, report: SyncReport, error: str, now: datetime | None) -> None:
        attempts = max(item.attempts, 1)
        if attempts >= self.settings.max_attempts:
            self._park(item, report, f"gave up after {attempts} attempts: {error}")
            return
        delay = min(self.settings.backoff_max, self.settings.backoff_base * 2 ** (attempts - 1))
        delay *= 0.5 + self.rng()  # jitter: workers that failed together do not retry together
        self.outbox.retry(item, error, (now or self.clock()) + timedelta(seconds=delay))
        report.retried += 1


__all__ = ["SyncWorker", "SyncReport"]
