"""ORCID's SAML SP, played by the ORCID emulator: institutional sign-in and the connect notification.

ORCID's "access through your institution" is a Shibboleth SP (production entity ID
``https://orcid.org/saml2/sp/1``) in eduGAIN; with the plugin, the institution's SATOSA proxy is
the IdP it talks to. This module is the emulator's stand-in for that SP, following
ORCID's guide https://info.orcid.org/documentation/integration-guide/sign-into-orcid-with-institutional-credentials/ and ORCID-Source's ``InstitutionalSignInManagerImpl``:

1. the sign-in page's "Sign in with your institution" link sends an AuthnRequest (HTTP-Redirect,
   NameIDPolicy persistent) to the IdP; with one IdP in the metadata there is no picker;
2. the ACS verifies the response (signed assertion, InResponseTo, issuer) and turns it into
   the "headers" ORCID's Shibboleth SP would pass on (``persistent-id``, ``edu-person-unique-id``,
   ``targeted-id-oid``, ``subject-id``, ``eppn``, ``givenname``, ``sn``, ...);
3. the account key is the first of ``persistent-id`` (a *persistent* NameID only),
   ``edu-person-unique-id``, ``targeted-id-oid``, ``targeted-id``, ``subject-id``. A transient
   NameID or an ePPN is never a key: without one of those the sign-in is refused;
4. the first time, the researcher signs in to an ORCID account once to link it; later sign-ins
   with the same key are signed straight in, unless a stored identifier header or ``eppn``
   changed (both non-blank and different: ORCID's ``checkHeaders``), which fails the sign-in;
5. after the sign-in, when a client is registered for this IdP and does not "know" the user
   (no active token with ``/activities/update``), ORCID's "connect your institution"
   notification appears on the user's page; its button opens, in a new tab, the state-less
   authorize URL of section 6.2 (``response_type=code&client_id&scope&redirect_uri``, nothing
   else). The notification is archived once the client knows the user.

Routes (relative to the emulator's issuer):

* ``GET  /signin``                        ORCID's sign-in page outside an OAuth request
* ``POST /signin/password``               its password form
* ``GET  /signin/institution[?pending=]`` "Sign in with your institution" (picker if several IdPs)
* ``GET  /Shibboleth.sso/Login?entityID=&pending=``  the AuthnRequest
* ``POST /Shibboleth.sso/SAML2/POST``     the assertion consumer service
* ``GET  /Shibboleth.sso/Metadata``       this SP's metadata (also at the entity ID when it is a URL here)
* ``POST /shibboleth/link``               link the institutional account to an ORCID account (once)
* ``GET  /my-orcid``                      the signed-in user's page with the connect notification

``pending`` is the id of an OAuth authorize request in progress (the link on the emulator's
sign-in page during ``/oauth/authorize``); after the institutional sign-in that request continues.

Enable it with :meth:`EmulatorSamlSp.mount` or, for ``make_app_from_env``, the environment
(:func:`mount_from_env`).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping
from urllib.parse import urlencode, urlsplit

from werkzeug.wrappers import Request, Response

from .emulator_common import DEMO_PASSWORD

if TYPE_CHECKING:
    from .emulator import Emulator

__all__ = [
    "EmulatorSamlSp",
    "InstitutionalLogin",
    "UserConnection",
    "ConnectNotification",
    "REMOTE_USER_HEADERS",
    "ATTRIBUTE_HEADERS",
    "ACS_PATH",
    "DEFAULT_ENTITY_PATH",
    "saml_sp_config",
    "default_entity_id",
    "headers_from_assertion",
    "remote_user",
    "check_headers",
    "display_name",
    "mount_from_env",
]

DEFAULT_ENTITY_PATH = "/saml2/sp/1"  # like ORCID's https://orcid.org/saml2/sp/1
ACS_PATH = "/Shibboleth.sso/SAML2/POST"
LOGIN_PATH = "/Shibboleth.sso/Login"
METADATA_PATH = "/Shibboleth.sso/Metadata"
SIGNIN_PATH = "/signin"
PASSWORD_PATH = "/signin/password"
INSTITUTION_PATH = "/signin/institution"
LINK_PATH = "/shibboleth/link"
MY_ORCID_PATH = "/my-orcid"
ATTEMPT_TTL = 600  # seconds an AuthnRequest or a "link your account" page stays usable

NAMEID_FORMAT_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
SIG_RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"

#: ORCID's account keys, in order: the first one present wins (InstitutionalSignInManager).
REMOTE_USER_HEADERS = ("persistent-id", "edu-person-unique-id", "targeted-id-oid", "targeted-id", "subject-id")
EPPN_HEADER = "eppn"
#: SAML attribute (pysaml2 friendly name) -> the Shibboleth SP header ORCID reads
ATTRIBUTE_HEADERS = {
    "eduPersonUniqueId": "edu-person-unique-id",
    "eduPersonTargetedID": "targeted-id-oid",
    "subject-id": "subject-id",
    "eduPersonPrincipalName": EPPN_HEADER,
    "givenName": "givenname",
    "sn": "sn",
    "displayName": "displayname",
    "mail": "mail",
}
#: what this SP asks for in its metadata (the proxy releases only what is requested)
REQUESTED_ATTRIBUTES = tuple(ATTRIBUTE_HEADERS)
#: a client "knows" a user when it holds an active token with one of these (doesClientKnowUser)
KNOWING_SCOPES = {"/activities/update", "/affiliations/create", "/affiliations/update"}
_SEPARATOR = re.compile(r"(?<!\\);")


# --- what ORCID makes of an assertion (pure functions, unit-tested) -----------------------
def _join(values: Iterable[str]) -> str:
    """Shibboleth passes multi-valued attributes as one header, ``;``-separated (``\\;`` escaped)."""
    return ";".join(v.replace(";", "\\;") for v in values)


def _values(header: str | None) -> list[str]:
    if header is None:
        return []
    return [v.replace("\\;", ";") for v in _SEPARATOR.split(header)]


def _first(header: str | None) -> str | None:
    values = _values(header)
    return values[0] if values else None


def _blank(value: str | None) -> bool:
    return value is None or not value.strip()


def headers_from_assertion(idp: str, sp: str, name_id: Any, ava: Mapping[str, Iterable[Any]]) -> dict[str, str]:
    """The headers ORCID's Shibboleth SP would set for this assertion.

    ``persistent-id`` only from a NameID whose Format is persistent, as Shibboleth writes it
    (``<IdP>!<SP>!<value>``); a transient or unspecified NameID sets nothing.
    """
    headers = {"shib-identity-provider": idp}
    fmt = getattr(name_id, "format", None)
    text = (getattr(name_id, "text", None) or "").strip()
    if fmt == NAMEID_FORMAT_PERSISTENT and text:
        qualifier = getattr(name_id, "name_qualifier", None) or idp
        sp_qualifier = getattr(name_id, "sp_name_qualifier", None) or sp
        headers["persistent-id"] = f"{qualifier}!{sp_qualifier}!{text}"
    for attribute, header in ATTRIBUTE_HEADERS.items():
        values = [str(v).strip() for v in (ava.get(attribute) or []) if str(v).strip()]
        if values:
            headers[header] = _join(values)
    return headers


def remote_user(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """``(id type, user id)``: ORCID's account key, or None (never ePPN, never a transient NameID)."""
    for name in REMOTE_USER_HEADERS:
        value = _first(headers.get(name))
        if not _blank(value):
            return name, value  # type: ignore[return-value]
    return None


