"""Links: which user holds which ORCID iD, with their tokens (through the vault).

The database enforces the two invariants: at most one *active* link per user and at most one
*active* link per (iD, environment), as partial unique indexes. Code never "checks then
inserts" and trusts the check; it takes per-user locks and still turns an
``IntegrityError`` into a re-read and one retry.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..errors import LinkConflict, NotFound, StoreError
from ..orcid_id import OrcidId
from ..tokens import TokenSet, parse_scope
from .database import Database
from .decisions import Decisions
from .revocations import Revocations
from .schema import (ACTIVE, ENVIRONMENTS, GLOBAL_ISSUER, IS_ACTIVE, PRODUCTION, REVOKED, SANDBOX, STATUSES, UNLINKED,
                     DecisionRow, LinkRow, TokenRow, as_utc, check_issuer)
from .vault import Vault

log = logging.getLogger(__name__)

# Runs in the transaction that wrote a link row (e.g. to queue affiliation outbox rows).
LinkExtra = Callable[[Session, LinkRow], None]


@dataclass(frozen=True)
class Link:
    """One link between a user and an ORCID iD, as the store holds it.

    ``user_key`` is the key as stored: the caller's key, or its HMAC when the store hashes keys.
    ``issuer`` is the entity ID of the IdP that asserted the key ("" for an issuer-free key):
    the link belongs to the pair.
    """

    user_key: str
    orcid: OrcidId
    environment: str
    status: str
    scopes: tuple[str, ...]
    name: str | None
    amr: str | None
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None = None
    revoke_reason: str | None = None
    id: int | None = None
    # Revocation rows this link write queued for the tokens it replaced (ours or, with
    # on_conflict "move", the previous holder's): the caller revokes them at once.
    superseded: tuple[int, ...] = ()
    issuer: str = ""

    @property
    def active(self) -> bool:
        return self.status == ACTIVE


def _to_link(row: LinkRow) -> Link:
    return Link(
        user_key=row.user_key,
        # Re-validated on the way out: a bad checksum never leaves the store.
        orcid=OrcidId.parse(row.orcid, sandbox=row.environment == SANDBOX),
        environment=row.environment,
        status=row.status,
        scopes=parse_scope(row.scopes),
        name=row.name,
        amr=row.amr,
        created_at=row.created_at,
        updated_at=row.updated_at,
        revoked_at=row.revoked_at,
        revoke_reason=row.revoke_reason,
        id=row.id,
        issuer=row.issuer,
    )


class _Conflict(Exception):
    """Internal: the iD is active for another user (turned into LinkConflict after rollback)."""

    def __init__(self, holder: str) -> None:
        self.holder = holder


def _of_user(key: str, issuer: str) -> Any:
    """The WHERE of one user: (stored user key, issuer), in the order of the indexes."""
    return sa.and_(LinkRow.user_key == key, LinkRow.issuer == check_issuer(issuer))


_LINKS, _DECISIONS = LinkRow.__table__, DecisionRow.__table__
_KEY, _ISSUER = sa.bindparam("key", type_=sa.String), sa.bindparam("issuer", type_=sa.String)
# Every login's one query (Core, prepared once): the user's active link and their recorded
# decision, each by its index (the partial unique index on active links, the decision's key).
_USER = sa.select(_KEY.label("key"), _ISSUER.label("issuer")).subquery("u")
_LOGIN_VIEW = (
    sa.select(_LINKS, _DECISIONS.c.decision, _DECISIONS.c.until.label("decision_until"))
    .select_from(_USER.outerjoin(_LINKS, sa.and_(_LINKS.c.user_key == _USER.c.key,
                                                 _LINKS.c.issuer == _USER.c.issuer, IS_ACTIVE))
                 .outerjoin(_DECISIONS, sa.and_(_DECISIONS.c.user_key == _USER.c.key,
                                                _DECISIONS.c.issuer == _USER.c.issuer)))
)
# The link write's reads and insert (Core, on the transaction's connection).
_ACTIVE_BY_USER = sa.select(_LINKS.c.id, _LINKS.c.user_key, _LINKS.c.issuer, sa.literal("mine").label("role")).where(
    _LINKS.c.user_key == _KEY, _LINKS.c.issuer == _ISSUER, IS_ACTIVE)
_ACTIVE_BY_ORCID = sa.select(_LINKS.c.id, _LINKS.c.user_key, _LINKS.c.issuer, sa.literal("holder").label("role")).where(
    _LINKS.c.orcid == sa.bindparam("orcid"), _LINKS.c.environment == sa.bindparam("env"), IS_ACTIVE)
# Both in one round trip, each branch by its own partial unique index: the user's active link
# ("mine") and the iD's ("holder"); the same row twice when they are one.
_ACTIVE_BY_USER_OR_ORCID = sa.union_all(_ACTIVE_BY_USER, _ACTIVE_BY_ORCID)
_INSERT_LINK = sa.insert(_LINKS).returning(*_LINKS.c)


def _newest_of_user(key: str, issuer: str) -> sa.Select[tuple[LinkRow]]:
    return sa.select(LinkRow).where(_of_user(key, issuer)).order_by(LinkRow.id.desc()).limit(1)


def _environment(orcid: OrcidId, environment: str | None) -> str:
    if environment is None:
        return SANDBOX if orcid.sandbox else PRODUCTION
    if environment not in ENVIRONMENTS:
        raise ValueError(f"environment must be one of {ENVIRONMENTS}, not {environment!r}")
    if orcid.sandbox and environment == PRODUCTION:
        raise ValueError("a sandbox ORCID iD cannot be linked in the production environment")
    return environment


class Links:
    """Every method is its own transaction. User keys are passed raw (see
    ``Database.stored_user_key``), each with its ``issuer``: the entity ID of the IdP that
    asserted it, or "" (``GLOBAL_ISSUER``) for an issuer-free key. A key asserted by one IdP
    never finds the link of the same key from another."""

    def __init__(self, db: Database, vault: Vault, decisions: Decisions, revocations: Revocations) -> None:
        self.db = db
        self.vault = vault
        self.decisions = decisions
        self.revocations = revocations

    def __repr__(self) -> str:
        return f"Links({self.db!r})"

    # --- reads ------------------------------------------------------------------------
    def get_active(self, user_key: str, *, issuer: str = GLOBAL_ISSUER) -> Link | None:
        """The user's active link: one indexed query, no network (every login's fast path)."""
        return self.login_view(user_key, self.db.now(), issuer=issuer)[0]

    def login_view(self, user_key: str, now: datetime, *, issuer: str = GLOBAL_ISSUER) -> tuple[Link | None, str | None]:
        """What a login asks the store, in one indexed query: the active link of ``user_key``
        asserted by ``issuer``, and its decision in force at ``now`` (:meth:`Decisions.in_force`)."""
        row = self.db.first(_LOGIN_VIEW, {"key": self.db.stored_user_key(user_key), "issuer": check_issuer(issuer)})
        if row is None:  # cannot happen (one row per key), but never a KeyError on the login path
            return None, None
        link = _to_link(row) if row.id is not None else None
        return link, Decisions.in_force(row.decision, row.decision_until, as_utc(now, "now"))

    def get(self, user_key: str, *, issuer: str = GLOBAL_ISSUER) -> Link | None:
        """The user's current link, active or revoked; None when there is none or it was unlinked."""
        row = self.db.scalar(_newest_of_user(self.db.stored_user_key(user_key), issuer))
        return _to_link(row) if row is not None and row.status != UNLINKED else None

    def issuers_of(self, user_key: str) -> list[str]:
        """The issuers under which this user key has a current (active or revoked) link, sorted:
        for an operator who names the user without the IdP."""
        key = self.db.stored_user_key(user_key)
        newest = (sa.select(sa.func.max(LinkRow.id)).where(LinkRow.user_key == key)
                  .group_by(LinkRow.issuer).scalar_subquery())
        return sorted(self.db.scalars(
            sa.select(LinkRow.issuer).where(LinkRow.id.in_(newest), LinkRow.status != UNLINKED)))

    def find_by_orcid(self, orcid: OrcidId, *, environment: str | None = None) -> Link | None:
        """The current (active or revoked) link of an iD; the environment follows ``orcid.sandbox``
        unless given."""
        env = _environment(orcid, environment)
        row = self.db.scalar(
            sa.select(LinkRow)
            .where(LinkRow.orcid == orcid.value, LinkRow.environment == env)
            .order_by(LinkRow.id.desc())
            .limit(1)
        )
        return _to_link(row) if row is not None and row.status != UNLINKED else None

    def tokens(self, user_key: str, *, issuer: str = GLOBAL_ISSUER) -> TokenSet | None:
        """The decrypted tokens of the user's active link."""
        key = self.db.stored_user_key(user_key)
        return self._active_tokens(_of_user(key, issuer))

    def tokens_of_link(self, link_id: int) -> TokenSet | None:
        """The decrypted tokens of the link, while it is active."""
        return self._active_tokens(LinkRow.id == link_id)

    def _active_tokens(self, which: Any) -> TokenSet | None:
        row = self.db.scalar(
            sa.select(TokenRow).join(LinkRow, LinkRow.id == TokenRow.link_id).where(which, IS_ACTIVE)
        )
        return self.vault.read(row) if row is not None else None

    def lookup_sql(self, user_key: str, orcid: str, environment: str = PRODUCTION, *,
                   issuer: str = GLOBAL_ISSUER) -> dict[str, str]:
        """The SELECTs of the login fast path and of the link write path, with literal values,
        by the partial unique index each must use (for EXPLAIN in benchmarks)."""
        def compile_(stmt: Any) -> str:
            return str(stmt.compile(dialect=self.db.engine.dialect, compile_kwargs={"literal_binds": True}))

        return {
            "uq_orcid_links_active_user": compile_(
                _LOGIN_VIEW.params(key=self.db.stored_user_key(user_key), issuer=issuer)),
            "uq_orcid_links_active_orcid": compile_(_ACTIVE_BY_USER_OR_ORCID.params(
                key=self.db.stored_user_key(user_key), issuer=issuer, orcid=orcid, env=environment)),
        }

    def recent(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Link]:
        """Links, newest first, optionally of one status."""
        stmt = sa.select(LinkRow).order_by(LinkRow.id.desc()).limit(limit).offset(offset)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
            stmt = stmt.where(LinkRow.status == status)
        return [_to_link(row) for row in self.db.scalars(stmt)]

    def stats(self, now: datetime) -> dict[str, int]:
        """Counts for dashboards and metrics: links by status, running declines, new links."""
        now = as_utc(now, "now")
        with self.db.read_transaction() as session:
            by_status = dict(session.execute(sa.select(LinkRow.status, sa.func.count()).group_by(LinkRow.status)).all())
            not_now, never = self.decisions.counts(session, now)
            last_day = session.scalar(
                sa.select(sa.func.count()).select_from(LinkRow).where(LinkRow.created_at > now - timedelta(days=1))
            )
        return {
            "linked": by_status.get(ACTIVE, 0),
            "revoked": by_status.get(REVOKED, 0),
            "unlinked": by_status.get(UNLINKED, 0),
            "declined_not_now": not_now,
            "declined_never": never,
            "links_last_day": last_day or 0,
        }

    # --- life cycle -------------------------------------------------------------------
    def link(
        self,
        user_key: str,
        orcid: OrcidId,
        tokens: TokenSet | None,
        *,
        issuer: str = GLOBAL_ISSUER,
        name: str | None = None,
        amr: str | None = None,
        environment: str | None = None,
        on_conflict: str = "refuse",
        session_id: str | None = None,
        extra: LinkExtra | None = None,
        intent: int | None = None,
    ) -> Link:
        """Make ``orcid`` the active iD of the user (``user_key`` asserted by ``issuer``), in
        one transaction.

        * same active iD: tokens (and name/amr when given) are updated; audit ``relink``;
        * another active iD: that link becomes ``unlinked``; audit ``switch``;
        * the iD is active for another user: ``LinkConflict`` (audit ``conflict``), or with
          ``on_conflict="move"`` the other user's link becomes ``unlinked`` (audit ``moved``).

        A recorded "not now"/"never" decision of the user is cleared. ``environment`` defaults
        to the iD's (``orcid.sandbox``). ``extra(session, link_row)`` runs in the same
        transaction after the link row is written (e.g. ``Outbox.link_extra``). ``intent`` is
        the revocation row written for ``tokens`` before this call (:meth:`Revocations.intend`):
        the link takes it back in the same transaction, or fails when a drain already leased it.
        """
        if on_conflict not in ("refuse", "move"):
            raise ValueError(f"on_conflict must be 'refuse' or 'move', not {on_conflict!r}")
        if not isinstance(orcid, OrcidId):
            orcid = OrcidId.parse(orcid)
        env = _environment(orcid, environment)
        key = self.db.stored_user_key(user_key)
        check_issuer(issuer)  # before any transaction
        for attempt in (1, 2):
            try:
                with self.db.transaction(raw_integrity=True) as session:
                    self.db.lock(session, key, f"{env}:{orcid.value}")
                    if intent is not None:
                        self.revocations.withdraw_in(session, intent)
                    return self._link_in(session, key, issuer, orcid, env, tokens, name, amr, on_conflict, session_id,
                                         extra)
            except _Conflict as conflict:
                with self.db.transaction() as session:
                    self.db.audit(
                        session, "conflict", user_key=key, orcid=orcid, session_id=session_id,
                        detail={"environment": env, "issuer": issuer, "held_by": conflict.holder},
                    )
                raise LinkConflict(f"ORCID iD {orcid} is already linked to another user") from None
            except IntegrityError as exc:
                # A concurrent writer got there first; the next attempt re-reads its result.
                if attempt == 2:
                    raise StoreError("link failed twice on concurrent changes; try again") from exc
                log.info("link for one user raced another writer; retrying once")
        raise AssertionError("unreachable")

    def _link_in(
        self,
        session: Session,
        key: str,
        issuer: str,
        orcid: OrcidId,
        env: str,
        tokens: TokenSet | None,
        name: str | None,
        amr: str | None,
        on_conflict: str,
        session_id: str | None,
        extra: LinkExtra | None = None,
    ) -> Link:
        now = self.db.now()
        connection = session.connection()
        found = {row.role: row for row in connection.execute(
            _ACTIVE_BY_USER_OR_ORCID, {"key": key, "issuer": issuer, "orcid": orcid.value, "env": env})}
        mine_row, holder_row = found.get("mine"), found.get("holder")
        if mine_row is None and holder_row is None:
            # A new link, the common case (every first hop): Core statements, no unit of work.
            row = connection.execute(_INSERT_LINK, {
                "user_key": key, "issuer": issuer, "orcid": orcid.value, "environment": env, "status": ACTIVE,
                "scopes": " ".join(tokens.scope) if tokens else "", "name": name, "amr": amr,
                "created_at": now, "updated_at": now}).one()
            if tokens is not None:
                self.vault.put_new(connection, row.id, tokens, now)
            self.decisions.forget(session, key, issuer)
            self.db.audit(session, "link", user_key=key, orcid=orcid, session_id=session_id,
                          detail={"environment": env, "issuer": issuer, "scopes": row.scopes})
            if extra is not None:
                extra(session, row)  # reads the row's columns only (e.g. Outbox.link_extra)
                session.flush()
            return _to_link(row)
        # A relink, a switch or a move: rarer, and the ORM's bookkeeping is worth it there.
        mine = session.get(LinkRow, mine_row.id) if mine_row is not None else None
        holder = session.get(LinkRow, holder_row.id) if holder_row is not None else None
        keep = tokens.access_token if tokens is not None else None
        superseded: list[int] = []
        if holder is not None and (holder.user_key, holder.issuer) != (key, issuer):
            if on_conflict == "refuse":
                raise _Conflict(holder.user_key)
            superseded += self._queue_revocation(session, holder, "moved", now, keep)
            self._retire(session, holder, UNLINKED, now)
            self.db.audit(
                session, "moved", user_key=holder.user_key, orcid=orcid, session_id=session_id,
                detail={"environment": env, "to_user": key, "to_issuer": issuer},
            )

        detail: dict[str, Any] = {"environment": env, "issuer": issuer}
        if mine is not None and mine.orcid == orcid.value and mine.environment == env:
            event, row = "relink", mine
            row.updated_at = now
            row.name = name if name is not None else row.name
            row.amr = amr if amr is not None else row.amr
            if tokens is not None:
                row.scopes = " ".join(tokens.scope)
                superseded += self._queue_revocation(session, row, "relinked", now, keep)
        else:
            if mine is not None:
                event = "switch"
                detail["previous"] = mine.orcid
                superseded += self._queue_revocation(session, mine, "switched", now, keep)
                self._retire(session, mine, UNLINKED, now)
            else:
                event = "link"
            row = LinkRow(
                user_key=key, issuer=issuer, orcid=orcid.value, environment=env, status=ACTIVE,
                scopes=" ".join(tokens.scope) if tokens else "", name=name, amr=amr,
                created_at=now, updated_at=now,
            )
            session.add(row)
            session.flush()
        if tokens is not None:
            self.vault.put(session, row.id, tokens, now, new_link=row is not mine)
        self.decisions.forget(session, key, issuer)
        detail["scopes"] = row.scopes
        self.db.audit(session, event, user_key=key, orcid=orcid, session_id=session_id, detail=detail)
        session.flush()
        if extra is not None:
            extra(session, row)
            session.flush()
        return dataclasses.replace(_to_link(row), superseded=tuple(superseded))

    def _queue_revocation(self, session: Session, row: LinkRow, reason: str, now: datetime,
                          keep: str | None) -> list[int]:
        """Queue the tokens of ``row`` for revocation at ORCID in this transaction, unless they
        are the ones being stored (``keep``). Undecryptable tokens cannot be revoked: logged."""
        token_row = session.get(TokenRow, row.id)
        if token_row is None:
            return []
        try:
            old = self.vault.cipher.decrypt(token_row.access_token_enc)
        except StoreError:
            log.warning("link: the replaced tokens cannot be decrypted; they are dropped unrevoked")
            return []
        if old == keep:
            return []
        return [self.revocations.add_in(session, old, orcid=row.orcid, reason=reason, now=now)]

    def revoke(self, user_key: str, reason: str, *, issuer: str = GLOBAL_ISSUER,
               session_id: str | None = None) -> Link | None:
        """ORCID no longer honours the user's token (401): the active link becomes ``revoked``
        and its tokens are dropped. None when the user has no active link."""
        key = self.db.stored_user_key(user_key)
        return self._revoke(key, _of_user(key, issuer), reason, session_id=session_id, detail={})

    def revoke_link(
        self, link_id: int, stored_user_key: str, reason: str, *, by: str, extra: LinkExtra | None = None
    ) -> Link | None:
        """As :meth:`revoke`, for one link by id (``stored_user_key`` is its ``Link.user_key``),
        while it is active. ``by`` names the caller in the audit row; ``extra(session, row)``
        runs in the same transaction. None when the link is no longer active."""
        return self._revoke(stored_user_key, LinkRow.id == link_id, reason, session_id=None, detail={"by": by},
                            extra=extra)

    def _revoke(self, key: str, which: Any, reason: str, *, session_id: str | None, detail: dict[str, Any],
                extra: LinkExtra | None = None) -> Link | None:
        with self.db.transaction() as session:
            self.db.lock(session, key)
            row = session.scalar(sa.select(LinkRow).where(which, IS_ACTIVE))
            if row is None:
                return None
            now = self.db.now()
            row.revoked_at = now
            row.revoke_reason = reason
            self._retire(session, row, REVOKED, now)
            self.db.audit(
                session, "revoke", user_key=row.user_key, orcid=row.orcid, session_id=session_id,
                detail={"reason": reason, "environment": row.environment, **detail},
            )
            if extra is not None:
                extra(session, row)
            return _to_link(row)

    def unlink(
        self, user_key: str, *, issuer: str = GLOBAL_ISSUER, reason: str = "admin", session_id: str | None = None
    ) -> tuple[Link, TokenSet | None]:
        """Unlink the user's current (active or revoked) link. Returns it with its tokens, now
        deleted from the store, so the caller can revoke them at ORCID. NotFound if none."""
        key = self.db.stored_user_key(user_key)
        with self.db.transaction() as session:
            self.db.lock(session, key)
            row = session.scalar(_newest_of_user(key, issuer))
            if row is None or row.status == UNLINKED:
                raise NotFound("this user has no ORCID link")
            tokens = None
            token_row = session.get(TokenRow, row.id)
            detail: dict[str, Any] = {"reason": reason, "environment": row.environment, "was": row.status,
                                      "issuer": issuer}
            if token_row is not None:
                try:
                    tokens = self.vault.read(token_row)
                except StoreError:
                    # A lost key must not stop an unlink; the tokens just cannot be revoked.
                    log.warning("unlink: the stored tokens cannot be decrypted; they are dropped unrevoked")
                    detail["tokens_undecryptable"] = True
            self._retire(session, row, UNLINKED, self.db.now())
            self.db.audit(session, "unlink", user_key=key, orcid=row.orcid, session_id=session_id, detail=detail)
            return _to_link(row), tokens

    def _retire(self, session: Session, row: LinkRow, status: str, now: datetime) -> None:
        """Take a link out of service; its tokens go with it (the caller revokes them first)."""
        row.status = status
        row.updated_at = now
        self.vault.drop(session, row)
        session.flush()  # before any INSERT that the partial unique indexes would reject
