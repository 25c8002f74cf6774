"""SATOSA glue, and nothing else: state in and out, redirects, pages, cookies.

``OrcidConnect`` is a response micro-service (``module: satosa_orcid_plugin.OrcidConnect``,
``name: orcid``; the README shows the YAML); ``OrcidRequestHint`` an optional request one.
Register ``<BASE>/orcid/callback`` and ``<BASE>/orcid/connect`` as redirect URIs with ORCID.

* ``GET  orcid/callback``  ORCID's answer to our state-protected authorize
* ``GET  orcid/connect``   ORCID's state-less Institutional Connect redirect
* ``POST orcid/choice``    the interstitial's buttons
* ``POST orcid/confirm``   the confirmation of a pending Institutional Connect link
"""
from __future__ import annotations

import hmac
import logging
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import satosa.logging_util as lu
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
from .ops import idp_metadata
from .ops.cookie_size import warn_at_startup
from .ops.health import health_endpoint
from .orcid_id import OrcidId
from .policy import Action
from .wiring import login_service

log = logging.getLogger(__name__)
HINT_STATE_KEY = "ORCID_HINT"  # written by OrcidRequestHint, read by OrcidConnect


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
            hint["name"] = name[:80]  # for the interstitial; the response side has no requester name
        context.state[HINT_STATE_KEY] = hint
        return super().process(context, data)


