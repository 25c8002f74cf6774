"""SATOSA glue, and nothing else: state in and out, redirects, pages.

Add to ``proxy_conf.yaml``::

    MICRO_SERVICES:
      - plugins/microservices/orcid.yaml

with ``orcid.yaml``::

    module: satosa_orcid_plugin.OrcidConnect
    name: orcid
    config: {...}          # see satosa_orcid_plugin.config

and register ``<BASE>/orcid/callback`` as a redirect URI with ORCID.
"""
from __future__ import annotations

import hmac
import logging
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import satosa.logging_util as lu
from satosa.context import Context
from satosa.exception import SATOSAAuthenticationError
from satosa.internal import InternalData
from satosa.micro_services.base import ResponseMicroService
from satosa.response import Redirect, Response

from . import pages
from .config import PluginConfig, parse_config
from .errors import (
    BadCallback,
    InvalidOrcidId,
    LinkConflict,
    MissingFlowState,
    OrcidOAuthError,
    OrcidPluginError,
    StateMismatch,
    UserDenied,
)
from .orcid_id import OrcidId
from .policy import Action
from .service import OrcidLinkService

log = logging.getLogger(__name__)
STATE_VERSION = 1
MAX_PARAM_LENGTH = 2048


class OrcidConnect(ResponseMicroService):
    """Collect the researcher's authenticated ORCID iD during a login and release it."""

    def __init__(self, config: dict[str, Any] | None, internal_attributes: dict[str, Any] | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config: PluginConfig = parse_config(config)
        attrs = (internal_attributes or {}).get("attributes", {})
        if attrs and self.config.orcid_attribute not in attrs:
            from .errors import ConfigError

            raise ConfigError("orcid_attribute", f"internal attribute {self.config.orcid_attribute!r} is not defined in internal_attributes")
        self.service = OrcidLinkService.from_config(self.config, instance=self.name)
        base = self.config.redirect_base or self.base_url.rstrip("/")
        self.redirect_uri = f"{base}/{self.name}/callback"

    def register_endpoints(self) -> list[tuple[str, Any]]:
        return [(f"^{self.name}/callback$", self._callback)]

    # --- the login --------------------------------------------------------------------
    def process(self, context: Context, data: InternalData) -> Any:
        sid = lu.get_session_id(context.state)
        try:
            user_key = self._first(data.attributes.get(self.config.user_key_attribute))
            asserted = self._asserted_orcid(data)
            decision = self.service.decide(user_key, data.requester, asserted)
        except OrcidPluginError as exc:
            self._log(context, logging.ERROR, f"ORCID lookup failed ({exc.code}); continuing without eduPersonOrcid")
            return self._continue(context, data, None, outcome=f"error_{exc.code}")
        if decision.action is Action.RELEASE:
            return self._continue(context, data, decision.orcid, outcome=decision.reason)
        if decision.action is Action.SKIP:
            if decision.reason == "no_user_key":
                self._log(context, logging.WARNING,
                          f"no {self.config.user_key_attribute!r} attribute in this login: no ORCID hop")
            return self._continue(context, data, None, outcome=decision.reason)
        hop = self.service.start_hop(redirect_uri=self.redirect_uri, prefill=self._prefill(data))
        context.state[self.name] = {
            "v": STATE_VERSION,
            "flow": data.to_dict(),
            "state": hop.state,
            "nonce": hop.nonce,
            "user": user_key,
            "exp": int(time.time()) + self.config.flow_ttl_seconds,
        }
        self._log(context, logging.INFO, "not linked: sending the researcher to ORCID")
        return Redirect(hop.url)

    # --- ORCID sends the browser back ---------------------------------------------------
    def _callback(self, context: Context) -> Any:
        reference = f"{uuid.uuid4()}"
        try:
            return self._handle_callback(context, reference)
        except SATOSAAuthenticationError:
            raise
        except Exception:  # never a 500 from our endpoint
            log.exception(lu.LOG_FMT.format(id=reference, message="unexpected error in the ORCID callback"))
            return self._error_page(reference, "Something went wrong",
                                    "We could not finish connecting your ORCID iD.", "500 Internal Server Error")

    def _handle_callback(self, context: Context, reference: str) -> Any:
        if (context.request_method or "GET").upper() != "GET":
            return self._error_page(reference, "Method not allowed", "This address only accepts links from ORCID.",
                                    "405 Method Not Allowed", headers=[("Allow", "GET")])
        saved = context.state.get(self.name) if context.state is not None else None
        flow = self._restore(saved)
        if flow is None:
            self._log(context, logging.WARNING, f"ORCID callback without a login in progress (ref {reference})")
            return self._error_page(reference, "Your sign-in session has expired",
                                    "We could not find the sign-in you started, so your ORCID iD was not connected.",
                                    "400 Bad Request")
        del context.state[self.name]  # one shot: a second callback with this cookie finds nothing
        data, saved = flow
        params = context.request if isinstance(context.request, dict) else {}
        user_key = saved.get("user")
        sid = lu.get_session_id(context.state)
        try:
            if saved["exp"] < time.time():
                raise MissingFlowState("the ORCID hop took too long")
            self._check_state(params, saved["state"])
            error = self._param(params, "error")
            if error == "access_denied":
                raise UserDenied()
            if error:
                raise OrcidOAuthError(error[:64], (self._param(params, "error_description") or "")[:200])
            code = self._param(params, "code")
            if not code:
                raise BadCallback()
            exp = datetime.fromtimestamp(saved["exp"], timezone.utc)
            if not self.service.claim_callback(saved["state"], exp):
                raise StateMismatch("this ORCID callback was already used")
            link = self.service.complete_hop(user_key=user_key, code=code, redirect_uri=self.redirect_uri,
                                             nonce=saved.get("nonce"), session_id=sid)
        except UserDenied:
            self._log(context, logging.INFO, "the researcher declined to connect ORCID")
            if user_key:
                self._safely(self.service.record_decline, user_key, "not_now", session_id=sid)
            return self._continue(context, data, None, outcome="denied")
        except LinkConflict as exc:
            self._log(context, logging.WARNING, f"ORCID iD already linked to another user ({exc.code})")
            return self._after_error(context, data, exc, reference)
        except OrcidPluginError as exc:
            return self._after_error(context, data, exc, reference)
        self._log(context, logging.INFO, "ORCID iD linked")
        return self._continue(context, data, link.orcid, outcome="linked_now")

    # --- helpers ------------------------------------------------------------------------
    def _continue(self, context: Context, data: InternalData, orcid: OrcidId | None, *, outcome: str) -> Any:
        attrs = data.attributes
        if orcid is not None:
            attrs[self.config.orcid_attribute] = [orcid.uri]
        else:
            attrs.pop(self.config.orcid_attribute, None)  # only verified iDs are released
        context.decorate("orcid_outcome", outcome)
        return super().process(context, data)

    def _after_error(self, context: Context, data: InternalData, exc: OrcidPluginError, reference: str) -> Any:
        self._log(context, logging.WARNING, f"ORCID hop failed: {exc.code}: {exc.message} (ref {reference})")
        if self.config.on_error == "fail":
            raise SATOSAAuthenticationError(context.state, f"ORCID iD could not be verified ({exc.code})")
        return self._continue(context, data, None, outcome=f"error_{exc.code}")

    def _restore(self, saved: Any) -> tuple[InternalData, dict[str, Any]] | None:
        if not isinstance(saved, dict) or saved.get("v") != STATE_VERSION:
            return None
        if not isinstance(saved.get("state"), str) or not isinstance(saved.get("exp"), int):
            return None
        try:
            return InternalData.from_dict(saved["flow"]), saved
        except Exception:
            return None

    def _check_state(self, params: dict[str, Any], expected: str) -> None:
        got = self._param(params, "state")
        if not got:
            raise StateMismatch("the ORCID callback carries no state")
        if not hmac.compare_digest(got.encode(), expected.encode()):
            raise StateMismatch()

    @staticmethod
    def _param(params: dict[str, Any], key: str) -> str | None:
        value = params.get(key)
        if isinstance(value, list):
            value = value[0] if len(value) == 1 else None
        if not isinstance(value, str) or not value or len(value) > MAX_PARAM_LENGTH:
            return None
        return value

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

    def _safely(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except OrcidPluginError as exc:
            log.warning("could not record a decision: %s", exc.code)

    def _error_page(self, reference: str, title: str, message: str, status: str, headers: list | None = None) -> Response:
        body = pages.render("error.html", title=title, message=message, reference=reference)
        hdrs = [("Cache-Control", "no-store")] + (headers or [])
        return Response(body, status=status, headers=hdrs, content="text/html; charset=utf-8")

    def _log(self, context: Context, level: int, message: str) -> None:
        log.log(level, lu.LOG_FMT.format(id=lu.get_session_id(context.state), message=message))
