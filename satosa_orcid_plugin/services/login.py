"""The login service: what the micro-service asks during a login and on its endpoints.

It decides (fast path or hop), starts the hop, completes the callback, runs Institutional
Connect (the state-less code, the verification, the pending link) and remembers "not now".
It joins the ORCID client, the store and the policy, and knows nothing about SATOSA.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from ..config import PluginConfig
from ..errors import (BadCallback, CallbackReplayed, ConnectMismatch, ConnectThrottled, LinkConflict, MissingFlowState,
                      OrcidError, StoreError)
from ..orcid_client import Grant, OrcidClient
from ..orcid_id import OrcidId
from ..policy import Action, Decision, decide
from ..store import GLOBAL_ISSUER, Link, Pending, Store, utcnow
from ..tokens import TokenSet
from .revocation import TokenRevoker

log = logging.getLogger(__name__)

# ORCID-Source's OrcidAuthorizationCodeServiceImpl extends Spring Security OAuth2's
# RandomValueAuthorizationCodeServices, whose RandomValueStringGenerator makes 6 characters
# of [0-9A-Za-z]. Lenient, should ORCID lengthen them or go URL-safe: 6 to 64 of [0-9A-Za-z_-].
CONNECT_CODE = re.compile(r"[0-9A-Za-z_-]{6,64}")


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
    name: str | None = None  # the record's name, as ORCID gives it


class LoginService:
    """Built by :func:`satosa_orcid_plugin.wiring.login_service` for the proxy."""

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
        self.pending = store.pending
        self.revoker = TokenRevoker(client, store)

    def __repr__(self) -> str:
        return f"LoginService({self.config.orcid!r}, {self.store!r})"

    @functools.cached_property
    def _client_key(self) -> bytes:
        """Names connect rate buckets by an HMAC of the client address (a plain hash of an IPv4
        address is reversed by trying them all); derived once, not per request."""
        return hashlib.sha256(b"connect client|" + "".join(self.config.store.token_keys[:1]).encode()).digest()

    @property
    def environment(self) -> str:
        return "sandbox" if self.config.orcid.sandbox else "production"

    # --- login decisions ------------------------------------------------------------
    def decide(
        self, user_key: str | None, requester: str | None, asserted: OrcidId | None = None, *, issuer: str | None,
        requested: bool = False
    ) -> Decision:
        """The login's decision for ``user_key`` as asserted by ``issuer`` (the key's issuer
        from :func:`~satosa_orcid_plugin.policy.check_user_key`; None: no key)."""
        linked = declined = None
        if issuer is None:
            user_key = None
        if user_key:
            link, decision = self.store.links.login_view(user_key, self.clock(), issuer=issuer)  # one query
            if link is not None and link.environment == self.environment:
                linked = link.orcid
            if linked is None and asserted is None:
                declined = decision
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

    # --- the login parked while the browser is at ORCID -------------------------------
    def park(self, payload: dict[str, Any], ttl: int) -> str:
        """Keep a flow (the whole login) in the store; returns the handle SATOSA's state carries."""
        return self.store.parked.park(payload, ttl)

    def unpark(self, handle: str, *, take: bool) -> dict[str, Any] | None:
        """The parked flow, or None when it is gone; ``take`` removes it (single use)."""
        return self.store.parked.take(handle) if take else self.store.parked.get(handle)

    def claim_callback(self, state: str, expires_at: datetime) -> bool:
        """True the first time a callback for this OAuth state is processed, False on replay."""
        return self._claim("state", state, expires_at)

    def claim_marker(self, marker_id: str, expires_at: datetime) -> bool:
        """True the first time a sign-in marker is used, in any browser; False after."""
        return self._claim("marker", marker_id, expires_at)

    def _claim(self, kind: str, value: str, expires_at: datetime) -> bool:
        return self.store.once.consume(_once_key(kind, value), expires_at)

    def complete_hop(
        self, *, user_key: str, code: str, redirect_uri: str, nonce: str | None, session_id: str | None = None,
        attributes: Mapping[str, Any] | None = None, issuer: str = GLOBAL_ISSUER,
    ) -> Link:
        """Exchange the code (once), verify, and store the link with its tokens (and, with
        member scopes, queue the affiliations in the same transaction)."""
        grant = self.exchange(code, redirect_uri, nonce=nonce)
        return self.store_grant(user_key, grant, session_id=session_id, attributes=attributes, issuer=issuer)

    def exchange(self, code: str, redirect_uri: str, *, nonce: str | None, require_id_token: bool | None = None) -> Grant:
        """The code exchange; a token ORCID issued in an answer we then refused (an id_token
        that does not verify, no iD) is revoked before the error goes up."""
        try:
            return self.client.exchange_code(code, redirect_uri, nonce=nonce, require_id_token=require_id_token)
        except OrcidError as exc:
            self._give_up(exc.issued_token, None, "exchange_refused")
            raise

    def store_grant(self, user_key: str, grant: Grant, *, session_id: str | None = None,
                    attributes: Mapping[str, Any] | None = None, issuer: str = GLOBAL_ISSUER) -> Link:
        """Store the grant as the user's link; a token no link ends up holding (the write
        failed, the iD is someone else's, or the grant replaced older tokens) is revoked."""
        tokens = TokenSet.from_token_response(grant.token_response(), self.clock())
        return self._link(user_key, grant.orcid, tokens, name=grant.name, amr=grant.amr, session_id=session_id,
                          attributes=attributes, issuer=issuer)

    def _link(self, user_key: str, orcid: OrcidId, tokens: TokenSet, *, name: str | None, amr: str | None,
              session_id: str | None, attributes: Mapping[str, Any] | None, issuer: str) -> Link:
        intent = None
        try:
            intent = self.revoker.intend(tokens.access_token, orcid=orcid)
            link = self.store.links.link(user_key, orcid, tokens, issuer=issuer, name=name, amr=amr,
                                         environment=self.environment,
                                         session_id=session_id, on_conflict=self.config.on_conflict,
                                         extra=self._affiliation_extra(attributes), intent=intent)
        except Exception as exc:  # whatever failed, the link does not hold this token
            self.revoker.give_up(tokens.access_token, orcid=orcid, intent=intent,
                                 reason="conflict" if isinstance(exc, LinkConflict) else "link_failed")
            raise
        self.revoker.housekeeping(link.superseded)
        return link

    def record_decline(self, user_key: str, decision: str = "not_now", *, session_id: str | None = None,
                       issuer: str = GLOBAL_ISSUER) -> None:
        until = None
        if decision == "not_now":
            until = self.clock() + timedelta(seconds=self.config.decline.not_now_seconds)
        self.store.decisions.record(user_key, decision, until, session_id=session_id, issuer=issuer)

    def on_release(self, user_key: str, attributes: Mapping[str, Any], *, issuer: str = GLOBAL_ISSUER) -> int:
        """A linked user logged in: keep the affiliations on the record in step (cheap; no
        network; never raises for database trouble). Returns the number of items queued."""
        return self.store.outbox.on_login(self._affiliation_settings(), user_key, attributes, issuer=issuer)

    def _affiliation_settings(self) -> Any:
        return getattr(self.config, "affiliations", None)

    def _affiliation_extra(self, attributes: Mapping[str, Any] | None) -> Any:
        """Queue this login's affiliations in the link's own transaction (None when not configured)."""
        return self.store.outbox.link_extra(self._affiliation_settings(), attributes or {})

    # --- Institutional Connect ------------------------------------------------------
    def guard_connect(self, code: str, client: str | None) -> None:
        """No ORCID call without a reason: a code of ORCID's shape, and a token from this
        client address's bucket and from the deployment's (both in the database)."""
        if not CONNECT_CODE.fullmatch(code):
            raise BadCallback("this is not an ORCID authorization code")
        limits = self.config.connect.limits
        who = hmac.new(self._client_key, (client or "unknown").encode(), hashlib.sha256).hexdigest()[:40]
        client_bucket = self.store.rate_limiter(rate=limits.client_rate, burst=limits.client_burst,
                                                name=f"connect:c{who}")
        if secrets.randbelow(100) == 0:  # one row per address seen, but not forever
            client_bucket.forget_refilled("connect:c")
        total_bucket = self.store.rate_limiter(rate=limits.total_rate, burst=limits.total_burst, name="connect:total")
        for bucket, where in ((client_bucket, "from this address"), (total_bucket, "in total")):
            if bucket.try_acquire() > 0:
                raise ConnectThrottled(f"too many ORCID connect links {where}")

    def connect_exchange(self, code: str, redirect_uri: str) -> Grant:
        """Exchange ORCID's state-less connect code at once, and never twice."""
        key = _once_key("code", code)
        if not self.store.once.consume(key, self.clock() + timedelta(hours=1)):
            raise CallbackReplayed("this ORCID connect link was already used")
        try:
            return self.exchange(code, redirect_uri, nonce=None, require_id_token=False)
        except OrcidError:
            self.store.once.release(key)  # ORCID refused it, and refuses it again: no row kept
            raise

    def begin_connect(self, code: str, connect_uri: str, *, client: str | None = None) -> ConnectStart:
        """ORCID's state-less connect code: checked (shape, rate) before any call to ORCID,
        exchanged at once (never twice), kept pending, and followed by the state-protected
        authorize that must name the same iD."""
        self.guard_connect(code, client)
        grant = self.connect_exchange(code, connect_uri)
        try:
            handle = self.keep_pending(grant, origin=client)
        except StoreError:
            self._give_up(grant.access_token, grant.orcid, "connect_failed")
            raise
        return ConnectStart(handle, self.start_hop(grant.scope))

    def complete_connect(self, handle: str, code: str, *, redirect_uri: str, nonce: str | None,
                         user_key: str | None, session_id: str | None = None,
                         issuer: str = GLOBAL_ISSUER) -> ConnectResult:
        """The state-protected code: bind only when it names the pending iD; link at once when
        the browser's institutional user is known, else the verified grant stays pending."""
        fresh = self.exchange(code, redirect_uri, nonce=nonce, require_id_token=False)
        try:
            pending = self.verify_connect(handle, fresh)
        except StoreError:
            self._give_up(fresh.access_token, fresh.orcid, "connect_failed")
            raise
        link = self.finish_pending(handle, user_key, session_id=session_id, issuer=issuer) if user_key else None
        return ConnectResult(pending.orcid, link, pending.name)

    def keep_pending(self, grant: Grant, *, verified: bool = False, origin: str | None = None) -> str:
        """Keep a grant whose institutional user is not known yet (``origin``: the address the
        connect came from); returns the cookie handle."""
        tokens = TokenSet.from_token_response(grant.token_response(), self.clock())
        self.reap_pending()
        return self.pending.create(grant.orcid, tokens, name=grant.name, amr=grant.amr,
                                   ttl=self.config.connect.pending_ttl_seconds, verified=verified, origin=origin)

    def reap_pending(self) -> int:
        """Revoke and forget pending links nobody finished in time."""
        expired = self.pending.take_expired()
        for tokens in expired:
            self._give_up(tokens.access_token, None, "pending_expired")
        return len(expired)

    def verify_connect(self, handle: str, fresh: Grant) -> Pending:
        """Bind only when the state-protected grant names the same iD as the state-less one.

        On a match the surplus (state-less) token is revoked and the fresh one kept; on a
        mismatch (a login-CSRF attempt, or another ORCID account signed in) both go.
        """
        pending = self.pending.get(handle)
        if pending is None:
            self._give_up(fresh.access_token, fresh.orcid, "connect_expired")
            raise MissingFlowState("the pending ORCID connection expired")
        if fresh.orcid != pending.orcid:
            self.pending.delete(handle)
            self._give_up(fresh.access_token, fresh.orcid, "connect_mismatch")
            self._give_up(pending.tokens.access_token, pending.orcid, "connect_mismatch")
            self.store.db.append_audit("connect_mismatch", orcid=str(pending.orcid), presented=str(fresh.orcid))
            raise ConnectMismatch()
        self._give_up(pending.tokens.access_token, pending.orcid, "connect_surplus")
        tokens = TokenSet.from_token_response(fresh.token_response(), self.clock())
        self.pending.mark_verified(handle, tokens)
        return Pending(pending.orcid, True, tokens, fresh.name or pending.name, fresh.amr or pending.amr)

    def finish_pending(self, handle: str, user_key: str, *, session_id: str | None = None,
                       attributes: Mapping[str, Any] | None = None, issuer: str = GLOBAL_ISSUER) -> Link | None:
        """Link a verified pending iD to the institutional user (single use)."""
        pending = self.pending.take(handle)
        if pending is None or not pending.verified:
            return None
        return self._link(user_key, pending.orcid, pending.tokens, name=pending.name, amr=pending.amr,
                          session_id=session_id, attributes=attributes, issuer=issuer)

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
            self._give_up(pending.tokens.access_token, pending.orcid, "pending_discarded")

    def _give_up(self, token: str | None, orcid: OrcidId | None, reason: str) -> None:
        """A token no link will hold: revoked at ORCID now, or queued for a retry."""
        self.revoker.give_up(token, orcid=orcid, reason=reason)


def _once_key(kind: str, value: str) -> str:
    """The single-use row of a state, a connect code or a sign-in marker (a hash: never the value)."""
    return f"{kind}:{hashlib.sha256(value.encode()).hexdigest()}"


__all__ = ["LoginService", "HopStart", "ConnectStart", "ConnectResult"]