def check_headers(original: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Names of the identifier headers (and ``eppn``) that changed since the account was linked.

    Like ORCID, only values present on both sides are compared (an IdP adding or dropping an
    attribute is not a change); multi-valued headers compare as sets.
    """
    changed = []
    for name in (*REMOTE_USER_HEADERS, EPPN_HEADER):
        old, new = original.get(name), current.get(name)
        if _blank(old) or _blank(new):
            continue
        if set(_values(old)) != set(_values(new)):
            changed.append(name)
    return changed


def display_name(headers: Mapping[str, str]) -> str:
    """ORCID's "account id" shown for the institutional account: eppn, displayName, names, key."""
    for name in (EPPN_HEADER, "displayname"):
        value = _first(headers.get(name))
        if not _blank(value):
            return value  # type: ignore[return-value]
    names = " ".join(v for v in (_first(headers.get("givenname")), _first(headers.get("sn"))) if v)
    if names.strip():
        return names
    key = remote_user(headers)
    return key[1].rsplit("!", 1)[-1] if key else "(unknown)"


# --- records -------------------------------------------------------------------------------
@dataclass(frozen=True)
class InstitutionalLogin:
    """One verified institutional sign-in, as ORCID sees it."""

    idp: str
    id_type: str
    user_id: str
    headers: dict[str, str]

    @property
    def account_id(self) -> str:
        return display_name(self.headers)


@dataclass
class UserConnection:
    """ORCID's ``userconnection`` row: this institutional account is this ORCID record."""

    idp: str
    id_type: str
    user_id: str
    orcid: str
    headers: dict[str, str]
    linked_at: float
    last_login: float


@dataclass
class ConnectNotification:
    """An ``INSTITUTIONAL_CONNECTION`` notification in the user's inbox."""

    orcid: str
    client_id: str
    authorization_url: str
    created: float
    archived: bool = False


@dataclass
class _Attempt:
    request_id: str
    idp: str
    pending: str | None
    created: float


@dataclass
class _LinkRequest:
    login: InstitutionalLogin
    pending: str | None
    created: float


# --- configuration ---------------------------------------------------------------------------
def default_entity_id(issuer: str) -> str:
    return issuer.rstrip("/") + DEFAULT_ENTITY_PATH


def saml_sp_config(*, issuer: str, key_file: str, cert_file: str, entity_id: str | None = None,
                   idp_metadata: Iterable[str] = ()) -> dict[str, Any]:
    """pysaml2 SP configuration of the emulator's "ORCID" SP (also used to write its metadata)."""
    issuer = issuer.rstrip("/")
    metadata = [str(p) for p in idp_metadata]
    return {
        "entityid": entity_id or default_entity_id(issuer),
        "name": "ORCID (offline emulator)",
        "key_file": str(key_file),
        "cert_file": str(cert_file),
        "metadata": {"local": metadata} if metadata else {},
        "accepted_time_diff": 60,
        "organization": {"display_name": "ORCID (offline emulator)", "name": "ORCID emulator", "url": issuer},
        "service": {
            "sp": {
                "name": "ORCID (offline emulator)",
                "endpoints": {"assertion_consumer_service": [(issuer + ACS_PATH, BINDING_HTTP_POST)]},
                "want_assertions_signed": True,
                "want_response_signed": False,
                "authn_requests_signed": False,
                "allow_unsolicited": False,
                "signing_algorithm": SIG_RSA_SHA256,
                "digest_algorithm": DIGEST_SHA256,
                "name_id_format": [NAMEID_FORMAT_PERSISTENT],
                "name_id_policy_format": NAMEID_FORMAT_PERSISTENT,
                "name_id_format_allow_create": True,
                "optional_attributes": list(REQUESTED_ATTRIBUTES),
            }
        },
    }


# --- the SP ------------------------------------------------------------------------------------
class EmulatorSamlSp:
    """The emulator's ORCID SAML SP. Mount it on an :class:`~.emulator.Emulator`."""

    def __init__(self, emulator: "Emulator", *, key_file: str, cert_file: str, idp_metadata: Iterable[str],
                 entity_id: str | None = None, idp_clients: Mapping[str, str] | None = None,
                 scopes: str = "/read-limited /activities/update") -> None:
        from saml2.client import Saml2Client
        from saml2.config import SPConfig

        self.emulator = emulator
        config = saml_sp_config(issuer=emulator.issuer, key_file=key_file, cert_file=cert_file,
                                entity_id=entity_id, idp_metadata=idp_metadata)
        self.client = Saml2Client(config=SPConfig().load(config))
        self.entity_id: str = self.client.config.entityid
        self.scopes = scopes
        self._idp_clients = dict(idp_clients) if idp_clients is not None else None
        self._lock = threading.RLock()
        self._attempts: dict[str, _Attempt] = {}
        self._links: dict[str, _LinkRequest] = {}
        self.connections: list[UserConnection] = []
        self.notifications: list[ConnectNotification] = []
        entity = urlsplit(self.entity_id)
        issuer = urlsplit(emulator.issuer)
        self._entity_path = entity.path if (entity.scheme, entity.netloc) == (issuer.scheme, issuer.netloc) else None
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", SIGNIN_PATH): self._signin_page,
            ("POST", PASSWORD_PATH): self._password_signin,
            ("GET", INSTITUTION_PATH): self._institutions,
            ("GET", LOGIN_PATH): self._login,
            ("POST", ACS_PATH): self._acs,
            ("GET", METADATA_PATH): self._metadata,
            ("POST", LINK_PATH): self._link,
            ("GET", MY_ORCID_PATH): self._my_orcid,
        }
        if self._entity_path:
            self._routes[("GET", self._entity_path.rstrip("/") or "/")] = self._metadata

    @classmethod
    def mount(cls, emulator: "Emulator", **kwargs: Any) -> "EmulatorSamlSp":
        sp = cls(emulator, **kwargs)
        emulator.saml_sp = sp
        return sp

    # ---- public helpers -----------------------------------------------------------------
    @property
    def identity_providers(self) -> list[str]:
        return sorted(self.client.metadata.identity_providers())

    def idp_name(self, idp: str) -> str:
        return self.client.metadata.name(idp) or idp

    def client_for_idp(self, idp: str) -> str | None:
        """The one client whose authentication provider is ``idp`` (ORCID: ``retrieveByIdP``).

        Without an explicit mapping, the emulator's only client with an institutional-sign-in
        redirect URI serves every IdP in the metadata.
        """
        if self._idp_clients is not None:
            return self._idp_clients.get(idp)
        candidates = [c.client_id for c in self.emulator.clients.values() if c.connect_redirect_uri]
        return candidates[0] if len(candidates) == 1 else None

    def client_knows_user(self, client_id: str, orcid: str) -> bool:
        return any(KNOWING_SCOPES & set(t.scopes) for t in self.emulator.tokens(orcid=orcid, client_id=client_id))

    def connect_url(self, client_id: str) -> str:
        """The notification's authorize URL, exactly as ORCID builds it (section 6.2): no state."""
        return self.emulator.institutional_connect_url(client_id, None, scopes=self.scopes)

    def connection_for(self, idp: str, id_type: str, user_id: str) -> UserConnection | None:
        with self._lock:
            return next((c for c in self.connections
                         if (c.idp, c.id_type, c.user_id) == (idp, id_type, user_id)), None)

    def active_notifications(self, orcid: str) -> list[ConnectNotification]:
        """Unarchived connect notifications; those whose client now knows the user are archived."""
        with self._lock:
            out = []
            for n in self.notifications:
                if n.orcid != orcid or n.archived:
                    continue
                if self.client_knows_user(n.client_id, orcid):
                    n.archived = True
                    continue
                out.append(n)
            return out

    def start_url(self, pending: str | None = None) -> str:
        """Where "Sign in with your institution" leads (relative to the emulator)."""
        return INSTITUTION_PATH + (f"?{urlencode({'pending': pending})}" if pending else "")

    def metadata_xml(self) -> str:
        from saml2.metadata import entity_descriptor

        return str(entity_descriptor(self.client.config))

    # ---- WSGI-ish -------------------------------------------------------------------------
    def handles(self, method: str, path: str) -> bool:
        return (method.upper(), path) in self._routes

    def __call__(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        handler = self._routes[(request.method.upper(), path)]
        try:
            return handler(request)
        except Exception as exc:  # never a 500 without a page
            import logging

            logging.getLogger(__name__).exception("emulator SAML SP: %s failed", path)
            return self._message(500, "Oops! Something went wrong",
                                 "The institutional sign-in failed unexpectedly.", "server_error",
                                 f"{type(exc).__name__}: {exc}")

    # ---- pages ------------------------------------------------------------------------------
    def _render(self, template: str, status: int = 200, **context: Any) -> Response:
        return self.emulator._render(template, status, **context)

    def _message(self, status: int, heading: str, message: str, error: str | None = None,
                 detail: str | None = None) -> Response:
        return self.emulator._page(status, heading, message, error, detail)

    def _redirect(self, location: str) -> Response:
        return Response("", 302, headers={"Location": location, "Cache-Control": "no-store"})

    def _accounts(self) -> list[dict[str, str]]:
        return [
            {"orcid": a.orcid, "email": a.email, "display_name": a.public_name or "(name not public)",
             "notes": ", ".join(n for n in ("two-factor" if a.mfa else "", "" if a.names_public else "private name") if n)}
            for a in self.emulator.accounts.values()
        ]

    def _signin_page(self, request: Request, error: str | None = None, username: str = "") -> Response:
        """ORCID's sign-in page when no application asked (orcid.org/signin)."""
        return self._render(
            "emulator_signin.html", 401 if error else 200, client_name=None, error=error,
            action=self.emulator._url(request, PASSWORD_PATH), pending="", username=username, prefill=None,
            accounts=self._accounts(), demo_password=DEMO_PASSWORD,
            institutional_url=self.emulator._url(request, self.start_url()),
        )

    def _password_signin(self, request: Request) -> Response:
        account = self._check_password(request)
        if account is None:
            return self._signin_page(request, "Incorrect email, ORCID iD or password.", request.form.get("username", ""))
        response = self._redirect(self.emulator._url(request, MY_ORCID_PATH))
        self._new_session(request, response, account.orcid)
        return response

    def _institutions(self, request: Request) -> Response:
        pending = request.args.get("pending") or None
        idps = self.identity_providers
        if len(idps) == 1:
            return self._redirect(self._login_url(request, idps[0], pending))
        if not idps:
            return self._message(503, "Institutional sign-in unavailable", "No institution is configured.",
                                 "no_idp")
        choices = [{"name": self.idp_name(i), "entity_id": i, "url": self._login_url(request, i, pending)} for i in idps]
        return self._render("emulator_institutions.html", institutions=choices)

    def _login_url(self, request: Request, idp: str, pending: str | None) -> str:
        params = {"SAMLDS": "1", "entityID": idp}
        if pending:
            params["pending"] = pending
        return self.emulator._url(request, LOGIN_PATH) + "?" + urlencode(params)

    def _login(self, request: Request) -> Response:
        """Shibboleth's SessionInitiator: an AuthnRequest to the chosen IdP (HTTP-Redirect)."""
        idp = request.args.get("entityID", "")
        if idp not in self.identity_providers:
            return self._message(400, "Institution not found", "This institution cannot be used to sign in to ORCID.",
                                 "unknown_idp", idp or "(no entityID)")
        pending = request.args.get("pending") or None
        relay_state = secrets.token_urlsafe(18)
        request_id, info = self.client.prepare_for_authenticate(
            entityid=idp, relay_state=relay_state, binding=BINDING_HTTP_REDIRECT, response_binding=BINDING_HTTP_POST,
        )
        now = self.emulator.clock()
        with self._lock:
            self._purge(now)
            self._attempts[relay_state] = _Attempt(request_id, idp, pending, now)
        return self._redirect(dict(info["headers"])["Location"])

    def _acs(self, request: Request) -> Response:
        saml_response = request.form.get("SAMLResponse", "")
        relay_state = request.form.get("RelayState", "")
        now = self.emulator.clock()
        with self._lock:
            self._purge(now)
            attempt = self._attempts.pop(relay_state, None)
        if not saml_response or attempt is None:
            return self._message(400, "Institutional sign-in expired",
                                 "This sign-in through your institution has expired or was already used. "
                                 "Start again from the ORCID sign-in page.", "invalid_request")
        try:
            response = self.client.parse_authn_request_response(
                saml_response, BINDING_HTTP_POST, {attempt.request_id: "/"})
        except Exception as exc:  # pysaml2 raises many types: signature, status, audience, unsolicited...
            return self._message(400, "Institutional sign-in failed",
                                 "ORCID could not accept the answer from your institution.",
                                 "invalid_response", f"{type(exc).__name__}: {exc}")
        if response is None or response.issuer() != attempt.idp:
            return self._message(400, "Institutional sign-in failed",
                                 "The answer did not come from the institution you chose.", "invalid_response")
        headers = headers_from_assertion(attempt.idp, self.entity_id, response.name_id, response.ava)
        key = remote_user(headers)
        if key is None:
            # ORCID's "unsupportedInstitution" page.
            return self._message(
                403, "Your institution is not sending the information ORCID needs",
                "ORCID needs a persistent identifier to recognise you: a persistent NameID, eduPersonUniqueId, "
                "eduPersonTargetedID or subject-id. A transient NameID or eduPersonPrincipalName is not "
                "accepted. Ask your institution's identity team to release one to ORCID.", "unsupported_institution",
                f"received: {', '.join(sorted(h for h in headers if h != 'shib-identity-provider')) or 'nothing'}")
        login = InstitutionalLogin(attempt.idp, key[0], key[1], headers)
        connection = self.connection_for(login.idp, login.id_type, login.user_id)
        if connection is None:
            return self._link_page(request, login, attempt.pending)
        changed = check_headers(connection.headers, login.headers)
        if changed:
            return self._message(
                403, "Institutional sign-in failed",
                "The identifiers your institution sent are not the ones it sent when you linked your account, "
                "so ORCID cannot sign you in this way. Sign in with your ORCID credentials, or contact your "
                "institution.", "header_mismatch", f"changed: {', '.join(changed)}")
        with self._lock:
            connection.last_login = now
        return self._signed_in(request, connection.orcid, login.idp, attempt.pending)

    def _link_page(self, request: Request, login: InstitutionalLogin, pending: str | None,
                   error: str | None = None, username: str = "", token: str | None = None) -> Response:
        if token is None:
            token = secrets.token_urlsafe(24)
            with self._lock:
                self._links[token] = _LinkRequest(login, pending, self.emulator.clock())
        return self._render(
            "emulator_institution_link.html", 401 if error else 200, error=error, token=token,
            action=self.emulator._url(request, LINK_PATH), institution=self.idp_name(login.idp),
            account_id=login.account_id, given_name=_first(login.headers.get("givenname")) or "",
            family_name=_first(login.headers.get("sn")) or "", username=username,
            accounts=self._accounts(), demo_password=DEMO_PASSWORD,
        )

    def _link(self, request: Request) -> Response:
        token = request.form.get("link", "")
        now = self.emulator.clock()
        with self._lock:
            self._purge(now)
            link = self._links.get(token)
        if link is None:
            return self._message(400, "Session expired", "This page has expired. Sign in through your institution "
                                 "again.", "invalid_request")
        account = self._check_password(request)
        if account is None:
            return self._link_page(request, link.login, link.pending, "Incorrect email, ORCID iD or password.",
                                   request.form.get("username", ""), token)
        with self._lock:
            self._links.pop(token, None)
            login = link.login
            if self.connection_for(login.idp, login.id_type, login.user_id) is None:
                self.connections.append(UserConnection(login.idp, login.id_type, login.user_id, account.orcid,
                                                       dict(login.headers), now, now))
        return self._signed_in(request, account.orcid, login.idp, link.pending)

    def _signed_in(self, request: Request, orcid: str, idp: str, pending_id: str | None) -> Response:
        """Sign the browser in to ORCID, send the connect notification, go on."""
        self._notify(orcid, idp)
        pending = None
        if pending_id:
            with self.emulator._lock:
                pending = self.emulator._pending.get(pending_id)
        session = self.emulator.start_session(request, orcid)
        if pending is not None:
            response = self.emulator._continue(request, pending, session)
        else:
            response = self._redirect(self.emulator._url(request, MY_ORCID_PATH))
        self.emulator._set_session_cookie(response, session)
        return response

    def _notify(self, orcid: str, idp: str) -> None:
        """``InstitutionalSignInManagerImpl.sendNotification``."""
        client_id = self.client_for_idp(idp)
        if client_id is None or client_id not in self.emulator.clients:
            return  # the IdP is not linked to any client
        if not self.emulator.clients[client_id].connect_redirect_uri:
            return  # no institutional-sign-in redirect URI: ORCID's URL would be null
        if self.client_knows_user(client_id, orcid):
            return
        with self._lock:
            if any(n.orcid == orcid and n.client_id == client_id and not n.archived for n in self.notifications):
                return
            self.notifications.append(ConnectNotification(orcid, client_id, self.connect_url(client_id),
                                                          self.emulator.clock()))

    def _my_orcid(self, request: Request) -> Response:
        session = self.emulator._session(request)
        if session is None:
            return self._redirect(self.emulator._url(request, SIGNIN_PATH))
        account = self.emulator.accounts[session.orcid]
        notes = [
            {"client_name": self.emulator.clients[n.client_id].name, "client_id": n.client_id,
             "url": n.authorization_url}
            for n in self.active_notifications(session.orcid)
        ]
        linked = [{"institution": self.idp_name(c.idp), "account_id": display_name(c.headers)}
                  for c in self.connections if c.orcid == session.orcid]
        return self._render("emulator_my_orcid.html", user_name=account.public_name or session.orcid,
                            orcid=session.orcid, notifications=notes, linked=linked,
                            signout=self.emulator._url(request, "/signout"))

    def _metadata(self, request: Request) -> Response:
        return Response(self.metadata_xml(), 200, content_type="application/samlmetadata+xml")

    # ---- sessions -----------------------------------------------------------------------------
    def _check_password(self, request: Request):
        return self.emulator.check_password(request.form.get("username", ""), request.form.get("password", ""))

    def _new_session(self, request: Request, response: Response, orcid: str) -> None:
        self.emulator._set_session_cookie(response, self.emulator.start_session(request, orcid))

    def _purge(self, now: float) -> None:
        for key in [k for k, a in self._attempts.items() if now - a.created > ATTEMPT_TTL]:
            del self._attempts[key]
        for key in [k for k, link in self._links.items() if now - link.created > ATTEMPT_TTL]:
            del self._links[key]


def mount_from_env(emulator: "Emulator", environ: Mapping[str, str] | None = None) -> EmulatorSamlSp | None:
    """Mount the SAML SP when ``ORCID_EMULATOR_SAML_IDP_METADATA`` is set.

    ``ORCID_EMULATOR_SAML_IDP_METADATA``  metadata file(s) of the IdP(s), comma separated (the demo:
                                          the proxy's SAML frontend)
    ``ORCID_EMULATOR_SAML_KEY`` / ``_CERT`` the SP's key and certificate (PEM), both required
    ``ORCID_EMULATOR_SAML_ENTITY_ID``     default ``<issuer>/saml2/sp/1``
    ``ORCID_EMULATOR_SAML_IDP_CLIENTS``   JSON ``{"<IdP entity ID>": "<client id>"}``: the client
                                          registered for each IdP (ORCID's authentication provider)
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("ORCID_EMULATOR_SAML_IDP_METADATA", "").strip()
    if not raw:
        return None
    paths = [p.strip() for p in raw.split(",") if p.strip()]
    for path in paths:
        if not os.path.isfile(path):
            raise RuntimeError(f"ORCID_EMULATOR_SAML_IDP_METADATA: no such file {path}")
    key, cert = environ.get("ORCID_EMULATOR_SAML_KEY"), environ.get("ORCID_EMULATOR_SAML_CERT")
    if not key or not cert:
        raise RuntimeError("ORCID_EMULATOR_SAML_KEY and ORCID_EMULATOR_SAML_CERT are required for the SAML SP")
    clients = None
    if environ.get("ORCID_EMULATOR_SAML_IDP_CLIENTS"):
        try:
            clients = json.loads(environ["ORCID_EMULATOR_SAML_IDP_CLIENTS"])
            if not isinstance(clients, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            raise RuntimeError(f"ORCID_EMULATOR_SAML_IDP_CLIENTS is not a JSON object of IdP -> client id: {exc}") from None
    return EmulatorSamlSp.mount(emulator, key_file=key, cert_file=cert, idp_metadata=paths,
                                entity_id=environ.get("ORCID_EMULATOR_SAML_ENTITY_ID") or None, idp_clients=clients)
