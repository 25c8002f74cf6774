"""SATOSA glue, and nothing else: state in and out, redirects, pages, cookies.

``OrcidConnect`` is a response micro-service (``module: satosa_orcid_plugin.OrcidConnect``,
``name: orcid``; the README shows the YAML); ``OrcidRequestHint`` an optional request one.
Register ``<BASE>/orcid/callback`` and ``<BASE>/orcid/connect`` as redirect URIs with ORCID.

* ``GET  orcid/callback``  ORCID's answer to our state-protected authorize
* ``GET  orcid/connect``   ORCID's state-less Institutional Connect redirect
* ``POST orcid/choice``    the interstitial's "Not now" / "Don't ask again" / "Cancel" (its "Connect"
  is a link straight to ORCID's authorize URL, made when the page is rendered)
* ``POST orcid/confirm``   the confirmation of a pending Institutional Connect link
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlsplit

import satosa.logging_util as lu
from satosa.base import STATE_KEY as SATOSA_STATE_KEY  # {"requester": ...}, kept for the whole login
from satosa.context import Context
from satosa.exception import SATOSAAuthenticationError
from satosa.internal import InternalData
from satosa.micro_services.base import RequestMicroService, ResponseMicroService
from satosa.response import Redirect, Response

from . import flow, metrics, pages, policy
from .config import PluginConfig, parse_config
from .cookies import CookieSealer, clear_cookie, read_cookie, set_cookie
from .errors import (CallbackReplayed, ConfigError, ConnectThrottled, LinkConflict, MissingFlowState, OrcidOAuthError,
                     OrcidPluginError, UserDenied)
from .flow import FlowKind, FlowRecord
from .i18n import negotiate
from .ops.checks import plugin_startup_checks
from .ops import idp_metadata
from .ops.cookie_size import BROWSER_COOKIE_LIMIT, state_cookie_bytes, warn_at_startup
from .ops.health import health_endpoint
from .orcid_id import OrcidId
from .policy import Action
from .wiring import login_service

log = logging.getLogger(__name__)
HINT_STATE_KEY = "ORCID_HINT"  # written by OrcidRequestHint, read by OrcidConnect


def _state_tag(state: str) -> str:
    """Names a hop in the "done" cookie without carrying its OAuth state."""
    return hashlib.sha256(b"hop done|" + state.encode()).hexdigest()[:32]


class OrcidRequestHint(RequestMicroService):
    """Remember whether the SP's request (SAML RequestedAttribute, OIDC scope/claims) asked
    for the ORCID attribute, so OrcidConnect treats that SP as ``ask`` without per-SP config.

    Caveat (SATOSA): a SAML SP whose metadata lists no RequestedAttribute "requests" every
    attribute the policy allows.
    """

    def __init__(self, config: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("internal_attributes", None)
        super().__init__(*args, **kwargs)
        self.attribute = str((config or {}).get("orcid_attribute", "edupersonorcid")).lower()

    def process(self, context: Context, data: InternalData) -> Any:
        requested = self.attribute in (data.attributes or [])
        hint: dict[str, Any] = {"requested": bool(requested)}
        name = pages.display_name(data.requester_name)
        if name:
            hint["name"] = name[:80]  # for the pages; the response side has no requester name
        url = self._service_site(context)
        if url and len(url) <= 200:
            hint["url"] = url  # where an error page sends the researcher back to
        context.state[HINT_STATE_KEY] = hint
        return super().process(context, data)

    @staticmethod
    def _service_site(context: Context) -> str | None:
        """The service's own site (``https://host/``), from what the frontend keeps for its
        answer: the SAML AssertionConsumerService (``resp_args.destination``, SATOSA's
        ``frontends/saml2.py``) or the OIDC ``redirect_uri`` (``oidc_request``,
        ``frontends/openid_connect.py``)."""
        try:
            kept = context.state.get(context.target_frontend) if context.state is not None else None
            if not isinstance(kept, dict):
                return None
            args = kept.get("resp_args")
            if isinstance(args, dict) and isinstance(args.get("destination"), str):
                return pages.site_of(args["destination"])
            if isinstance(kept.get("oidc_request"), str):
                return pages.site_of((parse_qs(kept["oidc_request"]).get("redirect_uri") or [None])[0])
        except Exception:  # a frontend this does not know: no link back, never a broken login
            return None
        return None


def register_oidc_claim_type(claim: str, kind: str) -> None:
    """Deliver the OIDC ``claim`` as a JSON string (``kind="string"``, the first value) or an
    array (``"array"``, SATOSA's default for claims it does not know).

    SATOSA's OpenID Connect frontend turns every attribute into a claim through one table,
    ``combine_values_by_claim`` (``satosa/frontends/openid_connect.py``): claim name -> function
    of the value list, ``combine_select_first_value`` for the single-valued standard claims of
    OIDC Core 5.1 (``email``, ``name``, ...), ``combine_return_input`` (the list) for the rest.
    The userinfo response and id_token claims requested through ``claims`` are built from what
    that table returns. Registering the claim there is the smallest hook SATOSA offers: the
    deployment keeps its own frontend module and configuration. The table is per process, so
    the last micro-service to register a claim wins (there is one ORCID micro-service).
    """
    import satosa.frontends.openid_connect as oidc_frontend

    table = getattr(oidc_frontend, "combine_values_by_claim", None)
    if table is None:  # a SATOSA without the table: claims stay lists, say so once at start-up
        log.warning("SATOSA's OIDC frontend has no combine_values_by_claim table: %s is released as an array", claim)
        return
    if kind == "string":
        table[claim] = oidc_frontend.combine_select_first_value
    else:
        table[claim] = oidc_frontend.combine_return_input


class OrcidConnect(ResponseMicroService):
    """Collect the researcher's authenticated ORCID iD during a login and release it."""

    def __init__(self, config: dict[str, Any] | None, internal_attributes: dict[str, Any] | None = None,
                 *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self._start(config, internal_attributes)
        except ConfigError as exc:
            # One line before SATOSA's loader logs its own traceback ("Failed to create WSGI app").
            log.error("%s", exc.message)
            raise

    def _start(self, config: dict[str, Any] | None, internal_attributes: dict[str, Any] | None) -> None:
        self.config: PluginConfig = parse_config(config)
        attrs = (internal_attributes or {}).get("attributes", {})
        if attrs and self.config.orcid_attribute not in attrs:
            raise ConfigError("orcid_attribute",
                              f"internal attribute {self.config.orcid_attribute!r} is not defined in internal_attributes")
        problems, warnings = plugin_startup_checks(config, self.config, internal_attributes)
        if problems:
            key, _, problem = problems[0].partition(": ")
            raise ConfigError(key, problem)
        for warning in warnings:
            log.warning("satosa-orcid config: %s", warning)
        oidc_claim = ((attrs.get(self.config.orcid_attribute) or {}).get("openid") or [None])[0]
        if oidc_claim:
            register_oidc_claim_type(oidc_claim, self.config.oidc_claim_type)
        self.service = login_service(self.config, instance=self.name, existing_issuer=self._existing_issuer())
        base = (self.config.redirect_base or self.base_url).rstrip("/")
        self.redirect_uri = f"{base}/{self.name}/callback"
        self.connect_uri = f"{base}/{self.name}/connect"
        self.endpoint_base = f"{self.base_url.rstrip('/')}/{self.name}"
        self.secure = self.config.connect.cookie_secure
        # __Host- (RFC 6265bis section 4.1.3.2): Secure, Path=/, no Domain, so a sibling
        # domain cannot plant or overwrite them. Only with Secure: plain http refuses it.
        prefix = "__Host-" if self.secure else ""
        self.marker_cookie = f"{prefix}{self.name}_signin"
        # The id of the marker this browser's SATOSA session set, in that session's state; it
        # survives until /connect only with CONTEXT_STATE_DELETE: false (see _use_marker).
        self.marker_state_key = f"{self.name}_signin"
        self.pending_cookie = f"{prefix}{self.name}_pending"
        self.done_cookie = f"{prefix}{self.name}_done"
        self.sealer = CookieSealer(self.config.store.token_keys, "institutional sign-in marker")
        self.done_sealer = CookieSealer(self.config.store.token_keys, "hop done")
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.base_url))
        self.site = pages.Site.of(self.config.interstitial)
        self.headers = pages.headers(form_targets=(self.config.orcid.base_url,), logo_url=self.site.logo_url)
        warn_at_startup(self.name, self.config)  # the state cookie of a hop must stay under 4096 bytes
        # Warm ORCID's key set in the background (each gunicorn worker builds the app after the
        # fork), so the first callbacks after a deploy do not all wait for it. Never waits, never
        # fails: with ORCID down the first callback fetches it within the ORCID timeouts.
        self.service.client.prefetch_keys()
        if self._checks_scopes and not idp_metadata.known(self.base_url):
            log.warning("scope_check is %s but no SAML backend of this proxy is "
                        "satosa_orcid_plugin.ops.saml2_backend.SAMLBackend: the IdPs' shibmd:Scope values are unknown, "
                        "so scoped user keys are %s", self.config.scope_check,
                        "refused" if self.config.scope_check == "enforce" else "only reported")

    @property
    def _checks_scopes(self) -> bool:
        return self.config.user_key_scoped and self.config.scope_check != "off"

    def _existing_issuer(self) -> str | None:
        """The issuer of links stored before keys were issuer-bound (store revision 0006):
        configured, or the one IdP of the SAML backend's metadata."""
        issuer = self.config.existing_issuer
        if issuer is None:
            issuer = idp_metadata.single_idp(self.base_url)
            if issuer is not None:
                log.info("links stored before issuer binding belong to %s, the one IdP of the SAML backend's "
                         "metadata (set default_issuer to name another)", flow.log_token(issuer))
        return issuer

    def register_endpoints(self) -> list[tuple[str, Any]]:
        handlers = [("callback", self._callback, "GET"), ("connect", self._connect, "GET"),
                    ("choice", self._choice, "POST"), ("confirm", self._confirm, "POST")]
        return [(f"^{self.name}/{path}$", self._guard(handler, method)) for path, handler, method in handlers] \
            + [(f"^{self.name}/health(/detail)?$", health_endpoint(lambda: self.service.store.db.health()))]

    # --- the login --------------------------------------------------------------------
    def process(self, context: Context, data: InternalData) -> Any:
        check = self._check_user_key(context, data)
        user_key, issuer = check.user_key, check.issuer
        hint = context.state.get(HINT_STATE_KEY) if context.state is not None else None
        hint = hint if isinstance(hint, dict) else {}
        try:
            asserted = policy.asserted_orcid(self.config, getattr(data.auth_info, "issuer", None), data.attributes)
            decision = self.service.decide(user_key, data.requester, asserted, issuer=issuer,
                                           requested=bool(hint.get("requested")))
        except OrcidPluginError as exc:
            self._log(context, logging.ERROR, f"ORCID lookup failed ({exc.code}); continuing without the iD")
            return self._continue(context, data, None, outcome=f"error_{exc.code}")
        if decision.reason == "orcid_signin":
            return self._orcid_signin(context, data, user_key, issuer)
        if user_key:
            try:
                page = self._pending_confirmation(context, data, user_key, issuer, decision)
            except OrcidPluginError as exc:
                self._log(context, logging.WARNING, f"pending ORCID connection unreadable ({exc.code})")
                page = None
            if page is not None:
                return page
        if decision.action is Action.RELEASE:
            if user_key and decision.reason == "linked":
                self.service.on_release(user_key, data.attributes, issuer=issuer)
            return self._continue(context, data, decision.orcid, outcome=decision.reason)
        if decision.action is Action.SKIP:
            if decision.reason == "no_user_key" and check.problem:
                return self._continue(context, data, None, outcome=f"user_key_{check.problem}")
            if decision.reason == "no_user_key":
                self._log(context, logging.WARNING,
                          f"no {self.config.user_key_attribute!r} attribute in this login: no ORCID hop")
            return self._continue(context, data, None, outcome=decision.reason)
        hop = self.service.start_hop()
        try:
            record = self._save(context, FlowKind.HOP, hop.state, data, nonce=hop.nonce, user=user_key, issuer=issuer,
                                mode=decision.mode, form=flow.form_token())
        except OrcidPluginError as exc:  # the store is down: no hop without a place to park the login
            return self._park_failed(context, data, decision.mode, exc)
        self._metric("hop_started", "interstitial" if self.config.interstitial.enabled else "redirect")
        if not self.config.interstitial.enabled:
            self._log(context, logging.INFO, "not linked: sending the researcher to ORCID")
            return Redirect(self._hop_url(record, data))
        self._log(context, logging.INFO, "not linked: showing the ORCID interstitial")
        cfg = self.config.interstitial
        # "Connect" is a link to ORCID's authorize URL, made now (the state and nonce are saved
        # above): pressing it costs the proxy nothing, no request and no state cookie to encode.
        return self._page(pages.translated(
            "interstitial.html", cfg.templates_dir, record.lang, site=self.site, state=record.form,
            service=pages.service_name(cfg.service_names, data.requester, hint.get("name")),
            required=decision.required, user=user_key, action=f"{self.endpoint_base}/choice",
            connect_url=self._hop_url(record, data)))

    def _check_user_key(self, context: Context, data: InternalData) -> policy.KeyCheck:
        """The login's user key and its issuer (the IdP that asserted it), after the scope check
        against that IdP's shibmd:Scope; a problem is logged and counted here."""
        idp = getattr(data.auth_info, "issuer", None)
        raw = policy.first_value(data.attributes.get(self.config.user_key_attribute))
        scopes = idp_metadata.asserting_scopes(idp) if raw and self._checks_scopes else None
        check = policy.check_user_key(self.config, raw, idp, scopes)
        if check.problem:
            action = "refused" if check.user_key is None else "accepted (scope_check: warn)"
            self._log(context, logging.WARNING,
                      f"user key {action}: {check.problem}: IdP {flow.log_token(idp)} scope {flow.log_token(check.scope)}"
                      + ("; no ORCID lookup" if check.user_key is None else ""))
            metrics.record_user_key_problem(check.problem, "refused" if check.user_key is None else "warned")
        return check

    def _orcid_signin(self, context: Context, data: InternalData, user_key: str | None, issuer: str | None) -> Any:
        """The user is signing in to ORCID itself: no hop, but remember (sealed, short-lived)
        who this browser just authenticated, for ORCID's state-less connect redirect."""
        marker_id = secrets.token_urlsafe(16)
        if user_key and issuer is not None and context.state is not None:
            context.state[self.marker_state_key] = marker_id  # bound to this SATOSA session, where it lasts
        response = self._continue(context, data, None, outcome="orcid_signin")
        if user_key and issuer is not None and hasattr(response, "headers"):
            # "n": the marker's id, claimed (store.once) when /connect uses it, in whatever browser.
            # "i": the issuer of the key; a marker without one (older) names nobody.
            marker = self.sealer.seal({"u": user_key, "i": issuer, "t": int(time.time()), "n": marker_id})
            response.headers.append(set_cookie(self.marker_cookie, marker, path="/",
                                               max_age=self.config.connect.marker_ttl_seconds, secure=self.secure))
            self._log(context, logging.INFO, "institutional sign-in to ORCID: marker set")
        return response

    def _pending_confirmation(self, context: Context, data: InternalData, user_key: str, issuer: str | None,
                              decision: Any) -> Any:
        handle = read_cookie(getattr(context, "cookie", None), self.pending_cookie)
        pending = self.service.pending_to_confirm(handle, decision)
        if pending is None:
            return None
        token = flow.form_token()  # no OAuth here: the record's state is the form's token too
        record = self._save(context, FlowKind.CONFIRM, token, data, user=user_key, issuer=issuer, pending=handle,
                            mode=decision.mode, form=token)
        started = pending.created_at.strftime("%Y-%m-%d %H:%M UTC") if pending.created_at else None
        return self._page(pages.translated("confirm.html", self.config.interstitial.templates_dir, record.lang,
                                           site=self.site, user=user_key, orcid_uri=pending.orcid.uri, state=record.form,
                                           orcid_name=pending.name, started=started, origin=pending.origin,
                                           action=f"{self.endpoint_base}/confirm"))

    # --- ORCID sends the browser back ---------------------------------------------------
    def _callback(self, context: Context, reference: str) -> Any:
        ticket = flow.ticket(context.state, self.name, (FlowKind.HOP, FlowKind.CONNECT))
        params = self._params(context)
        if ticket is None:
            flow.forget(context.state, self.name)
            done = self._done(context, params)
            if done is not None:  # this browser's hop already finished: a reload, or the back button
                self._log(context, logging.INFO, f"ORCID callback of a finished hop seen again (ref {reference})")
                return self._already_connected(context, reference, done)
            self._log(context, logging.WARNING, f"ORCID callback without a sign-in in progress (ref {reference})")
            return self._error_page(context, reference, "callback_expired")
        if ticket.kind is FlowKind.HOP and not any(flow.param(params, k) for k in ("state", "code", "error")):
            return self._refused(context, ticket, reference)
        if not ticket.state_matches(params):
            # Not this browser's callback (forged, or from another tab): the sign-in in
            # progress stays as it is, so the real callback can still finish it.
            self._log(context, logging.WARNING, f"ORCID callback with a wrong state refused (ref {reference})")
            return self._error_page(context, reference, "wrong_state" if ticket.kind is FlowKind.HOP else "connect_failed")
        flow.forget(context.state, self.name)  # one shot from here on
        record = self._unpark(context, ticket, take=True)
        data = self._login(record)
        if record is None or (data is None and record.kind is FlowKind.HOP):
            return self._lost(context, ticket, params, reference)
        if record.kind is FlowKind.HOP:
            # The browser went to ORCID and came back: counted here, because "Connect" is a link
            # the proxy never sees (hops_started counts the interstitials shown).
            error = flow.param(params, "error")
            self._metric("hop_returned", "access_denied" if error == "access_denied" else "error" if error else "code")
        if record.kind is FlowKind.CONNECT:
            return self._connect_verified(context, record, params, reference)
        try:
            link = self.service.complete_hop(user_key=record.user, code=self._code(record, params),
                                             redirect_uri=self.redirect_uri, nonce=record.nonce,
                                             session_id=self._sid(context), attributes=data.attributes,
                                             issuer=self._record_issuer(record, data))
        except UserDenied:
            return self._declined(context, data, record, "not_now")
        except CallbackReplayed:
            self._log(context, logging.WARNING, f"replayed ORCID callback refused (ref {reference})")
            done = self._done(context, params)
            if done is not None:
                return self._already_connected(context, reference, done)
            return self._error_page(context, reference, "replayed")
        except LinkConflict as exc:
            self._log(context, logging.WARNING, "ORCID iD already linked to another user")
            return self._after_error(context, data, record, exc, reference)
        except OrcidPluginError as exc:
            return self._after_error(context, data, record, exc, reference)
        self._log(context, logging.INFO, "ORCID iD linked")
        service = self._service(context, data.requester)
        response = self._continue(context, data, link.orcid, outcome="linked_now")
        if hasattr(response, "headers"):
            response.headers.append(self._done_cookie(record.state, link.orcid, service))
        return response

    # --- a finished hop's callback, seen again --------------------------------------------
    def _done_cookie(self, state: str, orcid: OrcidId, service: tuple[str | None, str | None]) -> tuple[str, str]:
        """A small sealed note that this browser's hop (named by a hash of its state) linked
        ``orcid``: a reload of the callback, or the back button, then says the iD is connected
        instead of "not connected" (SATOSA has dropped the login's state by then)."""
        note = {"s": _state_tag(state), "o": orcid.uri, "n": service[0], "u": service[1]}
        return set_cookie(self.done_cookie, self.done_sealer.seal({k: v for k, v in note.items() if v}), path="/",
                          max_age=self.config.flow_ttl_seconds, secure=self.secure)

    def _done(self, context: Context, params: dict[str, Any]) -> dict[str, Any] | None:
        """This browser's note of a finished hop, when the callback carries that hop's state."""
        state = flow.param(params, "state")
        note = self.done_sealer.open(read_cookie(getattr(context, "cookie", None), self.done_cookie),
                                     ttl=self.config.flow_ttl_seconds)
        if not state or not note or not isinstance(note.get("s"), str) or not isinstance(note.get("o"), str):
            return None
        return note if secrets.compare_digest(note["s"], _state_tag(state)) else None

    def _already_connected(self, context: Context, reference: str, note: dict[str, Any]) -> Response:
        name, url = note.get("n"), note.get("u")
        return self._error_page(context, reference, "already_connected", orcid_uri=note["o"],
                                service=(name if isinstance(name, str) else None, url if isinstance(url, str) else None))

    def _refused(self, context: Context, ticket: flow.Ticket, reference: str) -> Any:
        """ORCID answers ``invalid_scope`` and ``unsupported_response_type`` in the URL fragment,
        with no state (orcid-angular ``src/app/core/oauth/oauth.service.ts``): the browser comes
        back with no parameters the proxy can see. The researcher gets a page that says so and
        continues (or fails, when the service requires the iD) with its button; the login in
        progress is untouched until then, so a bare link cannot end it."""
        self._log(context, logging.WARNING, "ORCID sent the browser back without parameters: it refused the authorize "
                  "request (invalid_scope or unsupported_response_type, in the URL fragment); check orcid.scopes "
                  f"against the client's registration at ORCID (ref {reference})")
        self._metric("failed", "orcid_refused")
        return self._page(pages.translated("refused.html", self.config.interstitial.templates_dir, self._lang(context),
                                           site=self.site, reference=reference, state=ticket.form,
                                           action=f"{self.endpoint_base}/choice"), "400 Bad Request")

    def _code(self, record: FlowRecord | flow.Ticket, params: dict[str, Any]) -> str:
        """The callback's code (state first, then error, then code); each callback once."""
        code = flow.parse_callback(params, record.state)
        if not self.service.claim_callback(record.state, record.expires_at):
            raise CallbackReplayed()
        return code

    # --- the interstitial's buttons -------------------------------------------------
    def _choice(self, context: Context, reference: str) -> Any:
        params = self._params(context)
        ticket = flow.ticket(context.state, self.name, (FlowKind.HOP,))
        if ticket is None or not ticket.form_matches(flow.param(params, "state")):
            return self._error_page(context, reference, "expired")
        choice = flow.param(params, "choice")
        if choice != "connect":
            flow.forget(context.state, self.name)  # the login resumes here: one shot
        record = self._unpark(context, ticket, take=choice != "connect")
        data = self._login(record)
        if record is None or data is None:
            return self._lost(context, ticket, {}, reference)
        if choice == "connect":
            # The shipped page links to ORCID directly; an interstitial.html overridden from an
            # older release may still post "connect": it works as before (one more round trip).
            self._log(context, logging.INFO, "interstitial: connect posted; sending the researcher to ORCID")
            return Redirect(self._hop_url(record, data))
        if choice == "skip":  # the page after ORCID refused the request
            refused = OrcidOAuthError("refused", "ORCID refused the authorize request (error in the URL fragment)")
            return self._after_error(context, data, record, refused, reference)
        if choice in ("not_now", "never") and record.mode != "require":
            return self._declined(context, data, record, choice)
        if choice == "cancel" or record.mode == "require":
            self._metric("denied", "cancel")
            self._log(context, logging.INFO, "interstitial: cancelled a login that requires ORCID")
            raise SATOSAAuthenticationError(context.state, "the service requires an ORCID iD")
        return self._continue(context, data, None, outcome="interstitial_unknown_choice")

    # --- Institutional Connect ------------------------------------------------------------
    def _connect(self, context: Context, reference: str) -> Any:
        """ORCID's state-less redirect after the researcher granted access on orcid.org.

        A code without state is a login-CSRF risk, so it is exchanged at once (never twice)
        and bound only after a fresh state-protected authorize returns the same iD.
        """
        params = self._params(context)
        error, code = flow.param(params, "error"), flow.param(params, "code")
        if error == "access_denied":
            return self._error_page(context, reference, "connect_declined")
        if error or not code:
            self._log(context, logging.WARNING, f"connect without a code (ref {reference})")
            return self._error_page(context, reference, "connect_invalid")
        try:
            start = self.service.begin_connect(code, self.connect_uri, client=self._client_address(context))
        except ConnectThrottled as exc:
            self._log(context, logging.WARNING, f"connect refused, nothing sent to ORCID: {exc} (ref {reference})")
            self._metric("failed", exc.code)
            return self._error_page(context, reference, "connect_throttled", headers=[("Retry-After", "60")])
        except OrcidPluginError as exc:
            self._log(context, logging.WARNING, f"connect code rejected: {exc.code} (ref {reference})")
            return self._error_page(context, reference, "connect_rejected")
        user, issuer = self._use_marker(context, reference)
        try:
            record = self._save(context, FlowKind.CONNECT, start.hop.state, nonce=start.hop.nonce,
                                user=user, issuer=issuer, pending=start.handle)
        except OrcidPluginError as exc:
            self._log(context, logging.WARNING, f"connect could not be parked: {exc.code} (ref {reference})")
            self._discard_pending(start.handle)
            return self._error_page(context, reference, "connect_failed", code=exc.code)
        self._log(context, logging.INFO, "connect: verifying the ORCID account with a state-protected authorize")
        response = Redirect(self._hop_url(record, scopes=start.hop.scopes))
        response.headers.append(self._clear_marker())
        return response

    def _use_marker(self, context: Context, reference: str) -> tuple[str | None, str | None]:
        """The institutional user (user key, issuer) of this browser's sign-in marker, claimed
        once for all browsers (a copy used before, or after, is worth nothing); (None, None)
        without one."""
        ttl = self.config.connect.marker_ttl_seconds
        marker = self.sealer.open(read_cookie(getattr(context, "cookie", None), self.marker_cookie), ttl=ttl)
        if not marker or not all(isinstance(marker.get(k), str) for k in ("u", "i", "n")):
            return None, None
        # Bound to the SATOSA session that set it, where that session still exists (SATOSA
        # deletes its state at the end of every login unless CONTEXT_STATE_DELETE is false;
        # ORCID's connect redirect carries nothing else of that login): a marker of another
        # session, planted next to this browser's own sign-in, names nobody.
        bound = context.state.get(self.marker_state_key) if context.state is not None else None
        if isinstance(bound, str) and not hmac.compare_digest(bound.encode(), marker["n"].encode()):
            self._log(context, logging.WARNING,
                      f"connect: sign-in marker from another SATOSA session, ignored (ref {reference})")
            return None, None
        expires = datetime.fromtimestamp(int(marker.get("t") or 0) + ttl + 60, timezone.utc)
        if not self.service.claim_marker(marker["n"], max(expires, datetime.now(timezone.utc) + timedelta(minutes=1))):
            self._log(context, logging.WARNING, f"connect: sign-in marker already used, ignored (ref {reference})")
            return None, None
        if context.state is not None:
            context.state.pop(self.marker_state_key, None)
        return marker["u"], marker["i"]

    def _client_address(self, context: Context) -> str | None:
        """The address the rate limit counts: REMOTE_ADDR (SATOSA copies REMOTE_* into
        ``http_headers``), i.e. the reverse proxy's behind one, unless ``trusted_proxies`` says
        how many proxies of ours append to X-Forwarded-For (the client can write the rest)."""
        headers = getattr(context, "http_headers", None) or {}
        hops = self.config.connect.limits.trusted_proxies
        forwarded = [a.strip() for a in str(headers.get("HTTP_X_FORWARDED_FOR") or "").split(",") if a.strip()]
        address = forwarded[-hops] if hops and len(forwarded) >= hops else headers.get("REMOTE_ADDR")
        return str(address)[:64] if address else None

    def _connect_verified(self, context: Context, record: FlowRecord, params: dict[str, Any], reference: str) -> Any:
        try:
            result = self.service.complete_connect(record.pending, self._code(record, params),
                                                   redirect_uri=self.redirect_uri, nonce=record.nonce,
                                                   user_key=record.user if record.issuer is not None else None,
                                                   issuer=record.issuer or "", session_id=self._sid(context))
        except OrcidPluginError as exc:
            self.service.discard_pending(record.pending)
            if isinstance(exc, UserDenied):
                return self._error_page(context, reference, "connect_declined")
            self._log(context, logging.WARNING, f"connect verification failed: {exc.code} (ref {reference})")
            return self._error_page(context, reference, "connect_failed", code=exc.code, headers=[self._clear_marker()])
        extra = []
        if result.link is not None:
            self._log(context, logging.INFO, "Institutional Connect: ORCID iD linked")
            template, cookie, expires = "connected.html", self._clear_marker(), None
            extra.append(self._done_cookie(record.state, result.orcid, (None, None)))  # a reload: "already connected"
        else:
            self._log(context, logging.INFO, "Institutional Connect: verified, pending the next institutional login")
            # SameSite=None: it must reach the proxy on the IdP's cross-site POST of the next login.
            # A session cookie: it goes when the browser closes (a shared browser's next user
            # does not inherit it); the pending link itself expires after connect.pending_ttl.
            template, cookie = "pending.html", set_cookie(self.pending_cookie, record.pending, path="/", samesite="None",
                                                          max_age=None, secure=self.secure)
            expires = (datetime.now(timezone.utc)
                       + timedelta(seconds=self.config.connect.pending_ttl_seconds)).strftime("%Y-%m-%d %H:%M")
        return self._page(pages.translated(template, self.config.interstitial.templates_dir, record.lang,
                                           site=self.site, user=record.user, orcid_name=result.name,
                                           orcid_uri=result.orcid.uri, expires=expires), headers=[cookie, *extra])

    def _confirm(self, context: Context, reference: str) -> Any:
        params = self._params(context)
        ticket = flow.ticket(context.state, self.name, (FlowKind.CONFIRM,))
        if ticket is None or not ticket.form_matches(flow.param(params, "state")):
            return self._error_page(context, reference, "expired")
        flow.forget(context.state, self.name)
        record = self._unpark(context, ticket, take=True)
        data = self._login(record)
        if record is None or data is None:
            return self._lost(context, ticket, {}, reference)
        response = self._confirmed(context, data, record, flow.param(params, "choice") == "yes", reference)
        if hasattr(response, "headers"):
            response.headers.append(clear_cookie(self.pending_cookie, path="/", samesite="None", secure=self.secure))
        return response

    def _confirmed(self, context: Context, data: InternalData, record: FlowRecord, yes: bool, reference: str) -> Any:
        if not yes:
            self.service.discard_pending(record.pending)
            self._log(context, logging.INFO, "pending ORCID connection refused by the user")
            return self._continue(context, data, None, outcome="pending_refused")
        try:
            link = self.service.finish_pending(record.pending, record.user, session_id=self._sid(context),
                                               attributes=data.attributes, issuer=self._record_issuer(record, data))
        except OrcidPluginError as exc:
            return self._after_error(context, data, record, exc, reference)
        orcid = link.orcid if link is not None else None
        self._log(context, logging.INFO, "pending ORCID connection confirmed" if link else "pending connection expired")
        return self._continue(context, data, orcid, outcome="pending_confirmed")

    # --- outcomes -------------------------------------------------------------------------
    def _continue(self, context: Context, data: InternalData, orcid: OrcidId | None, *, outcome: str) -> Any:
        attrs = data.attributes
        if orcid is not None:
            attrs[self.config.orcid_attribute] = [orcid.uri]
        elif outcome != "asserted_by_trusted_idp":
            attrs.pop(self.config.orcid_attribute, None)  # only verified iDs are released
        if context.state is not None:
            context.state.pop(HINT_STATE_KEY, None)
        context.decorate("orcid_outcome", outcome)
        self._metric("outcome", outcome)
        return super().process(context, data)

    def _declined(self, context: Context, data: InternalData, record: FlowRecord, decision: str) -> Any:
        self._log(context, logging.INFO, f"the researcher declined to connect ORCID ({decision})")
        self._metric("denied", decision)
        if record.mode == "require":
            raise SATOSAAuthenticationError(context.state, "the service requires an ORCID iD")
        if record.user:
            try:
                self.service.record_decline(record.user, decision, session_id=self._sid(context),
                                            issuer=self._record_issuer(record, data))
            except OrcidPluginError as exc:
                log.warning("could not record a decision: %s", exc.code)
        return self._continue(context, data, None, outcome=f"declined_{decision}")

    def _park_failed(self, context: Context, data: InternalData, mode: str | None, exc: OrcidPluginError) -> Any:
        """No hop: the login could not be parked (the store is down); ``on_error`` decides."""
        self._log(context, logging.ERROR, f"the login could not be parked for the ORCID hop ({exc.code}): {exc.message}")
        self._metric("failed", exc.code)
        if self.config.on_error == "fail" or mode == "require":
            raise SATOSAAuthenticationError(context.state, f"ORCID iD could not be verified ({exc.code})")
        return self._continue(context, data, None, outcome=f"error_{exc.code}")

    def _lost(self, context: Context, ticket: flow.Ticket, params: dict[str, Any], reference: str) -> Any:
        """The browser names a flow whose parked record is gone (expired, already finished,
        or the store cannot be read): the login cannot resume. A replayed callback gets the
        replay page; otherwise the service gets a failed login (SATOSA's frontend answers it)."""
        if params:
            try:
                self._code(ticket, params)
            except CallbackReplayed:
                self._log(context, logging.WARNING, f"replayed ORCID callback refused (ref {reference})")
                return self._error_page(context, reference, "replayed")
            except OrcidPluginError:
                pass
        self._log(context, logging.WARNING, "the login parked for the ORCID hop is gone (expired, finished, or the "
                  f"store is unreachable): it cannot resume (ref {reference})")
        self._metric("failed", "parked_missing")
        if ticket.kind is FlowKind.CONNECT:  # no service waits; the pending grant is reaped when it expires
            return self._error_page(context, reference, "connect_failed", code="parked_missing")
        raise SATOSAAuthenticationError(context.state, f"the sign-in in progress could not be resumed (ref {reference})")

    def _discard_pending(self, handle: str | None) -> None:
        try:
            self.service.discard_pending(handle)
        except OrcidPluginError as exc:  # reaped (and revoked) when it expires
            log.warning("could not discard a pending ORCID connection: %s", exc.code)

    def _after_error(self, context: Context, data: InternalData, record: FlowRecord, exc: OrcidPluginError,
                     reference: str) -> Any:
        self._log(context, logging.WARNING, f"ORCID hop failed: {exc.code}: {exc.message} (ref {reference})")
        self._metric("failed", exc.code)
        if self.config.on_error == "fail" or record.mode == "require":
            raise SATOSAAuthenticationError(context.state, f"ORCID iD could not be verified ({exc.code})")
        return self._continue(context, data, None, outcome=f"error_{exc.code}")

    # --- state ------------------------------------------------------------------------------
    def _save(self, context: Context, kind: FlowKind, state: str, data: InternalData | None = None,
              **fields: Any) -> FlowRecord:
        """Park the flow in the store (StoreError when it is down) and put its ticket in SATOSA's state."""
        record = FlowRecord.new(kind, state=state, ttl=self.config.flow_ttl_seconds, lang=self._lang(context),
                                login=data.to_dict() if data is not None else None, **fields)
        handle = self.service.park(record.to_dict(), self.config.flow_ttl_seconds)
        flow.save_ticket(context.state, self.name, flow.Ticket.of(record, handle))
        size = state_cookie_bytes(context.state)
        if size is not None and size > BROWSER_COOKIE_LIMIT:
            self._log(context, logging.WARNING, f"SATOSA's state cookie is about {size} bytes, over the {BROWSER_COOKIE_LIMIT} "
                      "browsers keep: this browser will drop it and the login cannot finish (the ORCID plugin's "
                      f"share is {len(json.dumps(context.state[self.name]))} bytes; the rest is SATOSA's and the other "
                      "plugins')")
        return record

    def _record_issuer(self, record: FlowRecord, data: InternalData) -> str:
        """The issuer of ``record.user``: as saved, or (a record saved before issuer binding)
        derived from the login it resumes, like at its start."""
        if record.issuer is not None:
            return record.issuer
        issuer = self.config.key_issuer(getattr(data.auth_info, "issuer", None))
        if issuer is None:
            raise MissingFlowState("the login in progress names no IdP")
        return issuer

    def _unpark(self, context: Context, ticket: flow.Ticket, *, take: bool) -> FlowRecord | None:
        """The ticket's parked record (taken: single use), or None when it is gone or unreadable."""
        try:
            raw = self.service.unpark(ticket.handle, take=take)
        except OrcidPluginError as exc:
            self._log(context, logging.ERROR, f"the login parked for the ORCID hop could not be read ({exc.code})")
            return None
        record = FlowRecord.from_dict(raw, (ticket.kind,), now=time.time())
        return record if ticket.matches(record) else None

    @staticmethod
    def _login(record: FlowRecord | None) -> InternalData | None:
        """The login a record resumes; None without one, or when SATOSA cannot read it back."""
        try:
            return InternalData.from_dict(record.login) if record is not None and record.login is not None else None
        except Exception:
            return None

    # --- helpers ----------------------------------------------------------------------------
    def _guard(self, handler: Any, method: str) -> Any:
        """Method check, a reference id, and never a 500 from our endpoints."""

        def endpoint(context: Context) -> Any:
            reference = str(uuid.uuid4())
            if (context.request_method or "GET").upper() != method:
                return self._error_page(context, reference, "method", headers=[("Allow", method)])
            if method == "POST" and not self._same_origin(context):
                self._log(context, logging.WARNING, f"cross-site form post refused (ref {reference})")
                return self._error_page(context, reference, "cross_site")
            try:
                return handler(context, reference)
            except SATOSAAuthenticationError:
                raise
            except Exception:
                log.exception(lu.LOG_FMT.format(id=reference, message=f"unexpected error in {handler.__name__}"))
                return self._error_page(context, reference, "unexpected")

        endpoint.__name__ = handler.__name__
        return endpoint

    def _hop_url(self, record: FlowRecord, data: InternalData | None = None,
                 scopes: tuple[str, ...] | None = None) -> str:
        return self.service.hop_url(redirect_uri=self.redirect_uri, state=record.state, nonce=record.nonce,
                                    prefill=policy.prefill(self.config, data.attributes) if data is not None else None, lang=record.lang,
                                    scopes=scopes)

    def _lang(self, context: Context) -> str:
        headers = getattr(context, "http_headers", None) or {}
        return negotiate(headers.get("HTTP_ACCEPT_LANGUAGE"))

    def _same_origin(self, context: Context) -> bool:
        """A form post from the plugin's own page: ``Sec-Fetch-Site`` (Fetch Metadata) says so
        where the browser sends it, else ``Origin`` (RFC 6454) names this proxy when it names
        anything. ``Origin: null`` is what browsers send under ``Referrer-Policy: no-referrer``;
        the form's own token still decides then."""
        headers = getattr(context, "http_headers", None) or {}
        site = str(headers.get("HTTP_SEC_FETCH_SITE") or "").lower()
        if site:
            return site in ("same-origin", "none")
        origin = str(headers.get("HTTP_ORIGIN") or "")
        return not origin or origin == "null" or origin == self.origin

    @staticmethod
    def _params(context: Context) -> dict[str, Any]:
        return context.request if isinstance(context.request, dict) else {}

    @staticmethod
    def _sid(context: Context) -> str | None:
        return lu.get_session_id(context.state)

    def _clear_marker(self) -> tuple[str, str]:
        return clear_cookie(self.marker_cookie, path="/", secure=self.secure)

    def _page(self, body: str, status: str = "200 OK", headers: list | None = None) -> Response:
        return Response(body, status=status, headers=self.headers + (headers or []), content="text/html; charset=utf-8")

    def _error_page(self, context: Context, reference: str, key: str, *, code: str | None = None,
                    headers: list | None = None, orcid_uri: str | None = None,
                    service: tuple[str | None, str | None] | None = None) -> Response:
        """An error page in the browser's language, naming the service of the login in
        progress (and linking to it) when this browser's state says which one it is."""
        if service is None:
            service = (None, None) if key in pages.ORCID_SIDE else self._service(context)
        body, status = pages.error(key, self.config.interstitial.templates_dir, reference=reference,
                                   lang=self._lang(context), code=code, site=self.site, service=service[0],
                                   service_url=service[1], orcid_uri=orcid_uri)
        return self._page(body, status, headers)

    def _service(self, context: Context, requester: str | None = None) -> tuple[str | None, str | None]:
        """The name and the address of the service this browser is signing in to, when known:
        the requester SATOSA keeps for the whole login (``SATOSA_BASE``), named by
        ``interstitial.service_names`` or the SP's metadata (noted by ``orcid_hint``)."""
        state = context.state if context.state is not None else {}
        hint = state.get(HINT_STATE_KEY) if isinstance(state.get(HINT_STATE_KEY), dict) else {}
        if requester is None:
            base = state.get(SATOSA_STATE_KEY)
            requester = base.get("requester") if isinstance(base, dict) and isinstance(base.get("requester"), str) else None
        if requester is None and not hint.get("name"):
            return None, None
        cfg = self.config.interstitial
        return (pages.service_name(cfg.service_names, requester, hint.get("name")),
                pages.service_url(cfg.service_urls, requester, hint.get("url")))

    @staticmethod
    def _metric(event: str, value: str) -> None:
        """The one place that counts outcomes for Prometheus (metrics.record never raises)."""
        metrics.record(event, value)

    def _log(self, context: Context, level: int, message: str) -> None:
        """Every glue log line; what came from a request cannot break the line (CR/LF escaped)."""
        log.log(level, lu.LOG_FMT.format(id=lu.get_session_id(context.state), message=flow.log_safe(message)))
