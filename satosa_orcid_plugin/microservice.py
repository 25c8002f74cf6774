"""SATOSA glue, and nothing else: state in and out, redirects, pages, cookies.

Add to ``proxy_conf.yaml``::

    MICRO_SERVICES:
      - plugins/microservices/orcid_hint.yaml   # optional request micro-service
      - plugins/microservices/orcid.yaml

with ``orcid.yaml``::

    module: satosa_orcid_plugin.OrcidConnect
    name: orcid
    config: {...}          # see satosa_orcid_plugin.config

and register ``<BASE>/orcid/callback`` (consent hop) and ``<BASE>/orcid/connect``
(Institutional Connect) as redirect URIs with ORCID.

Endpoints (``name`` = ``orcid``):

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
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import satosa.logging_util as lu
from satosa.context import Context
from satosa.exception import SATOSAAuthenticationError
from satosa.internal import InternalData
from satosa.micro_services.base import RequestMicroService, ResponseMicroService
from satosa.response import Redirect, Response

from . import metrics, pages
from .config import PluginConfig, parse_config
from .cookies import CookieSealer, clear_cookie, read_cookie, set_cookie
from .ops.cookie_size import warn_at_startup
from .ops.health import health_endpoint
from .errors import (
    BadCallback,
    CallbackReplayed,
    ConfigError,
    InvalidOrcidId,
    LinkConflict,
    OrcidOAuthError,
    OrcidPluginError,
    StateMismatch,
    UserDenied,
)
from .i18n import Translator, negotiate
from .orcid_id import OrcidId
from .policy import Action
from .service import OrcidLinkService

log = logging.getLogger(__name__)
STATE_VERSION = 1
MAX_PARAM_LENGTH = 2048
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
        name = _display_name(data.requester_name)
        if name:
            hint["name"] = name[:80]  # for the interstitial; the response side has no requester name
        context.state[HINT_STATE_KEY] = hint
        return super().process(context, data)


def _display_name(names: Any) -> str | None:
    """The English (or first) display name from SATOSA's ``requester_name`` list."""
    if not isinstance(names, list):
        return None
    texts = [(n.get("lang"), n.get("text")) for n in names if isinstance(n, dict) and n.get("text")]
    for lang, text in texts:
        if lang == "en":
            return str(text)
    return str(texts[0][1]) if texts else None


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
        self.service = OrcidLinkService.from_config(self.config, instance=self.name)
        base = (self.config.redirect_base or self.base_url).rstrip("/")
        self.redirect_uri = f"{base}/{self.name}/callback"
        self.connect_uri = f"{base}/{self.name}/connect"
        self.cookie_path = f"{urlsplit(self.base_url).path.rstrip('/')}/{self.name}"
        self.endpoint_base = f"{self.base_url.rstrip('/')}/{self.name}"
        self.marker_cookie = f"{self.name}_signin"
        self.pending_cookie = f"{self.name}_pending"
        self.sealer = CookieSealer(self.config.store.token_keys, "institutional sign-in marker")
        self.secure = self.config.connect.cookie_secure
        warn_at_startup(self.name, self.config)  # the state cookie of a hop must stay under 4096 bytes

    def register_endpoints(self) -> list[tuple[str, Any]]:
        return [
            (f"^{self.name}/callback$", self._guard(self._callback, "GET")),
            (f"^{self.name}/connect$", self._guard(self._connect, "GET")),
            (f"^{self.name}/choice$", self._guard(self._choice, "POST")),
            (f"^{self.name}/confirm$", self._guard(self._confirm, "POST")),
            (f"^{self.name}/health$", health_endpoint(lambda: self.service.store.health())),
        ]

    # --- the login --------------------------------------------------------------------
    def process(self, context: Context, data: InternalData) -> Any:
        user_key = self._first(data.attributes.get(self.config.user_key_attribute))
        hint = context.state.get(HINT_STATE_KEY) if context.state is not None else None
        requested = bool(isinstance(hint, dict) and hint.get("requested"))
        try:
            decision = self.service.decide(user_key, data.requester, self._asserted_orcid(data), requested=requested)
        except OrcidPluginError as exc:
            self._log(context, logging.ERROR, f"ORCID lookup failed ({exc.code}); continuing without the iD")
            return self._continue(context, data, None, outcome=f"error_{exc.code}")
        if decision.reason == "orcid_signin":
            return self._orcid_signin(context, data, user_key)
        if user_key:
            try:
                page = self._pending_confirmation(context, data, user_key, decision)
            except OrcidPluginError as exc:
                self._log(context, logging.WARNING, f"pending ORCID connection unreadable ({exc.code})")
                page = None
            if page is not None:
                return page
        if decision.action is Action.RELEASE:
            if user_key and decision.reason == "linked":
                self.service.on_release(user_key, data.attributes)
            return self._continue(context, data, decision.orcid, outcome=decision.reason)
        if decision.action is Action.SKIP:
            if decision.reason == "no_user_key":
                self._log(context, logging.WARNING,
                          f"no {self.config.user_key_attribute!r} attribute in this login: no ORCID hop")
            return self._continue(context, data, None, outcome=decision.reason)
        lang = self._lang(context)
        state, nonce = secrets.token_urlsafe(24), (secrets.token_urlsafe(24) if self.config.orcid.openid else None)
        self._save(context, "hop", state=state, nonce=nonce, flow=data, user=user_key, mode=decision.mode, lang=lang)
        self._metric("hop_started", "interstitial" if self.config.interstitial.enabled else "redirect")
        if self.config.interstitial.enabled:
            self._log(context, logging.INFO, "not linked: showing the ORCID interstitial")
            name = hint.get("name") if isinstance(hint, dict) else None
            return self._interstitial(data, state, decision.required, user_key, lang, name)
        self._log(context, logging.INFO, "not linked: sending the researcher to ORCID")
        return Redirect(self._hop_url(data, state, nonce, lang))

    def _orcid_signin(self, context: Context, data: InternalData, user_key: str | None) -> Any:
        """The user is signing in to ORCID itself: no hop, but remember (sealed, short-lived)
        who this browser just authenticated, for ORCID's state-less connect redirect."""
        response = self._continue(context, data, None, outcome="orcid_signin")
        if user_key and hasattr(response, "headers"):
            marker = self.sealer.seal({"u": user_key, "t": int(time.time())})
            response.headers.append(set_cookie(self.marker_cookie, marker, path=self.cookie_path,
                                               max_age=self.config.connect.marker_ttl_seconds, secure=self.secure))
            self._log(context, logging.INFO, "institutional sign-in to ORCID: marker set")
        return response

    def _pending_confirmation(self, context: Context, data: InternalData, user_key: str, decision: Any) -> Any:
        handle = read_cookie(getattr(context, "cookie", None), self.pending_cookie)
        if not handle:
            return None
        pending = self.service.pending_for(handle)
        if pending is None:
            return None
        if decision.action is Action.RELEASE and decision.orcid == pending.orcid:
            self.service.discard_pending(handle)
            return None
        state = secrets.token_urlsafe(24)
        lang = self._lang(context)
        self._save(context, "confirm", state=state, flow=data, user=user_key, pending=handle, lang=lang,
                   mode=decision.mode)
        t = Translator(lang)
        body = pages.render("confirm.html", self.config.interstitial.templates_dir, t=t, lang=t.lang, user=user_key,
                            orcid_uri=pending.orcid.uri, state=state, action=f"{self.endpoint_base}/confirm")
        return self._page(body)

    # --- ORCID sends the browser back ---------------------------------------------------
    def _callback(self, context: Context, reference: str) -> Any:
        saved, data = self._take(context, ("hop", "connect"))
        if saved is None:
            self._log(context, logging.WARNING, f"ORCID callback without a sign-in in progress (ref {reference})")
            return self._error_page(context, reference, "Your sign-in session has expired",
                                    "We could not find the sign-in you started, so your ORCID iD was not connected.",
                                    "400 Bad Request")
        params = self._params(context)
        if saved["kind"] == "connect":
            return self._connect_verified(context, saved, params, reference)
        user_key = saved.get("user")
        sid = lu.get_session_id(context.state)
        try:
            code = self._check_callback(saved, params)
            link = self.service.complete_hop(user_key=user_key, code=code, redirect_uri=self.redirect_uri,
                                             nonce=saved.get("nonce"), session_id=sid, attributes=data.attributes)
        except UserDenied:
            return self._declined(context, data, saved, "not_now")
        except CallbackReplayed:
            self._log(context, logging.WARNING, f"replayed ORCID callback refused (ref {reference})")
            return self._error_page(context, reference, "This link was already used",
                                    "This sign-in step was already completed. Please start again from the service.",
                                    "400 Bad Request")
        except LinkConflict as exc:
            self._log(context, logging.WARNING, "ORCID iD already linked to another user")
            return self._after_error(context, data, saved, exc, reference)
        except OrcidPluginError as exc:
            return self._after_error(context, data, saved, exc, reference)
        self._log(context, logging.INFO, "ORCID iD linked")
        return self._continue(context, data, link.orcid, outcome="linked_now")

    def _check_callback(self, saved: dict[str, Any], params: dict[str, Any]) -> str:
        """State first (constant time), then the error or the code; each callback once."""
        got = self._param(params, "state")
        if not got:
            raise StateMismatch("the ORCID callback carries no state")
        if not hmac.compare_digest(got.encode(), saved["state"].encode()):
            raise StateMismatch()
        error = self._param(params, "error")
        if error == "access_denied":
            raise UserDenied()
        if error:
            raise OrcidOAuthError(error[:64], (self._param(params, "error_description") or "")[:200])
        code = self._param(params, "code")
        if not code:
            raise BadCallback()
        if not self.service.claim_callback(saved["state"], datetime.fromtimestamp(saved["exp"], timezone.utc)):
            raise CallbackReplayed()
        return code

    # --- the interstitial's buttons -------------------------------------------------
    def _choice(self, context: Context, reference: str) -> Any:
        saved = context.state.get(self.name) if context.state is not None else None
        params = self._params(context)
        if not self._valid(saved, ("hop",)) or not self._same(self._param(params, "state"), saved["state"]):
            return self._error_page(context, reference, "Your sign-in session has expired",
                                    "We could not find the sign-in you started.", "400 Bad Request")
        data = InternalData.from_dict(saved["flow"])
        choice = self._param(params, "choice")
        if choice == "connect":
            self._log(context, logging.INFO, "interstitial: connect; sending the researcher to ORCID")
            return Redirect(self._hop_url(data, saved["state"], saved.get("nonce"), saved.get("lang")))
        del context.state[self.name]
        if choice in ("not_now", "never") and saved.get("mode") != "require":
            return self._declined(context, data, saved, choice)
        if choice == "cancel" or saved.get("mode") == "require":
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
        error = self._param(params, "error")
        if error == "access_denied":
            return self._error_page(context, reference, "ORCID iD not connected",
                                    "You chose not to give your institution access to your ORCID record.", "200 OK")
        code = self._param(params, "code")
        if error or not code:
            self._log(context, logging.WARNING, f"connect without a code (ref {reference})")
            return self._error_page(context, reference, "Link not valid",
                                    "This link from ORCID is incomplete or not valid.", "400 Bad Request")
        try:
            grant = self.service.connect_exchange(code, self.connect_uri)
            handle = self.service.keep_pending(grant)
        except OrcidPluginError as exc:
            self._log(context, logging.WARNING, f"connect code rejected: {exc.code} (ref {reference})")
            return self._error_page(context, reference, "Your ORCID iD could not be connected",
                                    "ORCID did not confirm this connection. Please try again from your ORCID inbox.",
                                    "400 Bad Request")
        marker = self.sealer.open(read_cookie(getattr(context, "cookie", None), self.marker_cookie),
                                  ttl=self.config.connect.marker_ttl_seconds)
        user_key = marker.get("u") if marker else None
        state = secrets.token_urlsafe(24)
        scopes = grant.scope or self.config.orcid.scopes
        nonce = secrets.token_urlsafe(24) if "openid" in scopes else None
        self._save(context, "connect", state=state, nonce=nonce, user=user_key, pending=handle, lang=self._lang(context))
        self._log(context, logging.INFO, "connect: verifying the ORCID account with a state-protected authorize")
        return Redirect(self.service.hop_url(redirect_uri=self.redirect_uri, state=state, nonce=nonce,
                                             lang=self._lang(context), scopes=scopes))

    def _connect_verified(self, context: Context, saved: dict[str, Any], params: dict[str, Any], reference: str) -> Any:
        handle = saved["pending"]
        try:
            code = self._check_callback(saved, params)
            fresh = self.service.exchange(code, self.redirect_uri, nonce=saved.get("nonce"), require_id_token=False)
            pending = self.service.verify_connect(handle, fresh)
            user_key = saved.get("user")
            link = self.service.finish_pending(handle, user_key, session_id=lu.get_session_id(context.state)) \
                if user_key else None
        except UserDenied:
            self.service.discard_pending(handle)
            return self._error_page(context, reference, "ORCID iD not connected",
                                    "You chose not to give your institution access to your ORCID record.", "200 OK")
        except OrcidPluginError as exc:
            self.service.discard_pending(handle)
            self._log(context, logging.WARNING, f"connect verification failed: {exc.code} (ref {reference})")
            message = {
                "connect_mismatch": "The ORCID account you are signed in with is not the one that sent this link.",
                "link_conflict": "This ORCID iD is already connected to another account at "
                                 f"{self.config.interstitial.institution}. Please contact the help desk.",
            }.get(exc.code, "ORCID did not confirm this connection.")
            return self._error_page(context, reference, "Your ORCID iD could not be connected", message,
                                    "400 Bad Request", headers=[clear_cookie(self.marker_cookie, path=self.cookie_path,
                                                                             secure=self.secure)])
        t = Translator(saved.get("lang") or "en")
        ctx = dict(t=t, lang=t.lang, institution=self.config.interstitial.institution, orcid_uri=pending.orcid.uri)
        if link is not None:
            self._log(context, logging.INFO, "Institutional Connect: ORCID iD linked")
            return self._page(pages.render("connected.html", self.config.interstitial.templates_dir, **ctx),
                              headers=[clear_cookie(self.marker_cookie, path=self.cookie_path, secure=self.secure)])
        self._log(context, logging.INFO, "Institutional Connect: verified, pending the next institutional login")
        # SameSite=None: it must reach the proxy on the IdP's cross-site POST of the next login.
        cookie = set_cookie(self.pending_cookie, handle, path="/", max_age=self.config.connect.pending_ttl_seconds,
                            samesite="None")
        return self._page(pages.render("pending.html", self.config.interstitial.templates_dir, **ctx), headers=[cookie])

    def _confirm(self, context: Context, reference: str) -> Any:
        saved = context.state.get(self.name) if context.state is not None else None
        params = self._params(context)
        if not self._valid(saved, ("confirm",)) or not self._same(self._param(params, "state"), saved["state"]):
            return self._error_page(context, reference, "Your sign-in session has expired",
                                    "We could not find the sign-in you started.", "400 Bad Request")
        del context.state[self.name]
        data = InternalData.from_dict(saved["flow"])
        clear = clear_cookie(self.pending_cookie, path="/", samesite="None")
        if self._param(params, "choice") != "yes":
            self.service.discard_pending(saved["pending"])
            self._log(context, logging.INFO, "pending ORCID connection refused by the user")
            return self._with_headers(self._continue(context, data, None, outcome="pending_refused"), [clear])
        try:
            link = self.service.finish_pending(saved["pending"], saved["user"], session_id=lu.get_session_id(context.state),
                                               attributes=data.attributes)
        except OrcidPluginError as exc:
            return self._with_headers(self._after_error(context, data, saved, exc, reference), [clear])
        orcid = link.orcid if link is not None else None
        self._log(context, logging.INFO, "pending ORCID connection confirmed" if link else "pending connection expired")
        return self._with_headers(self._continue(context, data, orcid, outcome="pending_confirmed"), [clear])

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

    def _declined(self, context: Context, data: InternalData, saved: dict[str, Any], decision: str) -> Any:
        self._log(context, logging.INFO, f"the researcher declined to connect ORCID ({decision})")
        self._metric("denied", decision)
        if saved.get("mode") == "require":
            raise SATOSAAuthenticationError(context.state, "the service requires an ORCID iD")
        if saved.get("user"):
            try:
                self.service.record_decline(saved["user"], decision, session_id=lu.get_session_id(context.state))
            except OrcidPluginError as exc:
                log.warning("could not record a decision: %s", exc.code)
        return self._continue(context, data, None, outcome=f"declined_{decision}")

    def _after_error(self, context: Context, data: InternalData, saved: dict[str, Any], exc: OrcidPluginError,
                     reference: str) -> Any:
        self._log(context, logging.WARNING, f"ORCID hop failed: {exc.code}: {exc.message} (ref {reference})")
        self._metric("failed", exc.code)
        if self.config.on_error == "fail" or saved.get("mode") == "require":
            raise SATOSAAuthenticationError(context.state, f"ORCID iD could not be verified ({exc.code})")
        return self._continue(context, data, None, outcome=f"error_{exc.code}")

    # --- state ------------------------------------------------------------------------------
    def _save(self, context: Context, kind: str, *, state: str, flow: InternalData | None = None, **extra: Any) -> None:
        saved = {"v": STATE_VERSION, "kind": kind, "state": state, "exp": int(time.time()) + self.config.flow_ttl_seconds}
        if flow is not None:
            saved["flow"] = flow.to_dict()
        saved.update({k: v for k, v in extra.items() if v is not None})
        context.state[self.name] = saved

    def _valid(self, saved: Any, kinds: tuple[str, ...]) -> bool:
        return (isinstance(saved, dict) and saved.get("v") == STATE_VERSION and saved.get("kind") in kinds
                and isinstance(saved.get("state"), str) and isinstance(saved.get("exp"), int)
                and saved["exp"] >= time.time() and (saved["kind"] == "connect" or isinstance(saved.get("flow"), dict)))

    def _take(self, context: Context, kinds: tuple[str, ...]) -> tuple[dict[str, Any] | None, InternalData | None]:
        """Pop our state (one shot: a second callback with this cookie finds nothing)."""
        saved = context.state.get(self.name) if context.state is not None else None
        if saved is not None:
            del context.state[self.name]
        if not self._valid(saved, kinds):
            return None, None
        try:
            data = InternalData.from_dict(saved["flow"]) if "flow" in saved else None
        except Exception:
            return None, None
        return saved, data

    # --- helpers ----------------------------------------------------------------------------
    def _guard(self, handler: Any, method: str) -> Any:
        """Method check, a reference id, and never a 500 from our endpoints."""

        def endpoint(context: Context) -> Any:
            reference = str(uuid.uuid4())
            if (context.request_method or "GET").upper() != method:
                return self._error_page(context, reference, "Method not allowed",
                                        "This address is not meant to be opened like this.", "405 Method Not Allowed",
                                        headers=[("Allow", method)])
            try:
                return handler(context, reference)
            except SATOSAAuthenticationError:
                raise
            except Exception:
                log.exception(lu.LOG_FMT.format(id=reference, message=f"unexpected error in {handler.__name__}"))
                return self._error_page(context, reference, "Something went wrong",
                                        "We could not finish connecting your ORCID iD.", "500 Internal Server Error")

        endpoint.__name__ = handler.__name__
        return endpoint

    def _hop_url(self, data: InternalData, state: str, nonce: str | None, lang: str | None) -> str:
        return self.service.hop_url(redirect_uri=self.redirect_uri, state=state, nonce=nonce,
                                    prefill=self._prefill(data), lang=lang)

    def _interstitial(self, data: InternalData, state: str, required: bool, user_key: str | None, lang: str,
                      metadata_name: str | None = None) -> Response:
        t = Translator(lang)
        cfg = self.config.interstitial
        service = cfg.service_names.get(data.requester or "") or metadata_name \
            or urlsplit(data.requester or "").hostname or data.requester or "This service"
        body = pages.render("interstitial.html", cfg.templates_dir, t=t, lang=t.lang, service=service,
                            institution=cfg.institution, required=required, user=user_key, state=state,
                            action=f"{self.endpoint_base}/choice")
        return self._page(body)

    def _lang(self, context: Context) -> str:
        headers = getattr(context, "http_headers", None) or {}
        return negotiate(headers.get("HTTP_ACCEPT_LANGUAGE"))

    @staticmethod
    def _params(context: Context) -> dict[str, Any]:
        return context.request if isinstance(context.request, dict) else {}

    @staticmethod
    def _param(params: dict[str, Any], key: str) -> str | None:
        value = params.get(key)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if not isinstance(value, str) or not value or len(value) > MAX_PARAM_LENGTH:
            return None
        return value

    @staticmethod
    def _same(got: str | None, expected: str) -> bool:
        return bool(got) and hmac.compare_digest(got.encode(), expected.encode())

    @staticmethod
    def _first(values: Any) -> str | None:
        if isinstance(values, str):
            return values or None
        if isinstance(values, (list, tuple)) and values and isinstance(values[0], str) and values[0]:
            return values[0]
        return None

    def _asserted_orcid(self, data: InternalData) -> OrcidId | None:
        """An iD the upstream IdP asserted: used only when the config trusts that IdP for it."""
        issuer = getattr(data.auth_info, "issuer", None)
        if issuer not in self.config.trusted_orcid_issuers:
            return None
        for value in data.attributes.get(self.config.orcid_attribute) or []:
            try:
                return OrcidId.parse(value, sandbox=self.config.orcid.sandbox)
            except InvalidOrcidId:
                continue
        return None

    def _prefill(self, data: InternalData) -> dict[str, str]:
        out = {}
        for param, attribute in self.config.prefill.items():
            value = self._first(data.attributes.get(attribute))
            if value:
                out[param] = value
        return out

    @staticmethod
    def _with_headers(response: Any, headers: list[tuple[str, str]]) -> Any:
        if hasattr(response, "headers"):
            response.headers.extend(headers)
        return response

    @staticmethod
    def _page(body: str, status: str = "200 OK", headers: list | None = None) -> Response:
        hdrs = [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY"),
                ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                            "form-action 'self' https: http:; frame-ancestors 'none'")]
        return Response(body, status=status, headers=hdrs + (headers or []), content="text/html; charset=utf-8")

    def _error_page(self, context: Context, reference: str, title: str, message: str, status: str,
                    headers: list | None = None) -> Response:
        body = pages.render("error.html", self.config.interstitial.templates_dir, title=title, message=message,
                            reference=reference, lang=self._lang(context))
        return self._page(body, status, headers)

    @staticmethod
    def _metric(event: str, value: str) -> None:
        """The one place that counts outcomes for Prometheus (metrics.record never raises)."""
        metrics.record(event, value)

    def _log(self, context: Context, level: int, message: str) -> None:
        log.log(level, lu.LOG_FMT.format(id=lu.get_session_id(context.state), message=message))
