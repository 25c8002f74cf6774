"""The affiliation outbox: what should be on each linked ORCID record, and how far we got.

One row per (user, iD, kind). The login side only ever writes rows (in the link's own
transaction, or after one indexed read on the fast path when something changed); the worker
(``sync.py``) claims due rows, talks to ORCID and records the outcome. Nothing here does HTTP.

Row life cycle::

    queued --claim--> (leased) --201/200/204--> done
                               --5xx/503/timeout--> retry (backoff) --> ... --> parked
                               --400/401/403--> parked (with ORCID's message)
    any --login changes what should be on the record--> queued

Crash safety: before a POST the worker commits ``posted_at``; a row with ``posted_at`` and
no put-code may already exist on ORCID, so the next attempt first looks for our own ``self``
external id on ``/employments`` (or ``/educations``) before posting again.

Usage (the proxy, after a link or on a returning login)::

    store.links.link(user, orcid, tokens, extra=store.outbox.link_extra(settings, attributes))
    store.outbox.on_login(settings, user, attributes)      # fast path: one indexed read
"""
from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..affiliations import (KINDS, AffiliationSettings, desired_items, gone_state, present_state, self_external_id,
                            state_hash)
from ..errors import OrcidPluginError
from ..tokens import TokenSet
from .database import Database
from .links import LinkExtra, Links
from .schema import ACTIVE, DONE, GLOBAL_ISSUER, IS_ACTIVE, ITEM_STATUSES, PARKED, QUEUED, RETRY, AffiliationRow, LinkRow

log = logging.getLogger(__name__)

ACTIVITIES_UPDATE = "/activities/update"
_MAX_ERROR = 1000


@dataclass(frozen=True)
class Item:
    """An outbox row as the worker and the CLI see it (never a token)."""

    id: int
    user_key: str
    link_id: int
    orcid: str
    kind: str
    self_id: str
    desired: dict[str, Any]
    desired_hash: str
    synced_hash: str | None
    put_code: int | None
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    posted_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def present(self) -> bool:
        return bool(self.desired.get("present"))


def _item(row: AffiliationRow) -> Item:
    return Item(
        id=row.id, user_key=row.user_key, link_id=row.link_id, orcid=row.orcid, kind=row.kind, self_id=row.self_id,
        desired=json.loads(row.desired), desired_hash=row.desired_hash, synced_hash=row.synced_hash,
        put_code=row.put_code, status=row.status, attempts=row.attempts, next_attempt_at=row.next_attempt_at,
        last_error=row.last_error, posted_at=row.posted_at, lease_owner=row.lease_owner,
        lease_until=row.lease_until, created_at=row.created_at, updated_at=row.updated_at,
    )


def _dump(state: Mapping[str, Any]) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _gone_hash(kind: str, settings: AffiliationSettings) -> str:
    return state_hash({"present": False, "kind": kind, "delete": settings.on_leave == "delete"})


def _has_update_scope(scopes: str | None) -> bool:
    return ACTIVITIES_UPDATE in (scopes or "").split()


