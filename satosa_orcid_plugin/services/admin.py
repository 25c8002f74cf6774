"""The administration service: what ``satosa-orcid`` (and the metrics exporter) asks.

Links (list, show, export, check at ORCID, unlink with revocation), researchers' decisions,
counts, the schema, key rotation, and the affiliation items we hold next to what ORCID holds.
Built by :func:`satosa_orcid_plugin.wiring.admin_service`; ``client`` is None when the CLI was
given only a database (``SATOSA_ORCID_DATABASE_URL``), and the commands that need ORCID say so.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from ..config import KINDS
from ..errors import ConfigError, OrcidError
from ..orcid_client import OrcidClient, TokenState
from ..orcid_id import OrcidId
from ..store import Item, Link, Store, utcnow
from .revocation import TokenRevoker

log = logging.getLogger(__name__)

EXPORT_PAGE = 1000


class AdminService:
    def __init__(self, store: Store, client: OrcidClient | None = None, *,
                 clock: Callable[[], datetime] = utcnow, existing_issuer: str | None = None) -> None:
        self.store = store
        self._client = client
        self.clock = clock
        self.existing_issuer = existing_issuer  # for the upgrade to issuer-bound keys

    def __repr__(self) -> str:
        return f"AdminService({self.store!r})"

    @property
    def client(self) -> OrcidClient:
        if self._client is None:
            raise ConfigError("orcid", "this command talks to ORCID: give --config PATH (the plugin configuration)")
        return self._client

    @property
    def hashes_user_keys(self) -> bool:
        """True when user keys are stored as HMACs (so stored keys cannot be used as input)."""
        return self.store.db.hashes_user_keys

    # --- links --------------------------------------------------------------------------
    def links(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[Link]:
        """Links, newest first, optionally of one status."""
        return self.store.links.recent(status=status, limit=limit, offset=offset)

    def all_links(self, status: str | None = None) -> Iterator[Link]:
        """Every link, newest first, read a page at a time."""
        offset = 0
        while True:
            page = self.store.links.recent(status=status, limit=EXPORT_PAGE, offset=offset)
            yield from page
            if len(page) < EXPORT_PAGE:
                return
            offset += EXPORT_PAGE

    def issuers(self, user_key: str, *, decisions: bool = False) -> list[str]:
        """The issuers (IdP entity IDs; "" for issuer-free keys) under which ``user_key`` has a
        current link (or, with ``decisions``, a decision): more than one means the operator
        must say which IdP's user is meant."""
        if decisions:
            return self.store.decisions.issuers_of(user_key)
        return self.store.links.issuers_of(user_key)

    def link(self, user_key: str, issuer: str = "") -> Link | None:
        """The user's current link (active or revoked); None when there is none."""
        return self.store.links.get(user_key, issuer=issuer)

    def link_of_orcid(self, orcid: str) -> Link | None:
        """The current link (active or revoked) holding an iD, whoever's it is; InvalidOrcidId
        for a value that is not one (any accepted form: bare, hyphenated, https://orcid.org/...)."""
        return self.store.links.find_by_orcid(OrcidId.parse(orcid))

    def audit_trail(self, user_key: str | None = None, limit: int = 20, *,
                    orcid: OrcidId | None = None) -> list[dict[str, Any]]:
        """The newest audit events of a user, or of an iD."""
        return self.store.db.audit_events(user_key=user_key, limit=limit,
                                          orcid=orcid.value if orcid is not None else None)

    def active_users(self) -> list[tuple[str, str]]:
        """(user key, issuer) of every active link."""
        if self.hashes_user_keys:
            raise ConfigError("store.user_key_secret", "user keys are stored hashed: name the user")
        return [(link.user_key, link.issuer) for link in self.store.links.recent(status="active", limit=100000)]

    def check_link(self, user_key: str, issuer: str = "") -> str:
        """Ask ORCID whether the user's token still works (``OrcidClient.check_token``: only a
        401 invalid_token means revoked). Returns ``active``, ``revoked`` (just found out),
        ``no_link`` or ``unknown`` (ORCID could not tell; nothing changes)."""
        link = self.store.links.get_active(user_key, issuer=issuer)
        tokens = self.store.links.tokens(user_key, issuer=issuer)
        if link is None or tokens is None:
            return "no_link"
        status = self.client.check_token(link.orcid, tokens)
        if status.revoked:
            self.store.links.revoke(user_key, "invalid_token", issuer=issuer)
        elif status.state is TokenState.UNKNOWN:
            log.warning("could not check a link at ORCID: %s", status.evidence)
        return status.state.value

    def unlink(self, user_key: str, *, issuer: str = "", reason: str = "admin") -> Link:
        """Unlink a user and revoke the tokens at ORCID (best effort: the link goes either way)."""
        link, tokens = self.store.links.unlink(user_key, issuer=issuer, reason=reason)
        if tokens is not None:
            revoker = TokenRevoker(self.client, self.store)  # a revoke ORCID misses is queued and retried
            for token in filter(None, (tokens.access_token, tokens.refresh_token)):
                revoker.give_up(token, orcid=link.orcid, reason="unlinked")
        return link

    # --- decisions, counts, schema, keys --------------------------------------------------
    def decision(self, user_key: str, issuer: str = "") -> str | None:
        """``never``, ``not_now`` while it lasts, or None."""
        return self.store.decisions.get(user_key, self.clock(), issuer=issuer)

    def clear_decision(self, user_key: str, issuer: str = "") -> None:
        self.store.decisions.clear(user_key, issuer=issuer)

    def stats(self) -> dict[str, int]:
        return self.store.links.stats(self.clock())

    def health(self) -> bool:
        return self.store.db.health()

    def upgrade(self) -> None:
        self.store.db.upgrade(existing_issuer=self.existing_issuer)

    def rotate_keys(self) -> int:
        return self.store.vault.rotate_keys()

    # --- affiliations ---------------------------------------------------------------------
    def sync_status(self, *, parked_limit: int = 50) -> dict[str, Any]:
        """Counts per status, the oldest waiting age, and parked items with their reasons."""
        return self.store.outbox.summary(self.clock(), parked_limit=parked_limit)

    def affiliation_items(self, user_key: str) -> list[Item]:
        return self.store.outbox.items(user_key)

    def resync(self, user_key: str | None = None) -> int:
        """Queue items again (one user's, or everyone's) so the next worker run writes them."""
        return self.store.outbox.resync(user_key)

    def affiliations_at_orcid(self, user_key: str, issuer: str = "") -> tuple[Link | None, dict[str, list[Any]],
                                                                              str | None]:
        """The user's active link, the employment/education summaries ORCID holds for it (by
        kind), and why they could not all be read (None when they could)."""
        link = self.store.links.get_active(user_key, issuer=issuer)
        if link is None:
            return None, {}, "no active link"
        tokens = self.store.outbox.tokens_for_link(link.id)
        if tokens is None:
            return link, {}, "no tokens for the link"
        out: dict[str, list[Any]] = {}
        try:
            for kind in KINDS:
                out[kind] = self.client.list_affiliations(link.orcid, kind, tokens.access_token)
        except OrcidError as exc:
            return link, out, f"{exc.code}: {exc.message}"
        return link, out, None


__all__ = ["AdminService"]