class OrcidConnect(ResponseMicroService):
    """Collect the researcher's authenticated ORCID iD during a login and release it."""

    def __init__(self, config: dict[str, Any] | None, internal_attributes: dict[str, Any] | None = None,
                 *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: PluginConfig = parse_config(config)
        attrs = (internal_attributes or {}).get("attributes", {})
        if attrs and self.config.orcid_attribute not in attrs:
            raise ConfigError("orcid_attribute",
                              f"internal attribute {self.config.orcid_attribute!r} is not defined in internal_attributes")
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
        self.sealer = CookieSealer(self.config.store.token_keys, "institutional sign-in marker")
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(self.base_url))
        self.headers = pages.headers(form_targets=(self.config.orcid.base_url,))
        warn_at_startup(self.name, self.config)  # the state cookie of a hop must stay under 4096 bytes
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
        record = self._save(context, FlowKind.HOP, hop.state, data, nonce=hop.nonce, user=user_key, issuer=issuer,
                            mode=decision.mode, form=flow.form_token())
        self._metric("hop_started", "interstitial" if self.config.interstitial.enabled else "redirect")
        if not self.config.interstitial.enabled:
            self._log(context, logging.INFO, "not linked: sending the researcher to ORCID")
            return Redirect(self._hop_url(record, data))
        self._log(context, logging.INFO, "not linked: showing the ORCID interstitial")
        cfg = self.config.interstitial
        return self._page(pages.translated(
            "interstitial.html", cfg.templates_dir, record.lang, institution=cfg.institution, state=record.form,
            service=pages.service_name(cfg.service_names, data.requester, hint.get("name")),
            required=decision.required, user=user_key, action=f"{self.endpoint_base}/choice"))

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
                                           user=user_key, orcid_uri=pending.orcid.uri, state=record.form,
                                           orcid_name=pending.name, started=started, origin=pending.origin,
                                           action=f"{self.endpoint_base}/confirm"))

    # --- ORCID sends the browser back ---------------------------------------------------
    def _callback(self, context: Context, reference: str) -> Any:
        kinds = (FlowKind.HOP, FlowKind.CONNECT)
        record, params = flow.peek(context.state, self.name, kinds), self._params(context)
        data = self._login(record)
        if record is None or (data is None and record.kind is FlowKind.HOP):
            flow.forget(context.state, self.name)
            self._log(context, logging.WARNING, f"ORCID callback without a sign-in in progress (ref {reference})")
            return self._error_page(context, reference, "callback_expired")
        if record.kind is FlowKind.HOP and not any(flow.param(params, k) for k in ("state", "code", "error")):
            return self._refused(context, record, reference)
        if not record.state_matches(params):
            # Not this browser's callback (forged, or from another tab): the sign-in in
            # progress stays as it is, so the real callback can still finish it.
            self._log(context, logging.WARNING, f"ORCID callback with a wrong state refused (ref {reference})")
            return self._error_page(context, reference, "wrong_state" if record.kind is FlowKind.HOP else "connect_failed")
        flow.forget(context.state, self.name)  # one shot from here on
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
            return self._error_page(context, reference, "replayed")
        except LinkConflict as exc:
            self._log(context, logging.WARNING, "ORCID iD already linked to another user")
            return self._after_error(context, data, record, exc, reference)
        except OrcidPluginError as exc:
            return self._after_error(context, data, record, exc, reference)
        self._log(context, logging.INFO, "ORCID iD linked")
        return self._continue(context, data, link.orcid, outcome="linked_now")

    def _refused(self, context: Context, record: FlowRecord, reference: str) -> Any:
        """ORCID answers ``invalid_scope`` and ``unsupported_response_type`` in the URL fragment,
        with no state (orcid-angular ``src/app/core/oauth/oauth.service.ts``): the browser comes
        back with no parameters the proxy can see. The researcher gets a page that says so and
        continues (or fails, when the service requires the iD) with its button; the login in
        progress is untouched until then, so a bare link cannot end it."""
        self._log(context, logging.WARNING, "ORCID sent the browser back without parameters: it refused the authorize "
                  "request (invalid_scope or unsupported_response_type, in the URL fragment); check orcid.scopes "
                  f"against the client's registration at ORCID (ref {reference})")
        self._metric("failed", "orcid_refused")
        return self._page(pages.render("refused.html", self.config.interstitial.templates_dir, reference=reference,
                                       lang=record.lang or "en", institution=self.config.interstitial.institution,
                                       state=record.form, action=f"{self.endpoint_base}/choice"), "400 Bad Request")

    def _code(self, record: FlowRecord, params: dict[str, Any]) -> str:
        """The callback's code (state first, then error, then code); each callback once."""
        code = flow.parse_callback(params, record.state)
        if not self.service.claim_callback(record.state, record.expires_at):
            raise CallbackReplayed()
        return code

    # --- the interstitial's buttons -------------------------------------------------
    def _choice(self, context: Context, reference: str) -> Any:
        params = self._params(context)
        record = flow.peek(context.state, self.name, (FlowKind.HOP,))
        data = self._login(record)
        if data is None or not record.form_matches(flow.param(params, "state")):
            return self._error_page(context, reference, "expired")
        choice = flow.param(params, "choice")
        if choice == "connect":
            self._log(context, logging.INFO, "interstitial: connect; sending the researcher to ORCID")
            return Redirect(self._hop_url(record, data))
        flow.forget(context.state, self.name)
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
        record = self._save(context, FlowKind.CONNECT, start.hop.state, nonce=start.hop.nonce,
                            user=user, issuer=issuer, pending=start.handle)
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
        if result.link is not None:
            self._log(context, logging.INFO, "Institutional Connect: ORCID iD linked")
            template, cookie = "connected.html", self._clear_marker()
        else:
            self._log(context, logging.INFO, "Institutional Connect: verified, pending the next institutional login")
            # SameSite=None: it must reach the proxy on the IdP's cross-site POST of the next login.
            # A session cookie: it goes when the browser closes (a shared browser's next user
            # does not inherit it); the pending link itself expires after connect.pending_ttl.
            template, cookie = "pending.html", set_cookie(self.pending_cookie, record.pending, path="/", samesite="None",
                                                          max_age=None, secure=self.secure)
        return self._page(pages.translated(template, self.config.interstitial.templates_dir, record.lang or "en",
                                           institution=self.config.interstitial.institution, user=record.user,
                                           orcid_name=result.name, orcid_uri=result.orcid.uri), headers=[cookie])

    def _confirm(self, context: Context, reference: str) -> Any:
        params = self._params(context)
        record = flow.peek(context.state, self.name, (FlowKind.CONFIRM,))
        data = self._login(record)
        if data is None or not record.form_matches(flow.param(params, "state")):
            return self._error_page(context, reference, "expired")
        flow.forget(context.state, self.name)
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
        record = FlowRecord.new(kind, state=state, ttl=self.config.flow_ttl_seconds, lang=self._lang(context),
                                login=data.to_dict() if data is not None else None, **fields)
        flow.save(context.state, self.name, record)
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
                    headers: list | None = None) -> Response:
        body, status = pages.error(key, self.config.interstitial.templates_dir, reference=reference,
                                   lang=self._lang(context), code=code, institution=self.config.interstitial.institution)
        return self._page(body, status, headers)

    @staticmethod
    def _metric(event: str, value: str) -> None:
        """The one place that counts outcomes for Prometheus (metrics.record never raises)."""
        metrics.record(event, value)

    def _log(self, context: Context, level: int, message: str) -> None:
        """Every glue log line; what came from a request cannot break the line (CR/LF escaped)."""
        log.log(level, lu.LOG_FMT.format(id=lu.get_session_id(context.state), message=flow.log_safe(message)))