class Outbox:
    """Repository of affiliation items; the login side and the worker side."""

    def __init__(self, db: Database, links: Links) -> None:
        self.db = db
        self.links = links

    def __repr__(self) -> str:
        return f"Outbox({self.db!r})"

    # --- the login side -----------------------------------------------------------------
    def link_extra(
        self, settings: AffiliationSettings | None, attributes: Mapping[str, Any]
    ) -> LinkExtra | None:
        """A callback for ``Links.link(extra=...)``: queue what this login calls for, in the
        link's transaction. Items parked earlier (e.g. on a revoked token) are queued again,
        since a new grant may well succeed. None when affiliations are not configured."""
        if settings is None:
            return None

        def extra(session: Session, link: LinkRow) -> None:
            if link.status != ACTIVE or not _has_update_scope(link.scopes):
                return
            self._reconcile(session, settings, link, attributes, requeue_parked=True)

        return extra

    def refresh(self, settings: AffiliationSettings, user_key: str, attributes: Mapping[str, Any], *,
                issuer: str = GLOBAL_ISSUER) -> int:
        """The fast path of a returning login: one indexed read; a write only when what should
        be on the record changed. Returns the number of rows queued."""
        key = self.db.stored_user_key(user_key)
        rows = self._read_state(key, issuer)
        if not rows:
            return 0  # no active link
        link_id, orcid, scopes, created_at = rows[0][:4]
        if not _has_update_scope(scopes):
            return 0
        current = {kind: (digest, row_link) for _, _, _, _, kind, digest, row_link in rows if kind is not None}
        wanted = {
            item.kind: state_hash(present_state(settings, item))
            for item in desired_items(settings, attributes, created_at)
        }
        changed = any(
            kind not in current or current[kind][0] != digest or current[kind][1] != link_id
            for kind, digest in wanted.items()
        ) or any(kind not in wanted and digest != _gone_hash(kind, settings) for kind, (digest, _) in current.items())
        if not changed:
            return 0
        with self.db.transaction() as session:
            self.db.lock(session, key)
            link = session.scalar(sa.select(LinkRow).where(LinkRow.user_key == key, LinkRow.issuer == issuer, IS_ACTIVE))
            if link is None or not _has_update_scope(link.scopes):
                return 0
            return self._reconcile(session, settings, link, attributes, requeue_parked=False)

    def _read_state(self, key: str, issuer: str) -> list[tuple[Any, ...]]:
        stmt = (
            sa.select(
                LinkRow.id, LinkRow.orcid, LinkRow.scopes, LinkRow.created_at,
                AffiliationRow.kind, AffiliationRow.desired_hash, AffiliationRow.link_id,
            )
            .select_from(LinkRow)
            .outerjoin(
                AffiliationRow,
                sa.and_(AffiliationRow.user_key == LinkRow.user_key, AffiliationRow.orcid == LinkRow.orcid),
            )
            .where(LinkRow.user_key == key, LinkRow.issuer == issuer, IS_ACTIVE)
        )
        return self.db.rows(stmt)

    def _reconcile(
        self, session: Session, settings: AffiliationSettings, link: LinkRow, attributes: Mapping[str, Any],
        *, requeue_parked: bool,
    ) -> int:
        now = self.db.now()
        rows = session.scalars(
            sa.select(AffiliationRow)
            .where(AffiliationRow.user_key == link.user_key, AffiliationRow.orcid == link.orcid)
            .with_for_update()
        ).all()
        by_kind = {row.kind: row for row in rows}
        states = {item.kind: present_state(settings, item) for item in desired_items(settings, attributes, link.created_at)}
        changed = 0
        for kind, state in states.items():
            digest = state_hash(state)
            row = by_kind.get(kind)
            if row is None:
                session.add(AffiliationRow(
                    user_key=link.user_key, link_id=link.id, orcid=link.orcid, kind=kind,
                    self_id=self_external_id(link.user_key, link.orcid, kind, settings.organization.disambiguated_id),
                    desired=_dump(state), desired_hash=digest, synced_hash=None, put_code=None, status=QUEUED,
                    attempts=0, next_attempt_at=now, created_at=now, updated_at=now,
                ))
                changed += 1
            elif row.desired_hash != digest or row.link_id != link.id or (requeue_parked and row.status == PARKED):
                row.link_id = link.id
                row.desired, row.desired_hash = _dump(state), digest
                self._requeue(row, now)
                changed += 1
        for kind, row in by_kind.items():
            if kind in states:
                continue
            if row.desired_hash != _gone_hash(kind, settings):
                state = gone_state(json.loads(row.desired), now.date(), settings.on_leave)
                row.link_id = link.id
                row.desired, row.desired_hash = _dump(state), state_hash(state)
                self._requeue(row, now)
                changed += 1
            elif row.link_id != link.id or (requeue_parked and row.status == PARKED):
                row.link_id = link.id
                self._requeue(row, now)
                changed += 1
        if changed:
            session.flush()
            log.debug("affiliation outbox: %d item(s) queued for one user", changed)
        return changed

    @staticmethod
    def _requeue(row: AffiliationRow, now: datetime) -> None:
        # The lease is left alone: a worker holding it finishes first, sees that the
        # desired hash moved on, and leaves the row queued (see complete()).
        row.status = QUEUED
        row.attempts = 0
        row.next_attempt_at = now
        row.last_error = None
        row.updated_at = now

    # --- the worker side ----------------------------------------------------------------
    def claim(self, owner: str, limit: int, lease_seconds: float, now: datetime | None = None) -> list[Item]:
        """Lease up to ``limit`` due rows to ``owner``. PostgreSQL skips rows another worker
        is claiming (``FOR UPDATE SKIP LOCKED``); SQLite serialises writers anyway."""
        now = now or self.db.now()
        lease = f"{owner[:200]}/{secrets.token_hex(6)}"
        with self.db.transaction() as session:
            ids = session.scalars(
                sa.select(AffiliationRow.id)
                .where(
                    AffiliationRow.status.in_((QUEUED, RETRY)),
                    AffiliationRow.next_attempt_at <= now,
                    sa.or_(AffiliationRow.lease_until.is_(None), AffiliationRow.lease_until < now),
                )
                .order_by(AffiliationRow.next_attempt_at, AffiliationRow.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            if not ids:
                return []
            session.execute(
                sa.update(AffiliationRow)
                .where(AffiliationRow.id.in_(ids))
                .values(lease_owner=lease, lease_until=now + timedelta(seconds=lease_seconds),
                        attempts=AffiliationRow.attempts + 1)
            )
            rows = session.scalars(
                sa.select(AffiliationRow).where(AffiliationRow.id.in_(ids)).order_by(AffiliationRow.next_attempt_at, AffiliationRow.id)
                .execution_options(populate_existing=True)
            ).all()
            return [_item(row) for row in rows]

    def _guarded(self, item: Item, **values: Any) -> bool:
        """Update the row only while ``item``'s lease is still ours."""
        values.setdefault("updated_at", self.db.now())
        with self.db.transaction() as session:
            result = session.execute(
                sa.update(AffiliationRow)
                .where(AffiliationRow.id == item.id, AffiliationRow.lease_owner == item.lease_owner)
                .values(**values)
            )
            return result.rowcount == 1

    def _after(self, item: Item, status: str) -> Any:
        """``status``, unless a login changed what should be on the record while we worked."""
        return sa.case((AffiliationRow.desired_hash == item.desired_hash, status), else_=QUEUED)

    def mark_posting(self, item: Item) -> bool:
        """Commit that a POST is about to be sent (the crash-recovery marker)."""
        return self._guarded(item, posted_at=self.db.now())

    def adopt_put_code(self, item: Item, put_code: int) -> None:
        """Record a put-code as soon as we learn it (201, 409 or a recovered item)."""
        if not self._guarded(item, put_code=put_code):
            self._store_put_code_if_missing(item, put_code)

    def _store_put_code_if_missing(self, item: Item, put_code: int) -> None:
        # Our lease ran out meanwhile; the put-code is still the truth about the record.
        with self.db.transaction() as session:
            session.execute(
                sa.update(AffiliationRow)
                .where(AffiliationRow.id == item.id, AffiliationRow.put_code.is_(None))
                .values(put_code=put_code, updated_at=self.db.now())
            )

    def complete(self, item: Item, *, put_code: int | None, wrote: str | None = None) -> bool:
        """ORCID now holds ``item.desired`` (or nothing, after a delete). ``wrote`` names what
        we just did on the record (post, put, end, delete, adopt) for the audit trail."""
        now = self.db.now()
        if wrote:
            self._audit_write(item, wrote, put_code)
        ok = self._guarded(
            item, put_code=put_code, synced_hash=item.desired_hash, posted_at=None, status=self._after(item, DONE),
            attempts=0, last_error=None, next_attempt_at=now, lease_owner=None, lease_until=None, updated_at=now,
        )
        if not ok:
            log.warning("affiliation item %d: lease lost before completion; another worker will reconcile", item.id)
            if put_code is not None:
                self._store_put_code_if_missing(item, put_code)
        return ok

    def _audit_write(self, item: Item, action: str, put_code: int | None) -> None:
        try:
            with self.db.transaction() as session:
                self.db.audit(session, "affiliation_write", user_key=item.user_key, orcid=item.orcid,
                              detail={"kind": item.kind, "action": action, "put_code": put_code})
        except OrcidPluginError as exc:  # the write itself is done; never lose it over the audit row
            log.warning("affiliation item %d: audit row not written: %s", item.id, exc.code)

    def retry(self, item: Item, error: str, next_attempt_at: datetime) -> bool:
        return self._guarded(
            item, status=RETRY, last_error=error[:_MAX_ERROR], next_attempt_at=next_attempt_at,
            lease_owner=None, lease_until=None,
        )

    def park(self, item: Item, reason: str, *, forget_put_code: bool = False) -> bool:
        values: dict[str, Any] = dict(
            status=self._after(item, PARKED), last_error=reason[:_MAX_ERROR], next_attempt_at=self.db.now(),
            lease_owner=None, lease_until=None,
        )
        if forget_put_code:
            values.update(put_code=None, posted_at=None, synced_hash=None)
        return self._guarded(item, **values)

    def release(self, items: list[Item]) -> None:
        """Give back leases on items we did not get to."""
        for item in items:
            self._guarded(item, lease_owner=None, lease_until=None, attempts=max(item.attempts - 1, 0))

    def tokens_for_link(self, link_id: int) -> TokenSet | None:
        """The decrypted tokens of the item's link, while it is active."""
        return self.links.tokens_of_link(link_id)

    def revoke_link(self, item: Item, reason: str) -> bool:
        """ORCID rejected the link's token (401 invalid_token): the link becomes ``revoked``
        (``Links.revoke_link``: tokens dropped, audit ``revoke``) and, in the same
        transaction, its waiting items are parked. False when the link was no longer active."""

        def park_waiting(session: Session, link: LinkRow) -> None:
            session.execute(
                sa.update(AffiliationRow)
                .where(AffiliationRow.link_id == link.id, AffiliationRow.status.in_((QUEUED, RETRY)),
                       sa.or_(AffiliationRow.lease_owner.is_(None), AffiliationRow.lease_owner == item.lease_owner))
                .values(status=PARKED, last_error=reason[:_MAX_ERROR], lease_owner=None, lease_until=None,
                        updated_at=link.revoked_at)
            )

        revoked = self.links.revoke_link(item.link_id, item.user_key, reason, by="affiliation-sync", extra=park_waiting)
        return revoked is not None

    # --- administration -----------------------------------------------------------------
    def items(self, user_key: str | None = None, *, status: str | None = None, limit: int = 1000) -> list[Item]:
        stmt = sa.select(AffiliationRow).order_by(AffiliationRow.id).limit(limit)
        if user_key is not None:
            stmt = stmt.where(AffiliationRow.user_key == self.db.stored_user_key(user_key))
        if status is not None:
            if status not in ITEM_STATUSES:
                raise ValueError(f"status must be one of {ITEM_STATUSES}")
            stmt = stmt.where(AffiliationRow.status == status)
        return [_item(row) for row in self.db.scalars(stmt)]

    def summary(self, now: datetime | None = None, *, parked_limit: int = 50) -> dict[str, Any]:
        """Counts per status, the age of the oldest waiting item, and parked items with reasons."""
        now = now or self.db.now()
        with self.db.read_transaction() as session:
            counts = dict(session.execute(
                sa.select(AffiliationRow.status, sa.func.count()).group_by(AffiliationRow.status)
            ).all())
            oldest = session.scalar(
                sa.select(sa.func.min(AffiliationRow.updated_at)).where(AffiliationRow.status.in_((QUEUED, RETRY)))
            )
            parked = session.scalars(
                sa.select(AffiliationRow).where(AffiliationRow.status == PARKED)
                .order_by(AffiliationRow.updated_at.desc()).limit(parked_limit)
            ).all()
        if oldest is not None and oldest.tzinfo is None:  # aggregate results bypass the type decorator
            oldest = oldest.replace(tzinfo=now.tzinfo)
        return {
            "counts": {status: counts.get(status, 0) for status in ITEM_STATUSES},
            "oldest_waiting_seconds": max(0.0, (now - oldest).total_seconds()) if oldest is not None else None,
            "parked": [
                {"id": r.id, "user_key": r.user_key, "orcid": r.orcid, "kind": r.kind, "reason": r.last_error,
                 "since": r.updated_at.isoformat()}
                for r in parked
            ],
        }

    def resync(self, user_key: str | None = None) -> int:
        """Queue items again and forget what we believe ORCID holds, so the next run writes
        them (PUT, or POST when the item was deleted from the record)."""
        now = self.db.now()
        stmt = sa.update(AffiliationRow).values(
            status=QUEUED, synced_hash=None, attempts=0, next_attempt_at=now, last_error=None, updated_at=now,
        )
        if user_key is not None:
            stmt = stmt.where(AffiliationRow.user_key == self.db.stored_user_key(user_key))
        with self.db.transaction() as session:
            return session.execute(stmt).rowcount or 0

    # --- hooks for the proxy ----------------------------------------------------------
    def on_login(self, settings: AffiliationSettings | None, user_key: str, attributes: Mapping[str, Any], *,
                 issuer: str = GLOBAL_ISSUER) -> int:
        """Call on every login that releases a linked iD. Costs one indexed read; writes outbox
        rows only when what should be on the record changed. Never raises for database trouble
        (the login goes on; the next login tries again). Returns the number of rows queued."""
        if settings is None or not user_key:
            return 0
        try:
            return self.refresh(settings, user_key, attributes, issuer=issuer)
        except OrcidPluginError as exc:
            log.warning("affiliation outbox not updated for this login: %s", exc.code)
            return 0


__all__ = ["ACTIVITIES_UPDATE", "Item", "Outbox", "QUEUED", "RETRY", "DONE", "PARKED", "ITEM_STATUSES", "KINDS"]
