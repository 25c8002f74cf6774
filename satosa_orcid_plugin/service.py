"""OrcidLinkService: the one object the micro-service, the CLI and the worker call.

It joins the ORCID client, the store and the policy; it knows nothing about SATOSA.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping

from .config import PluginConfig
from .errors import CallbackReplayed, ConnectMismatch, LinkConflict, MissingFlowState, NotFound, OrcidError
from .orcid_client import Grant, OrcidClient
from .orcid_id import OrcidId
from .outbox import affiliation_link_extra, service_hook
from .pending import Pending, PendingLinks
from .policy import Action, Decision, decide
from .store import Link, Store
from .tokens import TokenCipher, TokenSet

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class HopStart:
    """A fresh OAuth state, and an OpenID Connect nonce when the scopes ask for openid."""
    state: str
    nonce: str | None
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class ConnectStart:
    handle: str      # the pending grant, named by the cookie
    hop: HopStart    # the state-protected authorize that must return the same iD


@dataclass(frozen=True)
class ConnectResult:
    orcid: OrcidId
    link: Link | None  # None: verified, and pending until the next institutional login


class OrcidLinkService:
    def __init__(
        self,
        config: PluginConfig,
        client: OrcidClient,
        store: Store,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.config = config
        self.client = client
        self.store = store
        self.clock = clock
        self.pending = PendingLinks(store)

    def __repr__(self) -> str:
        return f"OrcidLinkService({self.config.orcid!r}, {self.store!r})"

    @classmethod
    def from_config(cls, config: PluginConfig, *, instance: str | None = None) -> "OrcidLinkService":
        cipher = TokenCipher.from_keys(config.store.token_keys)
        secret = config.store.user_key_secret.encode() if config.store.user_key_secret else None
        store = Store.from_url(config.store.database_url, cipher, user_key_secret=secret, instance=instance)
        auto = config.store.auto_upgrade
        if auto is None:
            auto = config.store.database_url.startswith("sqlite")
        if auto:
            store.upgrade()
        from .metrics import observe_orcid_request  # ORCID call latency by endpoint and status

        return cls(config, OrcidClient(config.orcid, observer=observe_orcid_request), store)

    @property
    def environment(self) -> str:
        return "sandbox" if self.config.orcid.sandbox else "production"

    # --- login decisions ------------------------------------------------------------
    def decide(
        self, user_key: str | None, requester: str | None, asserted: OrcidId | None = None, *, requested: bool = False
    ) -> Decision:
        linked = declined = None
        if user_key:
            link = self.store.get_active_link(user_key)
            if link is not None and link.environment == self.environment:
                linked = link.orcid
            if linked is None and asserted is None:
                declined = self.store.decision_for(user_key, self.clock())
        return decide(
            self.config, user_key=user_key, requester=requester, linked=linked, declined=declined, asserted=asserted,
            requested=requested,
        )

    def start_hop(self, scopes: tuple[str, ...] | None = None) -> HopStart:
        """The one place a state and a nonce are made (the hop, and the connect verification)."""
        scopes = tuple(scopes or self.config.orcid.scopes)
        nonce = secrets.token_urlsafe(24) if "openid" in scopes else None
        return HopStart(secrets.token_urlsafe(24), nonce, scopes)

    def hop_url(self, *, redirect_uri: str, state: str, nonce: str | None, prefill: Mapping[str, str] | None = None,
                lang: str | None = None, scopes: tuple[str, ...] | None = None) -> str:
        return self.client.authorize_url(redirect_uri=redirect_uri, state=state, nonce=nonce, prefill=prefill,
                                         lang=lang, scopes=scopes)

    def claim_callback(self, state: str, expires_at: datetime) -> bool:
        """True the first time a callback for this OAuth state is processed, False on replay."""
        digest = hashlib.sha256(state.encode()).hexdigest()
        return self.store.consume_once(f"state:{digest}", expires_at)

    def complete_hop(
        self, *, user_key: str, code: str, redirect_uri: str, nonce: str | None, session_id: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Link:
        """Exchange the code (once), verify, and store the link with its tokens (and, with
        member scopes, queue the affiliations in the same transaction)."""
        grant = self.client.exchange_code(code, redirect_uri, nonce=nonce)
        return self.store_grant(user_key, grant, session_id=session_id, attributes=attributes)

    def exchange(self, code: str, redirect_uri: str, *, nonce: str | None, require_id_token: bool | None = None) -> Grant:
        return self.client.exchange_code(code, redirect_uri, nonce=nonce, require_id_token=require_id_token)

    def store_grant(self, user_key: str, grant: Grant, *, session_id: str | None = None,
                    attributes: Mapping[str, Any] | None = None) -> Link:
        tokens = TokenSet.from_token_response(grant.token_response(), self.clock())
        link = self.store.link(
            user_key,
            grant.orcid,
            tokens,
            name=grant.name,
            amr=grant.amr,
            environment=self.environment,
            session_id=session_id,
            on_conflict=self.config.on_conflict,
            extra=affiliation_link_extra(self, attributes or {}),
        )
        return link

    def record_decline(self, user_key: str, decision: str = "not_now", *, session_id: str | None = None) -> None:
        until = None
        if decision == "not_now":
            until = self.clock() + timedelta(seconds=self.config.decline.not_now_seconds)
        self.store.record_decision(user_key, decision, until, session_id=session_id)

    def on_release(self, user_key: str, attributes: Mapping[str, Any]) -> None:
        """A linked user logged in: keep the affiliations on the record in step (cheap; no network)."""
        service_hook(self, user_key, attributes)

    # --- Institutional Connect ------------------------------------------------------
    def connect_exchange(self, code: str, redirect_uri: str) -> Grant:
        """Exchange ORCID's state-less connect code at once, and never twice."""
        digest = hashlib.sha256(code.encode()).hexdigest()
        if not self.store.consume_once(f"code:{digest}", self.clock() + timedelta(hours=1)):
            raise CallbackReplayed("this ORCID connect link was already used")
        return self.client.exchange_code(code, redirect_uri, require_id_token=False)

    def begin_connect(self, code: str, connect_uri: str) -> ConnectStart:
        """ORCID's state-less connect code: exchange it at once (never twice), keep the grant
        pending, and start the state-protected authorize that must name the same iD."""
        grant = self.connect_exchange(code, connect_uri)
        return ConnectStart(self.keep_pending(grant), self.start_hop(grant.scope))

    def complete_connect(self, handle: str, code: str, *, redirect_uri: str, nonce: str | None,
                         user_key: str | None, session_id: str | None = None) -> ConnectResult:
        """The state-protected code: bind only when it names the pending iD; link at once when
        the browser's institutional user is known, else the verified grant stays pending."""
        fresh = self.exchange(code, redirect_uri, nonce=nonce, require_id_token=False)
        pending = self.verify_connect(handle, fresh)
        link = self.finish_pending(handle, user_key, session_id=session_id) if user_key else None
        return ConnectResult(pending.orcid, link)

    def keep_pending(self, grant: Grant, *, verified: bool = False) -> str:
        """Keep a grant whose institutional user is not known yet; returns the cookie handle."""
        tokens = TokenSet.from_token_response(grant.token_response(), self.clock())
        self.reap_pending()
        return self.pending.create(grant.orcid, tokens, name=grant.name, amr=grant.amr,
                                   ttl=self.config.connect.pending_ttl_seconds, verified=verified)

    def reap_pending(self) -> int:
        """Revoke and forget pending links nobody finished in time."""
        expired = self.pending.take_expired()
        self._revoke_quietly(*(t.access_token for t in expired))
        return len(expired)

    def verify_connect(self, handle: str, fresh: Grant) -> Pending:
        """Bind only when the state-protected grant names the same iD as the state-less one.

        On a match the surplus (state-less) token is revoked and the fresh one kept; on a
        mismatch (a login-CSRF attempt, or another ORCID account signed in) both go.
        """
        pending = self.pending.get(handle)
        if pending is None:
            self._revoke_quietly(fresh.access_token)
            raise MissingFlowState("the pending ORCID connection expired")
        if fresh.orcid != pending.orcid:
            self.pending.delete(handle)
            self._revoke_quietly(fresh.access_token, pending.tokens.access_token)
            self.store.audit("connect_mismatch", orcid=str(pending.orcid), presented=str(fresh.orcid))
            raise ConnectMismatch()
        self._revoke_quietly(pending.tokens.access_token)
        tokens = TokenSet.from_token_response(fresh.token_response(), self.clock())
        self.pending.mark_verified(handle, tokens)
        return Pending(pending.orcid, True, tokens, fresh.name or pending.name, fresh.amr or pending.amr)

    def finish_pending(self, handle: str, user_key: str, *, session_id: str | None = None,
                       attributes: Mapping[str, Any] | None = None) -> Link | None:
        """Link a verified pending iD to the institutional user (single use)."""
        pending = self.pending.take(handle)
        if pending is None or not pending.verified:
            return None
        try:
            link = self.store.link(user_key, pending.orcid, pending.tokens, name=pending.name, amr=pending.amr,
                                   environment=self.environment, session_id=session_id,
                                   on_conflict=self.config.on_conflict,
                                   extra=affiliation_link_extra(self, attributes or {}))
        except LinkConflict:
            self._revoke_quietly(pending.tokens.access_token)  # we keep nothing we cannot use
            raise
        return link

    def pending_to_confirm(self, handle: str | None, decision: Decision) -> Pending | None:
        """The verified pending link this login should confirm; one it already releases is dropped."""
        pending = self.pending_for(handle) if handle else None
        if pending is not None and decision.action is Action.RELEASE and decision.orcid == pending.orcid:
            self.discard_pending(handle)
            return None
        return pending

    def pending_for(self, handle: str | None) -> Pending | None:
        pending = self.pending.get(handle)
        return pending if pending is not None and pending.verified else None

    def discard_pending(self, handle: str | None) -> None:
        pending = self.pending.take(handle)
        if pending is not None:
            self._revoke_quietly(pending.tokens.access_token)

    def _revoke_quietly(self, *tokens: str) -> None:
        for token in tokens:
            try:
                self.client.revoke(token)
            except OrcidError as exc:
                log.warning("could not revoke a surplus ORCID token: %s", exc.code)

    # --- administration -------------------------------------------------------------
    def check_link(self, user_key: str) -> str:
        """Ask ORCID whether the user's token still works (``OrcidClient.check_token``: only a
        401 invalid_token means revoked). Returns ``active``, ``revoked`` (just found out),
        ``no_link`` or ``unknown`` (ORCID could not tell; nothing changes)."""
        link, tokens = self.store.get_active_link(user_key), self.store.tokens_for(user_key)
        if link is None or tokens is None:
            return "no_link"
        status = self.client.check_token(link.orcid, tokens)
        if status.revoked:
            self.store.mark_revoked(user_key, "invalid_token")
        elif status.state.value == "unknown":
            log.warning("could not check a link at ORCID: %s", status.evidence)
        return status.state.value


    def unlink(self, user_key: str, *, reason: str = "admin") -> Link:
        """Unlink a user and revoke the tokens at ORCID (best effort: the link goes either way)."""
        link, tokens = self.store.unlink(user_key, reason=reason)
        if tokens is not None:
            for token in filter(None, (tokens.access_token, tokens.refresh_token)):
                try:
                    self.client.revoke(token)
                except OrcidError as exc:
                    self.store.audit("revoke_failed", user_key=user_key, orcid=str(link.orcid), error=exc.code)
                    log.warning("could not revoke a token at ORCID for an unlinked user: %s", exc.code)
        return link


__all__ = ["OrcidLinkService", "HopStart", "ConnectStart", "ConnectResult", "NotFound", "utcnow"]
