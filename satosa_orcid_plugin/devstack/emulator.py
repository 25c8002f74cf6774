"""An offline emulator of ORCID's public OAuth 2.0 / OpenID Connect behaviour.

It is a plain WSGI app (werkzeug) for tests, the demo stack and local development. It follows
ORCID's public sources (ORCID-Source, orcid-model, orcid-angular), and is as strict and as
lenient as ORCID: redirect URIs matched by scheme, host, port and path prefix
(``OrcidOauthRedirectResolver``), single-use codes whose reuse revokes the tokens they
produced, the redirect URI repeated at the token endpoint, client credentials in the form or
an ``Authorization: Basic`` header, member-only scopes, a string ``amr`` and a bare-iD ``sub``.

Endpoints (relative to ``issuer``):

* browser: ``GET /oauth/authorize``, ``POST /signin``, ``POST /oauth/authorize/decision``,
  ``GET /signout``, ``GET /userStatus.json?logUserOut=true``
* back channel: ``POST /oauth/token``, ``GET|POST /oauth/userinfo``, ``POST /oauth/revoke``,
  ``GET /oauth/jwks``, ``GET /.well-known/openid-configuration``, ``GET /v3.0/{orcid}/record|person``
* test control: ``/_emulator/faults`` (GET, POST, DELETE), ``/_emulator/requests`` (GET, DELETE),
  ``POST /_emulator/revoke``, ``GET /_emulator/connect``, ``GET /_emulator/health``
* ORCID's SAML SP (institutional sign-in, connect notification), when mounted:
  emulator_saml_sp.py (``GET /signin``, ``/signin/institution``, ``/Shibboleth.sso/...``, ``/my-orcid``)

It only ever listens on loopback (:func:`serve_in_thread`) and refuses an issuer on orcid.org.
All state lives in memory behind one lock: run it as a single process (threads are fine).
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import string
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import quote, quote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jinja2 import Environment, PackageLoader, select_autoescape
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from ..errors import InvalidOrcidId
from ..orcid_id import OrcidId
from .emulator_common import DEMO_PASSWORD, SESSION_COOKIE, Reply, Session
from .emulator_faults import DEFAULT_MALFORMED_BODY, DropConnection, FaultPlan, FaultRule, drop_connection
from .emulator_member_api import MemberApi, member_api_for

__all__ = [
    "ClientRegistration",
    "DemoAccount",
    "DEMO_ACCOUNTS",
    "DEMO_PASSWORD",
    "Emulator",
    "FaultPlan",
    "FaultRule",
    "DropConnection",
    "RecordedRequest",
    "Token",
    "RunningServer",
    "serve_in_thread",
    "make_app_from_env",
]

TOKEN_EXPIRES_IN = 631138518  # ~20 years: the expires_in of ORCID's sample token responses (ORCID API tutorials, https://info.orcid.org/documentation/api-tutorials/)
ID_TOKEN_LIFETIME = 24 * 3600  # exp = iat + 24 h (§3)
PENDING_TTL = 3600  # how long a sign-in / consent page stays usable
PUBLIC_SCOPES = ("/authenticate", "openid")
MEMBER_SCOPES = ("/read-limited", "/activities/update", "/person/update")
LANGS = {"ar", "cs", "de", "en", "es", "fr", "it", "ja", "ko", "pl", "pt", "ru", "tr", "zh_CN", "zh_TW"}
SCOPE_LABELS = {
    "/authenticate": "Get your ORCID iD",
    "openid": "Get your ORCID iD",
    "/read-limited": "Read your information with visibility set to Trusted Organizations",
    "/activities/update": "Add/update your research activities (works, affiliations, etc.)",
    "/person/update": "Add/update other information about you (country, keywords, etc.)",
}
API_MEDIA_TYPES = ("application/vnd.orcid+json", "application/orcid+json", "application/json")
API_XML_TYPES = ("application/vnd.orcid+xml", "application/orcid+xml", "application/xml")
RECORD_HOST = "orcid.org"
BACK_CHANNEL = {"token", "userinfo", "revoke", "jwks", "discovery", "api"}
_CODE_ALPHABET = string.ascii_letters + string.digits
_JSON = "application/json;charset=UTF-8"


# --- registrations and accounts ------------------------------------------------------
@dataclass
class ClientRegistration:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    member: bool = True
    name: str = "Demo Institution"
    connect_redirect_uri: str | None = None  # the "institutional-sign-in" redirect URI (§6.2)

    def accepts_redirect(self, uri: str) -> bool:
        registered = self.redirect_uris + ([self.connect_redirect_uri] if self.connect_redirect_uri else [])
        return any(redirect_matches(uri, r.strip()) for r in registered)


def _clean_path(path: str) -> str:
    """Spring's ``StringUtils.cleanPath`` for a URL path: ``.`` segments dropped, ``..`` segments
    resolved; empty segments (a trailing ``/``) are kept."""
    out: list[str] = []
    for part in path.split("/"):
        if part == ".":
            continue
        if part == ".." and len(out) > 1 and out[-1] != "..":
            out.pop()
            continue
        out.append(part)
    return "/".join(out)


def redirect_matches(requested: str, registered: str) -> bool:
    """ORCID-Source ``OrcidOauthRedirectResolver.redirectMatches``: same scheme, user info, host
    and port (an absent port is not the default port), and the requested path starts with the
    registered one (a plain string prefix after ``cleanPath``); query and fragment are ignored."""
    try:
        a, b = urlsplit(requested), urlsplit(registered)
        ports = (a.port, b.port)
    except ValueError:
        return False

    def raw(uri: str, netloc: str) -> tuple[str, str, str]:  # as written: Spring compares case-sensitively
        userinfo, _, hostport = netloc.rpartition("@")
        host = hostport.rsplit(":", 1)[0] if not hostport.endswith("]") else hostport
        return uri.split(":", 1)[0], userinfo, host

    return (raw(requested, a.netloc) == raw(registered, b.netloc) and ports[0] == ports[1]
            and _clean_path(a.path).startswith(_clean_path(b.path)))


@dataclass
class DemoAccount:
    orcid: str
    email: str
    password: str
    given_name: str
    family_name: str
    credit_name: str | None
    mfa: bool = False
    names_public: bool = True  # False: no name in the token response, id_token or userinfo

    @property
    def public_name(self) -> str | None:
        """The ``name`` of the token response: credit name, else given + family, if public."""
        if not self.names_public:
            return None
        return self.credit_name or " ".join(p for p in (self.given_name, self.family_name) if p) or None


DEMO_ACCOUNTS: list[DemoAccount] = [
    DemoAccount("0000-0002-1825-0097", "josiah.carberry@example.edu", DEMO_PASSWORD, "Josiah", "Carberry", "Josiah Carberry"),
    DemoAccount("0000-0001-5109-3700", "sofia.garcia@example.edu", DEMO_PASSWORD, "Sofia", "Garcia", "Sofia M. Garcia", mfa=True),
    DemoAccount("0000-0002-1694-233X", "private.person@example.edu", DEMO_PASSWORD, "Ana", "Souza", None, names_public=False),
    DemoAccount("0009-0003-7578-3214", "kwame.mensah@example.edu", DEMO_PASSWORD, "Kwame", "Mensah", None),
]


# --- state records -------------------------------------------------------------------
@dataclass
class RecordedRequest:
    method: str
    path: str
    endpoint: str
    keys: list[str]  # form and query parameter names (never values: they hold secrets)
    time: float
    grant_type: str | None = None
    status: int | None = None  # None when the connection was dropped

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Token:
    """An access token and its paired refresh token (revoking one revokes both)."""

    access_token: str
    refresh_token: str
    client_id: str
    orcid: str | None  # None for client-credentials tokens
    scopes: tuple[str, ...]
    issued_at: float
    expires_at: float
    code: str | None = None
    revoked: str | None = None  # RevokeReason: AUTH_CODE_REUSED, USER_REVOKED, CLIENT_REVOKED, ...

    def active(self, now: float) -> bool:
        return self.revoked is None and now < self.expires_at

    def usable_for(self, method: str, now: float) -> bool:
        # ORCID-Source PR #7060: a user-revoked token may still DELETE the client's own items.
        if self.active(now):
            return True
        return self.revoked == "USER_REVOKED" and method == "DELETE" and now < self.expires_at


@dataclass
class _AuthCode:
    code: str
    client_id: str
    orcid: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    nonce: str | None
    issued_at: float
    auth_time: float


@dataclass
class _Pending:
    id: str
    client_id: str
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    lang: str
    prefill: dict[str, str]
    created: float
    session_id: str | None = None  # the sign-in session allowed to answer the consent page


@dataclass
class RunningServer:
    host: str
    port: int
    url: str
    _server: BaseWSGIServer = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- helpers -------------------------------------------------------------------------
def _json(body: Any, status: int = 200, content_type: str = _JSON, **headers: str) -> Response:
    resp = Response(json.dumps(body), status=status, content_type=content_type)
    resp.headers.update(headers)
    return resp


def _oauth_error(error: str, description: str, status: int = 400) -> Response:
    return _json({"error": error, "error_description": description}, status, **{"Cache-Control": "no-store"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _at_hash(access_token: str) -> str:
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


def _with_params(uri: str, params: list[tuple[str, str | None]], *, fragment: bool = False) -> str:
    query = urlencode([(k, v) for k, v in params if v is not None], quote_via=quote)
    if fragment:
        return f"{uri}#{query}"
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


def _load_key(signing_key: Any) -> rsa.RSAPrivateKey:
    if signing_key is None:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if isinstance(signing_key, rsa.RSAPrivateKey):
        return signing_key
    if isinstance(signing_key, str):
        signing_key = signing_key.encode()
    if isinstance(signing_key, bytes):
        key = serialization.load_pem_private_key(signing_key, password=None)
        if isinstance(key, rsa.RSAPrivateKey):
            return key
    raise TypeError("signing_key must be an RSA private key or its PEM")


def _public_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    return jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)


def _kid_for(key: rsa.RSAPrivateKey) -> str:
    jwk = _public_jwk(key)
    thumb = hashlib.sha256(json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":")).encode()).digest()
    return "emulator-orcid-" + _b64url(thumb)[:32].lower()


_TEMPLATE_LOCK = threading.Lock()

def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("satosa_orcid_plugin.devstack", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --- the app -------------------------------------------------------------------------
class Emulator:
    """WSGI app emulating orcid.org's OAuth/OIDC endpoints and a stub of the member API."""

    def __init__(
        self,
        issuer: str,
        clients: list[ClientRegistration],
        accounts: Iterable[DemoAccount] = DEMO_ACCOUNTS,
        *,
        code_ttl: int = 600,
        clock: Callable[[], float] = time.time,
        signing_key: Any = None,
    ) -> None:
        issuer = issuer.rstrip("/")
        parts = urlsplit(issuer)
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError(f"issuer must be an http(s) URL, got {issuer!r}")
        if host == "orcid.org" or host.endswith(".orcid.org"):
            raise ValueError("the emulator must never pose as a real ORCID host")
        self.issuer = issuer
        self.clients: dict[str, ClientRegistration] = {c.client_id: c for c in clients}
        self.accounts: dict[str, DemoAccount] = {}
        for account in accounts:
            canonical = OrcidId.parse(account.orcid).value
            self.accounts[canonical] = dataclasses.replace(account, orcid=canonical)
        self.code_ttl = code_ttl
        self.clock = clock
        self.faults = FaultPlan()
        self.requests: list[RecordedRequest] = []
        self._key = _load_key(signing_key)
        self.kid = _kid_for(self._key)
        self._rogue_key: rsa.RSAPrivateKey | None = None  # for the bad_signature fault
        self._lock = threading.RLock()
        self._codes: dict[str, _AuthCode] = {}
        self._spent_codes: set[str] = set()
        self._tokens: dict[str, Token] = {}
        self._by_refresh: dict[str, Token] = {}
        self._pending: dict[str, _Pending] = {}
        self._sessions: dict[str, Session] = {}
        self._jinja = _templates()
        self.saml_sp: Any = None  # emulator_saml_sp.EmulatorSamlSp, when mounted

    # ---- public helpers for tests ----
    def issue_code_for(
        self, client_id: str, orcid: str, scopes: str | Iterable[str], redirect_uri: str | None, nonce: str | None = None
    ) -> str:
        """A code as if ``orcid`` had signed in and granted ``scopes`` to ``client_id``."""
        if client_id not in self.clients:
            raise KeyError(f"unknown client {client_id!r}")
        account = self._account(orcid)
        if account is None:
            raise KeyError(f"no demo account {orcid!r}")
        scope_list = tuple(scopes.replace("+", " ").split()) if isinstance(scopes, str) else tuple(scopes)
        now = self.clock()
        with self._lock:
            return self._new_code(client_id, account.orcid, scope_list, redirect_uri, nonce, auth_time=now)

    def revoke_user_tokens(self, orcid: str, client_id: str | None = None) -> int:
        """As if the user removed the client from "Trusted organizations" on orcid.org."""
        orcid = OrcidId.parse(orcid).value
        now = self.clock()
        count = 0
        with self._lock:
            for token in self._tokens.values():
                if token.orcid == orcid and (client_id is None or token.client_id == client_id) and token.active(now):
                    token.revoked = "USER_REVOKED"
                    count += 1
        return count

    def tokens(self, orcid: str | None = None, client_id: str | None = None, *, active_only: bool = True) -> list[Token]:
        now = self.clock()
        with self._lock:
            return [
                t
                for t in self._tokens.values()
                if (orcid is None or t.orcid == orcid)
                and (client_id is None or t.client_id == client_id)
                and (not active_only or t.active(now))
            ]

    def institutional_connect_url(self, client_id: str, orcid: str | None = None, scopes: str = "/read-limited /activities/update") -> str:
        """The authorize URL of an Institutional Connect notification (§6.2): no state, no nonce."""
        client = self.clients[client_id]
        if not client.connect_redirect_uri:
            raise ValueError(f"client {client_id!r} has no connect_redirect_uri")
        url = (
            f"{self.issuer}/oauth/authorize?response_type=code&client_id={quote_plus(client_id)}"
            f"&scope={quote_plus(scopes)}&redirect_uri={quote_plus(client.connect_redirect_uri)}"
        )
        return url + (f"&orcid={quote_plus(orcid)}" if orcid else "")

    def signing_public_jwk(self) -> dict[str, str]:
        jwk = _public_jwk(self._key)
        # ORCID-Source orcid-web/ORCID_AUTH_WITH_OPENID_CONNECT.md: the published key carries "alg": "RS256"
        return {"kty": "RSA", "e": jwk["e"], "use": "sig", "kid": self.kid, "alg": "RS256", "n": jwk["n"]}

    # ---- WSGI ----
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        response = self._dispatch(request, environ)
        return response(environ, start_response)

    _ROUTES = {
        "/oauth/authorize": ("authorize", "_authorize", ("GET",)),
        "/signin": ("signin", "_signin", ("POST",)),
        "/oauth/authorize/decision": ("decision", "_decision", ("POST",)),
        "/signout": ("signout", "_signout", ("GET", "POST")),
        "/userStatus.json": ("user_status", "_user_status", ("GET",)),
        "/oauth/token": ("token", "_token", ("POST",)),
        "/oauth/userinfo": ("userinfo", "_userinfo", ("GET", "POST")),
        "/oauth/revoke": ("revoke", "_revoke", ("POST",)),
        "/oauth/jwks": ("jwks", "_jwks", ("GET",)),
        "/.well-known/openid-configuration": ("discovery", "_discovery", ("GET",)),
    }

    def _dispatch(self, request: Request, environ: dict) -> Response:
        path = request.path.rstrip("/") or "/"
        if path.startswith("/_emulator/"):
            return self._admin(request, path)
        if self.saml_sp is not None and self.saml_sp.handles(request.method, path):
            return self.saml_sp(request)
        if MemberApi.handles(path):  # employment / education: emulator_member_api.py
            endpoint, handler, methods = "api", "_member_api", ("GET", "POST", "PUT", "DELETE")
        elif path.startswith("/v3.0/"):
            endpoint, handler, methods = "api", "_api", ("GET", "HEAD")
        elif path in self._ROUTES:
            endpoint, handler, methods = self._ROUTES[path]
        else:
            return self._page(404, "Page not found", f"There is no page at {path}.")
        record = None
        if endpoint in BACK_CHANNEL:
            keys = sorted(set(request.args.keys()) | set(request.form.keys()))
            record = RecordedRequest(request.method, path, endpoint, keys, self.clock(), request.form.get("grant_type"))
            with self._lock:
                self.requests.append(record)
        response = self._faulted(endpoint, environ)
        if response is None:
            if request.method not in methods:
                response = Response("Method not allowed", status=405, headers={"Allow": ", ".join(methods)})
            else:
                try:
                    response = getattr(self, handler)(request)
                except Reply as reply:
                    response = reply.response
        if record is not None:
            record.status = response.status_code
        return response

    def _faulted(self, endpoint: str, environ: dict) -> Response | None:
        if endpoint not in BACK_CHANNEL and endpoint != "authorize":
            return None
        delay, rule = self.faults.take_response_faults(endpoint)
        if delay:
            time.sleep(delay)
        if rule is None:
            return None
        if rule.kind == "drop":
            drop_connection(environ)
        if rule.kind == "malformed":
            return Response(rule.params.get("body", DEFAULT_MALFORMED_BODY), 200,
                            content_type=rule.params.get("content_type", _JSON))
        status = rule.params["status"]
        body = rule.params.get("body")
        if body is None:
            reason = Response(status=status).status.split(" ", 1)[-1]
            body = f"<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1></body></html>"
        return Response(body, status, content_type=rule.params.get("content_type", "text/html;charset=UTF-8"))

    # ---- pages ----
    def _render(self, template: str, status: int = 200, lang: str = "en", **context: Any) -> Response:
        with _TEMPLATE_LOCK:  # concurrent compiles trip CPython 3.11's python/cpython#106905
            compiled = self._jinja.get_template(template)
        html = compiled.render(lang=lang.replace("_", "-"), **context)
        return Response(html, status, content_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"})

    def _page(self, status: int, heading: str, message: str, error: str | None = None, detail: str | None = None) -> Response:
        return self._render("emulator_message.html", status, heading=heading, message=message, error=error, detail=detail)

    def _url(self, request: Request, path: str) -> str:
        return request.script_root + path

    # ---- sessions, accounts ----
    def _account(self, username: str) -> DemoAccount | None:
        username = (username or "").strip()
        if OrcidId.is_valid(username):
            return self.accounts.get(OrcidId.parse(username).value)
        for account in self.accounts.values():
            if account.email.lower() == username.lower():
                return account
        return None

    def _session(self, request: Request) -> Session | None:
        sid = request.cookies.get(SESSION_COOKIE)
        with self._lock:
            return self._sessions.get(sid) if sid else None

    def _set_session_cookie(self, response: Response, session: Session | None) -> None:
        secure = self.issuer.startswith("https:")
        if session is None:
            response.delete_cookie(SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="Lax")
        else:
            response.set_cookie(SESSION_COOKIE, session.id, path="/", secure=secure, httponly=True, samesite="Lax")

    # ---- authorize ----
    def _authorize(self, request: Request) -> Response:
        q = request.args
        client = self.clients.get(q.get("client_id", ""))
        if client is None:
            return self._page(400, "Oops! Something went wrong", "The client application is not recognised.",
                              "invalid_client", f"Client not found: {q.get('client_id', '')}")
        redirect_uri = q.get("redirect_uri", "")
        if not redirect_uri or not client.accepts_redirect(redirect_uri):
            return self._page(
                400, "Oops! Something went wrong",
                f"Error: The provided redirect URI {redirect_uri or '(none)'} does not match the redirect URIs registered by {client.name}",
                "invalid_grant", "Redirect URI doesn't match your registered redirect URIs.",
            )
        state = q.get("state")
        response_type = q.get("response_type", "")
        # orcid-angular src/app/core/oauth/oauth.service.ts: the errors "handled by the client
        # application" (invalid_scope, unsupported_response_type) go back as
        # ``{redirect_uri}#error={error}``: in the fragment, no state, no description.
        if response_type != "code":  # the emulator only implements the code flow
            return self._redirect(redirect_uri, [("error", "unsupported_response_type")], fragment=True)
        scopes = tuple(dict.fromkeys(q.get("scope", "").replace("+", " ").split()))
        if self._scope_problem(client, scopes):
            return self._redirect(redirect_uri, [("error", "invalid_scope")], fragment=True)
        lang = q.get("lang") if q.get("lang") in LANGS else "en"
        prefill = {k: q[k] for k in ("given_names", "family_names", "email", "orcid") if q.get(k)}
        now = self.clock()
        pending = _Pending(secrets.token_urlsafe(18), client.client_id, redirect_uri, scopes, state, q.get("nonce"),
                           lang, prefill, now)
        session = self._session(request)
        openid = "openid" in scopes
        prompt = q.get("prompt") if openid else None  # prompt is only honoured with openid (§1.2)
        if prompt == "none":
            if session is None:
                return self._redirect(redirect_uri, [("error", "login_required"), ("state", state)], fragment=True)
            if not self._already_authorized(client.client_id, session.orcid, scopes):
                return self._redirect(redirect_uri, [("error", "interaction_required"), ("state", state)], fragment=True)
        with self._lock:
            self._purge(now)
            self._pending[pending.id] = pending
        if session is None or prompt == "login":
            return self._signin_page(request, pending)
        return self._continue(request, pending, session)

    def _scope_problem(self, client: ClientRegistration, scopes: tuple[str, ...]) -> str | None:
        if not scopes:
            return "Scope is required"
        for scope in scopes:
            if scope in MEMBER_SCOPES and not client.member:
                return f"The {scope} scope cannot be used with public API clients"
            if scope not in PUBLIC_SCOPES + MEMBER_SCOPES:
                return f"Invalid scope: {scope}"
        return None

    def _already_authorized(self, client_id: str, orcid: str, scopes: tuple[str, ...]) -> bool:
        now = self.clock()
        with self._lock:
            return any(
                # ORCID-Source OrcidRandomValueTokenServicesImpl.longLifeTokenExist: a long-lived
                # token with exactly the same scope set (containsAll both ways), not a superset.
                t.client_id == client_id and t.orcid == orcid and t.active(now) and set(scopes) == set(t.scopes)
                for t in self._tokens.values()
            )

    def _continue(self, request: Request, pending: _Pending, session: Session) -> Response:
        """The user is signed in: skip consent if the client already holds such a token (§1.2)."""
        if self._already_authorized(pending.client_id, session.orcid, pending.scopes):
            with self._lock:
                self._pending.pop(pending.id, None)
            return self._grant(pending, session)
        with self._lock:
            pending.session_id = session.id
        account = self.accounts[session.orcid]
        scopes = [{"value": s, "label": SCOPE_LABELS[s]} for s in pending.scopes]
        return self._render(
            "emulator_consent.html", lang=pending.lang, client_name=self.clients[pending.client_id].name,
            scopes=scopes, pending=pending.id, action=self._url(request, "/oauth/authorize/decision"),
            signout=self._url(request, "/signout"), user_name=account.public_name or session.orcid,
            orcid=session.orcid, redirect_uri=pending.redirect_uri,
        )

    def _signin_page(self, request: Request, pending: _Pending, error: str | None = None, username: str = "") -> Response:
        client = self.clients[pending.client_id]
        prefill = pending.prefill
        accounts = [
            {"orcid": a.orcid, "email": a.email, "display_name": a.public_name or "(name not public)",
             "notes": ", ".join(n for n in ("two-factor" if a.mfa else "", "" if a.names_public else "private name") if n)}
            for a in self.accounts.values()
        ]
        register = {k: prefill.get(k, "") for k in ("given_names", "family_names", "email")}
        return self._render(
            "emulator_signin.html", 401 if error else 200, lang=pending.lang, client_name=client.name, error=error,
            action=self._url(request, "/signin"), pending=pending.id,
            username=username or prefill.get("orcid") or prefill.get("email", ""),
            prefill=register if any(register.values()) else None, accounts=accounts, demo_password=DEMO_PASSWORD,
            institutional_url=self._url(request, self.saml_sp.start_url(pending.id)) if self.saml_sp else None,
        )

    def _take_pending(self, request: Request, *, pop: bool) -> _Pending:
        pid = request.form.get("pending", "")
        with self._lock:
            self._purge(self.clock())
            pending = self._pending.pop(pid, None) if pop else self._pending.get(pid)
        if pending is None:
            raise Reply(self._page(400, "Session expired", "This sign-in request has expired or was already used. "
                                    "Go back to the application and start again.", "invalid_request"))
        return pending

    def _signin(self, request: Request) -> Response:
        pending = self._take_pending(request, pop=False)
        username = request.form.get("username", "")
        account = self.check_password(username, request.form.get("password", ""))
        if account is None:
            return self._signin_page(request, pending, "Incorrect email, ORCID iD or password.", username)
        session = self.start_session(request, account.orcid)
        response = self._continue(request, pending, session)
        self._set_session_cookie(response, session)
        return response

    def check_password(self, username: str, password: str) -> DemoAccount | None:
        """The demo account signing in with ``username`` (e-mail or iD) and ``password``, or None."""
        account = self._account(username)
        if account is None or not hmac.compare_digest(account.password.encode(), password.encode()):
            return None
        return account

    def start_session(self, request: Request, orcid: str) -> Session:
        """Sign the browser in as ``orcid``; a session it held before ends."""
        session = Session(secrets.token_urlsafe(24), orcid, self.clock())
        with self._lock:
            old = request.cookies.get(SESSION_COOKIE)
            if old:
                self._sessions.pop(old, None)
            self._sessions[session.id] = session
        return session

    def _decision(self, request: Request) -> Response:
        pending = self._take_pending(request, pop=False)
        session = self._session(request)
        if session is None or session.id != pending.session_id:
            return self._page(403, "Not signed in", "Sign in to ORCID again to answer this request.", "access_denied")
        with self._lock:
            self._pending.pop(pending.id, None)
        decision = request.form.get("decision")
        if decision == "authorize":
            return self._grant(pending, session)
        if decision == "deny":
            return self._redirect(pending.redirect_uri, [("error", "access_denied"),
                                                         ("error_description", "User denied access"), ("state", pending.state)])
        return self._page(400, "Oops! Something went wrong", "Unknown decision.", "invalid_request")

    def _grant(self, pending: _Pending, session: Session) -> Response:
        with self._lock:
            code = self._new_code(pending.client_id, session.orcid, pending.scopes, pending.redirect_uri,
                                  pending.nonce, session.auth_time)
        return self._redirect(pending.redirect_uri, [("code", code), ("state", pending.state)])

    def _redirect(self, uri: str, params: list[tuple[str, str | None]], *, fragment: bool = False) -> Response:
        return Response("", 302, headers={"Location": _with_params(uri, params, fragment=fragment), "Cache-Control": "no-store"})

    def _signout(self, request: Request) -> Response:
        sid = request.cookies.get(SESSION_COOKIE)
        with self._lock:
            self._sessions.pop(sid or "", None)
        response = self._page(200, "Signed out", "You are signed out of the ORCID emulator.")
        self._set_session_cookie(response, None)
        return response

    def _user_status(self, request: Request) -> Response:
        """ORCID's legacy ``userStatus.json?logUserOut=true`` (used to force sign-out, §1.2)."""
        session = self._session(request)
        if request.args.get("logUserOut") == "true":
            with self._lock:
                self._sessions.pop(session.id if session else "", None)
            response = _json({"loggedIn": False})
            self._set_session_cookie(response, None)
            return response
        return _json({"loggedIn": session is not None})

    def _new_code(self, client_id: str, orcid: str, scopes: tuple[str, ...], redirect_uri: str | None,
                  nonce: str | None, auth_time: float) -> str:
        while True:  # caller holds the lock
            code = "".join(secrets.choice(_CODE_ALPHABET) for _ in range(6))
            if code not in self._codes and code not in self._spent_codes:
                break
        self._codes[code] = _AuthCode(code, client_id, orcid, tuple(scopes), redirect_uri, nonce, self.clock(), auth_time)
        return code

    def _purge(self, now: float) -> None:
        for pid in [p.id for p in self._pending.values() if now - p.created > PENDING_TTL]:
            del self._pending[pid]

    # ---- token endpoint ----
    def _client(self, request: Request) -> ClientRegistration:
        """The client's credentials from the form (``client_secret_post``, the method discovery
        names) or an ``Authorization: Basic`` header: ORCID-Source ``orcid-frontend-security.xml``
        and ``orcid-api-security-context.xml`` put ``<sec:http-basic>`` on /oauth/token and
        /oauth/revoke beside the form-parameter filter."""
        client_id = request.form.get("client_id")
        secret = request.form.get("client_secret")
        auth = request.authorization
        if auth is not None and auth.type == "basic" and not client_id and not secret:
            client_id, secret = auth.username, auth.password
        if not client_id and not secret:
            raise Reply(_json({"error": "unauthorized", "error_description": "Full authentication is required to access this resource"},
                               401, **{"WWW-Authenticate": 'Bearer realm="orcid", error="unauthorized"'}))
        client = self.clients.get(client_id or "")
        if client is None or not hmac.compare_digest(client.client_secret.encode(), (secret or "").encode()):
            raise Reply(_json({"error": "invalid_client", "error_description": "Bad client credentials"}, 401,
                               **{"WWW-Authenticate": 'Form realm="orcid", error="invalid_client", error_description="Bad client credentials"'}))
        return client

    def _token(self, request: Request) -> Response:
        client = self._client(request)
        grant_type = request.form.get("grant_type", "")
        if grant_type == "authorization_code":
            return self._token_from_code(client, request.form)
        if grant_type == "refresh_token":
            return self._token_from_refresh(client, request.form)
        if grant_type == "client_credentials":
            scopes = tuple(request.form.get("scope", "/read-public").replace("+", " ").split())
            if scopes != ("/read-public",):
                return _oauth_error("invalid_scope", f"Invalid scope: {' '.join(scopes)}; only /read-public is available")
            with self._lock:
                token = self._mint(client.client_id, None, scopes)
            return self._token_response(token, None)
        return _oauth_error("unsupported_grant_type", f"Unsupported grant type: {grant_type}")

    def _token_from_code(self, client: ClientRegistration, form: Any) -> Response:
        # Mirrors ORCID's pre-migration OrcidAuthorizationCodeTokenGranter, step by step.
        code = form.get("code")
        if not code:
            return _oauth_error("invalid_request", "An authorization code must be supplied.")
        now = self.clock()
        with self._lock:
            details = self._codes.get(code)
            if details is None:
                disabled = 0
                for token in self._tokens.values():
                    if token.code == code and token.client_id == client.client_id and token.revoked is None:
                        token.revoked = "AUTH_CODE_REUSED"
                        disabled += 1
                if disabled:
                    return _oauth_error("invalid_grant", f"Reused authorization code: {code}")
                return _oauth_error("invalid_grant", f"Invalid authorization code: {code}")
            if now > details.issued_at + self.code_ttl:
                return _oauth_error("invalid_request", "Authorization code has expired")
            asked = form.get("scope", "").replace("+", " ").split()
            for scope in asked:
                if scope not in details.scopes:
                    return _oauth_error("invalid_scope", f"Invalid scopes: {scope} available scopes for this code are: "
                                                         f"[{', '.join(details.scopes)}]")
            del self._codes[code]  # consumed from here on, even if a check below fails
            self._spent_codes.add(code)
            redirect_uri = form.get("redirect_uri")
            if (redirect_uri is not None or details.redirect_uri is not None) and redirect_uri != details.redirect_uri:
                return _oauth_error("invalid_grant", "Redirect URI mismatch.")
            if details.client_id != client.client_id:
                return _oauth_error("invalid_client", "Client ID mismatch", 401)
            token = self._mint(client.client_id, details.orcid, details.scopes, code=code)
            id_token = None
            if "openid" in details.scopes:
                id_token = self._id_token(client, token, details.nonce, details.auth_time)
        return self._token_response(token, id_token)

    def _token_from_refresh(self, client: ClientRegistration, form: Any) -> Response:
        value = form.get("refresh_token", "")
        now = self.clock()
        with self._lock:
            parent = self._by_refresh.get(value)
            if parent is None or parent.client_id != client.client_id or not parent.active(now):
                return _oauth_error("invalid_grant", f"Invalid refresh token: {value}")
            scopes = tuple(form.get("scope", "").replace("+", " ").split()) or parent.scopes
            extra = [s for s in scopes if s not in parent.scopes]
            if extra:
                return _oauth_error("invalid_scope", f"Invalid scopes: {' '.join(extra)} available scopes for this token are: "
                                                     f"[{', '.join(parent.scopes)}]")
            expires_at = parent.expires_at
            if form.get("expires_in"):
                try:
                    seconds = int(form["expires_in"])
                except ValueError:
                    return _oauth_error("invalid_request", "expires_in must be a number of seconds")
                if seconds <= 0 or now + seconds > parent.expires_at:
                    return _oauth_error("invalid_request", "Token expiration can't be after the parent token's expiration")
                expires_at = now + seconds
            if form.get("revoke_old") == "true":
                parent.revoked = "REVOKED_BY_REFRESH"
            token = self._mint(client.client_id, parent.orcid, scopes, expires_at=expires_at)
        return self._token_response(token, None)

    def _mint(self, client_id: str, orcid: str | None, scopes: tuple[str, ...], *, code: str | None = None,
              expires_at: float | None = None) -> Token:
        now = self.clock()
        token = Token(str(uuid.uuid4()), str(uuid.uuid4()), client_id, orcid, tuple(scopes), now,
                      expires_at if expires_at is not None else now + TOKEN_EXPIRES_IN, code)
        self._tokens[token.access_token] = token
        self._by_refresh[token.refresh_token] = token
        return token

    def _token_response(self, token: Token, id_token: str | None) -> Response:
        account = self.accounts.get(token.orcid or "")
        body: dict[str, Any] = {
            "access_token": token.access_token,
            "token_type": "bearer",
            "refresh_token": token.refresh_token,
            "expires_in": max(0, int(token.expires_at - self.clock())),
            "scope": " ".join(token.scopes),
        }
        if token.orcid is not None:
            # ORCID-Source ProfileEntityManagerImpl.retrivePublicDisplayName: "" when not public
            body["name"] = (account.public_name if account else None) or ""
        body["orcid"] = token.orcid
        if id_token is not None:
            body["id_token"] = id_token
        return _json(body, **{"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _id_token(self, client: ClientRegistration, token: Token, nonce: str | None, auth_time: float) -> str:
        faults = self.faults.take_id_token_faults()
        account = self.accounts[token.orcid or ""]
        iat = int(self.clock())
        if "expired" in faults:
            iat -= ID_TOKEN_LIFETIME + 3600
        claims: dict[str, Any] = {
            "at_hash": _at_hash(token.access_token),
            "aud": "APP-WRONGAUDIENCE0" if "wrong_aud" in faults else client.client_id,
            "sub": token.orcid,
            "auth_time": int(auth_time),
            "iss": "https://sandbox.orcid.org" if "wrong_iss" in faults else self.issuer,
            "exp": iat + ID_TOKEN_LIFETIME,
            "iat": iat,
            "jti": str(uuid.uuid4()),
        }
        if "sub_mismatch" in faults:
            claims["sub"] = next((o for o in self.accounts if o != token.orcid), "0000-0002-1825-0097")
        if "wrong_nonce" in faults:
            claims["nonce"] = "wrong-" + secrets.token_urlsafe(8)
        elif nonce is not None and "no_nonce" not in faults:
            claims["nonce"] = nonce
        if client.member:
            claims["amr"] = "mfa" if account.mfa else "pwd"  # a single string, member clients only (§3)
        if account.names_public:
            claims["given_name"] = account.given_name
            claims["family_name"] = account.family_name
            if account.credit_name:
                claims["name"] = account.credit_name
        key, kid = self._key, self.kid
        if "bad_signature" in faults:
            if self._rogue_key is None:
                self._rogue_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key = self._rogue_key
        if "unknown_kid" in faults:
            kid = "emulator-orcid-unknown-" + secrets.token_hex(8)
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})

    # ---- OIDC ----
    def _discovery(self, request: Request) -> Response:
        i = self.issuer
        return _json({
            "issuer": i,
            "authorization_endpoint": f"{i}/oauth/authorize",
            "token_endpoint": f"{i}/oauth/token",
            "userinfo_endpoint": f"{i}/oauth/userinfo",
            "jwks_uri": f"{i}/oauth/jwks",
            "scopes_supported": ["openid"],
            "response_types_supported": ["code", "id_token", "id_token token"],
            "grant_types_supported": ["authorization_code", "implicit", "refresh_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "claims_supported": ["family_name", "given_name", "name", "auth_time", "iss", "sub"],
            "claims_parameter_supported": False,
        })

    def _jwks(self, request: Request) -> Response:
        return _json({"keys": [self.signing_public_jwk()]})

    def _bearer(self, request: Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return None

    def _userinfo(self, request: Request) -> Response:
        value = self._bearer(request) or (request.form.get("access_token") if request.method == "POST" else None)
        now = self.clock()
        with self._lock:
            token = self._tokens.get(value or "")
        if (token is None or not token.active(now) or token.orcid is None
                or not {"openid", "/authenticate"} & set(token.scopes)):
            return _json({"error": "access_denied", "error-description": "access_token is invalid"}, 403)
        account = self.accounts[token.orcid]
        # ORCID-Source OpenIDConnectUserInfo: id = org.orcid.core.baseUri + "/" + iD, the
        # registry's own base URL (https://sandbox.orcid.org/... on sandbox): here the issuer.
        body: dict[str, Any] = {"id": f"{self.issuer}/{token.orcid}", "sub": token.orcid}
        if account.names_public:
            if account.credit_name:
                body["name"] = account.credit_name
            body["family_name"] = account.family_name
            body["given_name"] = account.given_name
        return _json(body)

    def _revoke(self, request: Request) -> Response:
        client = self._client(request)
        value = request.form.get("token")
        if not value:
            return _oauth_error("invalid_request", "Missing token parameter")
        with self._lock:
            token = self._tokens.get(value) or self._by_refresh.get(value)
            if token is not None and token.client_id == client.client_id and token.revoked is None:
                token.revoked = "CLIENT_REVOKED"
        return Response("", 200)

    # ---- member API (stub; the token model is shared with the affiliation API to come) ----
    def _api_token(self, request: Request, orcid: str) -> Token:
        value = self._bearer(request)
        if value is None:  # ORCID-Source APIAuthenticationEntryPoint: no authentication at all is 403 "forbidden"
            raise Reply(_json({"error": "forbidden", "error_description": "Forbidden: The server understood the request "
                                                                        "but refuses to authorize it."}, 403))
        now = self.clock()
        with self._lock:
            token = self._tokens.get(value)
        if token is None or not token.usable_for(request.method, now):
            raise Reply(_json({"error": "invalid_token", "error_description": f"Invalid access token: {value}"}, 401))
        if token.orcid is not None and token.orcid != orcid:
            raise Reply(self._api_error(401, 9017, "401 Unauthorized: The client application is not authorized for this ORCID "
                                         "record. Full validation error: Access token is for a different record",
                                         "The client application is not authorized."))
        return token

    @staticmethod
    def _api_error(status: int, code: int, developer: str, user: str) -> Response:
        return _json({"response-code": status, "developer-message": developer, "user-message": user, "error-code": code,
                      "more-info": "https://members.orcid.org/api/resources/troubleshooting"}, status)

    def _api_media_type(self, request: Request) -> str:
        # ORCID answers XML unless JSON is asked for by name (a bare */* gets XML); the emulator
        # only speaks JSON, so it insists on an explicit JSON media type.
        named = [(q, mt) for mt, q in request.accept_mimetypes if mt in API_MEDIA_TYPES + API_XML_TYPES and q > 0]
        best = max(named, default=(0, None))[1]
        if best is None or best in API_XML_TYPES:
            raise Reply(_json({"error": "not_acceptable", "error_description": "Send Accept: application/vnd.orcid+json "
                                "(ORCID defaults to XML; the emulator serves JSON only)"}, 406))
        return best

    @property
    def member_api(self) -> MemberApi:
        """The member API's affiliation items, faults and rate limit (emulator_member_api.py)."""
        return member_api_for(self)

    def _member_api(self, request: Request) -> Response:
        return self.member_api(request)

    def _api(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")  # v3.0 / {orcid} / section...
        try:
            orcid = OrcidId.parse(parts[1]).value if len(parts) > 1 else ""
        except InvalidOrcidId:
            orcid = ""
        if len(parts) != 3 or not orcid or parts[1] != orcid or parts[2] not in ("record", "person"):
            return self._api_error(404, 9016, f"404 Not Found: The resource was not found. Full validation error: {request.path}",
                                   "The resource was not found.")
        media = self._api_media_type(request)
        self._api_token(request, orcid)
        account = self.accounts.get(orcid)
        if account is None:
            return self._api_error(404, 9016, f"404 Not Found: The resource was not found. Full validation error: No record {orcid}",
                                   "The resource was not found.")
        person = self._person(account)
        if parts[2] == "person":
            return _json(person, content_type=f"{media};charset=UTF-8")
        record = {
            "orcid-identifier": {"uri": f"https://{RECORD_HOST}/{orcid}", "path": orcid, "host": RECORD_HOST},
            "person": person,
            "activities-summary": {"path": f"/{orcid}/activities", "employments": {"path": f"/{orcid}/employments", "affiliation-group": []}},
            "path": f"/{orcid}",
        }
        return _json(record, content_type=f"{media};charset=UTF-8")

    @staticmethod
    def _person(account: DemoAccount) -> dict[str, Any]:
        orcid = account.orcid
        name = None
        if account.names_public:
            name = {
                "given-names": {"value": account.given_name},
                "family-name": {"value": account.family_name},
                "credit-name": {"value": account.credit_name} if account.credit_name else None,
                "visibility": "public",
                "path": orcid,
            }
        return {"name": name, "emails": {"email": [], "path": f"/{orcid}/email"}, "path": f"/{orcid}/person"}

    # ---- test control ----
    def _admin(self, request: Request, path: str) -> Response:
        route = (request.method, path)
        if route == ("GET", "/_emulator/health"):
            return _json({"status": "ok", "issuer": self.issuer, "kid": self.kid})
        if path == "/_emulator/faults":
            if request.method == "GET":
                return _json(self.faults.as_list())
            if request.method == "DELETE":
                self.faults.clear()
                return _json([])
            if request.method == "POST":
                try:
                    data = json.loads(request.get_data(as_text=True) or "[]")
                    rules = data.get("rules", []) if isinstance(data, dict) else data
                    if not isinstance(rules, list):
                        raise ValueError("send a list of fault rules (or {\"rules\": [...]})")
                    self.faults.replace(rules)
                except ValueError as exc:  # includes JSONDecodeError
                    return _json({"error": "invalid_fault", "error_description": str(exc)}, 400)
                return _json(self.faults.as_list())
        if path == "/_emulator/requests":
            with self._lock:
                if request.method == "DELETE":
                    self.requests.clear()
                return _json([r.as_dict() for r in self.requests])
        if route == ("POST", "/_emulator/revoke"):
            try:
                data = json.loads(request.get_data(as_text=True) or "{}")
                count = self.revoke_user_tokens(data["orcid"], data.get("client_id"))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                return _json({"error": "invalid_request", "error_description": f"send {{\"orcid\": ...}}: {exc}"}, 400)
            return _json({"revoked": count})
        if route == ("GET", "/_emulator/connect"):
            try:
                url = self.institutional_connect_url(request.args["client_id"], request.args.get("orcid"))
            except (KeyError, ValueError) as exc:
                return _json({"error": "invalid_request", "error_description": str(exc)}, 400)
            return Response("", 302, headers={"Location": url})
        return _json({"error": "not_found"}, 404)


# --- serving -------------------------------------------------------------------------
class _Handler(WSGIRequestHandler):
    """werkzeug's handler, quiet, and closing the socket when the app drops a connection."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def connection_dropped(self, error: BaseException, environ: Any = None) -> None:
        self.close_connection = True


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the ORCID emulator only serves on loopback, not on {host!r}")


def serve_in_thread(app: Callable, host: str = "127.0.0.1", port: int = 0) -> RunningServer:
    """Serve ``app`` over real HTTP on loopback in a daemon thread (port 0: pick a free one)."""
    _check_loopback(host)
    server = make_server(host, port, app, threaded=True, request_handler=_Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"orcid-emulator-{server.port}", daemon=True)
    thread.start()
    shown = f"[{host}]" if ":" in host else host
    return RunningServer(host, server.port, f"http://{shown}:{server.port}", server, thread)


CLIENT_FIELDS = ("client_id", "client_secret", "redirect_uris", "connect_redirect_uri", "member", "name")
#: the client ``satosa-orcid emulator`` registers when given no ``--clients`` (local use only)
LOCAL_CLIENT_ID = "APP-LOCAL00000000001"
LOCAL_CLIENT_SECRET = "local-emulator-secret"


def parse_clients(raw: str) -> list[ClientRegistration]:
    """Client registrations from JSON (a list of objects with :data:`CLIENT_FIELDS`); raises
    ValueError with one line naming what is wrong.

    >>> parse_clients('[{"client_id": "APP-1", "client_secret": "s", "redirect_uris": ["https://p/orcid/callback"]}]')[0].member
    True
    >>> parse_clients('[{"client_id": "APP-1", "redirect_uri": "x"}]')
    Traceback (most recent call last):
    ValueError: client #1: unknown field 'redirect_uri' (fields: client_id, client_secret, redirect_uris, connect_redirect_uri, member, name)
    """
    try:
        items = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(items, list) or not items:
        raise ValueError("must be a non-empty JSON list of client objects")
    clients = []
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ValueError(f"client #{i}: must be a JSON object")
        unknown = sorted(set(item) - set(CLIENT_FIELDS))
        if unknown:
            raise ValueError(f"client #{i}: unknown field {unknown[0]!r} (fields: {', '.join(CLIENT_FIELDS)})")
        for required in ("client_id", "client_secret"):
            if not isinstance(item.get(required), str) or not item[required]:
                raise ValueError(f"client #{i}: {required} is required (a string)")
        uris = item.get("redirect_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) and u for u in uris):
            raise ValueError(f"client #{i}: redirect_uris is required (a list of URLs)")
        clients.append(ClientRegistration(**item))
    return clients


def local_client(proxy_base: str, name: str = "orcid") -> ClientRegistration:
    """The client for local use: the plugin named ``name`` behind the proxy at ``proxy_base``
    (its ``<base>/<name>/callback`` and Institutional Connect ``<base>/<name>/connect``)."""
    base = proxy_base.rstrip("/")
    return ClientRegistration(LOCAL_CLIENT_ID, LOCAL_CLIENT_SECRET, [f"{base}/{name}/callback"],
                              member=True, name="Local Institution", connect_redirect_uri=f"{base}/{name}/connect")


def make_app_from_env() -> Emulator:
    """Build the emulator from the environment (for gunicorn and ``satosa-orcid emulator``).

    ``ORCID_EMULATOR_ISSUER`` (default ``http://127.0.0.1:8090``), ``ORCID_EMULATOR_CLIENTS``
    (JSON list of ClientRegistration objects, required), optional ``ORCID_EMULATOR_SIGNING_KEY``
    (path to a PEM RSA key, so restarts keep the kid) and ``ORCID_EMULATOR_CODE_TTL`` (seconds).
    ``ORCID_EMULATOR_SAML_*`` mount ORCID's SAML SP (see ``emulator_saml_sp.mount_from_env``).
    Run a single worker process: the state is in memory.
    """
    issuer = os.environ.get("ORCID_EMULATOR_ISSUER", "http://127.0.0.1:8090")
    raw = os.environ.get("ORCID_EMULATOR_CLIENTS")
    if not raw:
        raise RuntimeError('ORCID_EMULATOR_CLIENTS is not set: give a JSON list like [{"client_id": "APP-...", '
                           '"client_secret": "...", "redirect_uris": ["http://127.0.0.1:8000/orcid/callback"]}]')
    try:
        clients = parse_clients(raw)
    except ValueError as exc:
        raise RuntimeError(f"ORCID_EMULATOR_CLIENTS: {exc}") from None
    key = None
    key_path = os.environ.get("ORCID_EMULATOR_SIGNING_KEY")
    if key_path:
        with open(key_path, "rb") as fh:
            key = fh.read()
    code_ttl = int(os.environ.get("ORCID_EMULATOR_CODE_TTL", "600"))
    app = Emulator(issuer, clients, code_ttl=code_ttl, signing_key=key)
    from .emulator_saml_sp import mount_from_env  # ORCID_EMULATOR_SAML_*: ORCID's SAML SP

    mount_from_env(app)
    return app
