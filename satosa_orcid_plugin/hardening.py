"""Defences that sit around the plugin rather than in it.

* :func:`estimate_state_cookie`: how big SATOSA's state cookie gets during an ORCID hop.
  The hop parks the whole login (:class:`InternalData` with every attribute) in that cookie;
  browsers drop cookies over 4096 bytes, and a dropped cookie is a login that can't finish.
  Both ``check-config`` and the proxy's start-up warn above :data:`STATE_COOKIE_WARN_BYTES`.
* :class:`RequestGuard`: a WSGI middleware in front of SATOSA's app (the image's
  ``satosa_orcid_plugin.wsgi:app``) that limits request bodies (small for the plugin's own
  endpoints) and rejects the inputs SATOSA itself fails on *before* routing (a body that is not
  UTF-8, an ``application/json`` body that is not JSON, a POST without ``Content-Type``, a bad
  ``Content-Length``): without it those end as 500s in SATOSA, not in the plugin.
"""
from __future__ import annotations

import json
import logging
import os
import random
import string
import time
from io import BytesIO
from typing import Any, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

STATE_COOKIE_WARN_BYTES = 3584  # 3.5 KB; browsers keep at most 4096 bytes per cookie
PLUGIN_MAX_BODY = 16 * 1024  # the interstitial's and confirmation's forms are a few hundred bytes
DEFAULT_MAX_BODY = 1024 * 1024  # SAML responses with many attributes stay far below this
MAX_QUERY = 8 * 1024
MAX_BODY_ENV = "SATOSA_ORCID_MAX_BODY"

# A typical institutional login: what a SAML IdP in a research federation releases.
TYPICAL_ATTRIBUTES: dict[str, int] = {
    "edupersonprincipalname": 1,
    "edupersonuniqueid": 1,
    "edupersontargetedid": 1,
    "givenname": 1,
    "surname": 1,
    "displayname": 1,
    "mail": 1,
    "edupersonaffiliation": 3,
    "edupersonscopedaffiliation": 3,
    "edupersonentitlement": 3,
    "schachomeorganization": 1,
    "ou": 1,
    "title": 1,
}
_SAML_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def typical_internal_data(attributes: Mapping[str, int] | Iterable[str] | None = None) -> Any:
    """An :class:`InternalData` shaped like a real login: ``attributes`` maps internal attribute
    names to how many values they carry (an iterable means one value each). Values are random
    text (it compresses worse than real names and mails, so the estimate errs on the big side)."""
    from satosa.internal import AuthenticationInformation, InternalData

    if attributes is None:
        attributes = TYPICAL_ATTRIBUTES
    if not isinstance(attributes, Mapping):
        attributes = {name: 1 for name in attributes}
    rng = random.Random(4096)
    scope = "university.example.org"
    values = {
        name: [f"{_text(rng, 14)}@{scope}" if "principal" in name or "mail" in name or "scoped" in name
               else _text(rng, 22) for _ in range(max(1, int(count)))]
        for name, count in attributes.items()
    }
    return InternalData(
        auth_info=AuthenticationInformation(
            "urn:oasis:names:tc:SAML:2.0:ac:classes:PasswordProtectedTransport", "2026-01-01T12:00:00Z",
            f"https://idp.{scope}/idp/shibboleth",
        ),
        requester="https://research-service.example.org/shibboleth",
        requester_name=[{"lang": "en", "text": "Example research service"}],
        subject_id=_text(rng, 44),
        subject_type=_PERSISTENT,
        attributes=values,
    )


def typical_state(plugin_name: str, flow: Any, *, frontend: str = "Saml2IDP", backend: str = "Saml2",
                  openid: bool = True, flow_ttl: int = 1800) -> Any:
    """A SATOSA :class:`State` as it stands while the researcher is at ORCID."""
    import secrets

    from satosa.state import State

    requester = flow.requester or "https://research-service.example.org/shibboleth"
    state = State()
    state["SESSION_ID"] = f"urn:uuid:{secrets.token_hex(16)}"
    state["ROUTER"] = frontend
    state["SATOSA_BASE"] = {"requester": requester}
    state[frontend] = {
        "resp_args": {
            "in_response_to": f"_{secrets.token_hex(16)}",
            "sp_entity_id": requester,
            "name_id_policy": (f'<ns0:NameIDPolicy xmlns:ns0="urn:oasis:names:tc:SAML:2.0:protocol" '
                               f'Format="{_PERSISTENT}" AllowCreate="true" />'),
            "binding": _SAML_POST,
            "destination": "https://research-service.example.org/Shibboleth.sso/SAML2/POST",
        },
        "relay_state": f"ss:mem:{secrets.token_hex(32)}",
    }
    state[backend] = {"relay_state": secrets.token_urlsafe(24)}
    state[plugin_name] = {
        "v": 1, "kind": "hop", "state": secrets.token_urlsafe(24), "exp": int(time.time()) + flow_ttl,
        "nonce": secrets.token_urlsafe(24) if openid else None, "flow": flow.to_dict(),
        "user": (flow.attributes.get("edupersonprincipalname") or ["u@example.org"])[0], "mode": "ask", "lang": "en",
    }
    return state


def estimate_state_cookie(plugin_name: str = "orcid", *, attributes: Mapping[str, int] | Iterable[str] | None = None,
                          cookie_name: str = "SATOSA_STATE", frontend: str = "Saml2IDP", backend: str = "Saml2",
                          openid: bool = True, encryption_key: str = "estimate-only-key-estimate-only-key") -> int:
    """Bytes of the ``Set-Cookie`` value SATOSA sends while a typical login is at ORCID
    (built with SATOSA's own ``state_to_cookie``: JSON, compressed, encrypted, base64)."""
    from satosa.state import state_to_cookie

    state = typical_state(plugin_name, typical_internal_data(attributes), frontend=frontend, backend=backend,
                          openid=openid)
    cookie = state_to_cookie(state, name=cookie_name, path="/", encryption_key=encryption_key, secure=True,
                             httponly=True, samesite="None")
    return len(cookie.output(header="").strip())


def state_cookie_warning(size: int, where: str = "") -> str | None:
    if size <= STATE_COOKIE_WARN_BYTES:
        return None
    return (f"{where}the SATOSA state cookie of a typical login with an ORCID hop is about {size} bytes "
            f"(over {STATE_COOKIE_WARN_BYTES}; browsers drop cookies over 4096 bytes and the login cannot "
            "finish): release fewer or shorter attributes to the proxy")


def warn_at_startup(plugin_name: str, config: Any) -> int | None:
    """Log the start-up warning when the state cookie would be too big; returns the estimate."""
    try:
        attrs = dict(TYPICAL_ATTRIBUTES)
        for name in (config.user_key_attribute, *config.prefill.values()):
            attrs.setdefault(name, 1)
        size = estimate_state_cookie(plugin_name, attributes=attrs, openid=config.orcid.openid)
    except Exception as exc:  # noqa: BLE001 - an estimate must never stop the proxy
        log.debug("state cookie estimate failed: %s", exc)
        return None
    message = state_cookie_warning(size)
    if message:
        log.warning(message)
    else:
        log.debug("state cookie during an ORCID hop: about %d bytes", size)
    return size


def check_config_warnings(conf: Mapping[str, Any], attrs: Mapping[str, Any], frontends: list, backends: list,
                          plugins: list) -> list[str]:
    """``check-config``: the state cookie estimate for this proxy's own attribute map, frontend
    and backend names; and cookie settings browsers would refuse."""
    from .config import parse_config

    warnings = []
    counts = {name: (3 if "affiliation" in name or "entitlement" in name else 1) for name in attrs}
    frontend = next((str(f.get("name")) for f in frontends if "saml" in str(f.get("module", "")).lower()),
                    str(frontends[0].get("name")) if frontends else "Saml2IDP")
    backend = str(backends[0].get("name")) if backends else "Saml2"
    for entry in plugins:
        name = str(entry.get("name") or "orcid")
        try:
            openid = parse_config(entry.get("config")).orcid.openid
            size = estimate_state_cookie(name, attributes=counts or None, openid=openid, frontend=frontend,
                                         backend=backend, cookie_name=str(conf.get("COOKIE_STATE_NAME") or "SATOSA_STATE"))
        except Exception:  # noqa: BLE001 - config problems are reported elsewhere
            continue
        message = state_cookie_warning(size, f"MICRO_SERVICES[{name}]: ")
        if message:
            warnings.append(message)
    if str(conf.get("COOKIE_SAMESITE", "")).lower() == "none" and conf.get("COOKIE_SECURE", True) is not True:
        warnings.append("COOKIE_SAMESITE: None needs COOKIE_SECURE: true (browsers drop such cookies otherwise)")
    return warnings


# --- request limits ------------------------------------------------------------------------
class RequestGuard:
    """WSGI middleware: body and query limits, and the inputs SATOSA fails on before routing.

    ``plugin_prefixes`` are the micro-service names (``orcid``): their endpoints accept at most
    ``plugin_max_body`` bytes; everything else ``max_body`` (SAML responses, OIDC requests).
    """

    def __init__(self, app: Callable, *, plugin_prefixes: Iterable[str] = ("orcid",),
                 plugin_max_body: int = PLUGIN_MAX_BODY, max_body: int | None = None, max_query: int = MAX_QUERY,
                 state_cookie: str = "SATOSA_STATE") -> None:
        self.app = app
        self.state_cookie = state_cookie
        self.prefixes = frozenset(p.strip("/") for p in plugin_prefixes)
        self.plugin_max_body = plugin_max_body
        self.max_body = max_body if max_body is not None else int(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY))
        self.max_query = max_query

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        problem = self._check(environ)
        if problem is not None:
            status, message = problem
            body = f"{message}\n".encode()
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                                    ("Cache-Control", "no-store")])
            return [body]
        self._drop_empty_state_cookie(environ)
        return self.app(environ, start_response)

    def _drop_empty_state_cookie(self, environ: dict) -> None:
        """SATOSA 8.6 fails with a 500 on an *empty* state cookie (``SATOSA_STATE=``) on every
        endpoint; without it SATOSA starts a fresh state, as for no cookie at all."""
        header = environ.get("HTTP_COOKIE")
        if not header or self.state_cookie not in header:
            return
        from http.cookies import CookieError, SimpleCookie

        try:
            morsel = SimpleCookie(header).get(self.state_cookie)
        except CookieError:
            morsel = None
        if morsel is not None and morsel.value == "":
            parts = [p for p in header.split(";") if p.partition("=")[0].strip() != self.state_cookie]
            environ["HTTP_COOKIE"] = ";".join(parts)

    def _check(self, environ: dict) -> tuple[str, str] | None:
        raw = str(environ.get("CONTENT_LENGTH") or "").strip()
        if raw and not raw.isdigit():
            return "400 Bad Request", "Bad Request: invalid Content-Length"
        length = int(raw or 0)
        first = str(environ.get("PATH_INFO") or "").lstrip("/").split("/", 1)[0]
        limit = self.plugin_max_body if first in self.prefixes else self.max_body
        if length > limit:
            return "413 Content Too Large", "Request body too large"
        if len(environ.get("QUERY_STRING") or "") > self.max_query:
            return "414 URI Too Long", "Request URI too long"
        if str(environ.get("REQUEST_METHOD") or "").upper() == "POST":
            environ.setdefault("CONTENT_TYPE", "")  # SATOSA reads environ["CONTENT_TYPE"] unguarded
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return "400 Bad Request", "Bad Request: the body is not UTF-8"
            if "application/json" in str(environ.get("CONTENT_TYPE")):
                try:
                    json.loads(text)
                except ValueError:
                    return "400 Bad Request", "Bad Request: the body is not JSON"
        return None


def plugin_names(satosa_config: Mapping[str, Any]) -> list[str]:
    """Names of the OrcidConnect entries of a loaded SATOSA config (their URL prefixes)."""
    from .config_files import PLUGIN_MODULES

    names = []
    for entry in satosa_config.get("MICRO_SERVICES") or []:
        if isinstance(entry, Mapping) and entry.get("module") in PLUGIN_MODULES:
            names.append(str(entry.get("name") or "orcid"))
    return names or ["orcid"]


__all__ = [
    "STATE_COOKIE_WARN_BYTES", "estimate_state_cookie", "check_config_warnings", "state_cookie_warning", "warn_at_startup",
    "typical_internal_data", "typical_state", "RequestGuard", "plugin_names",
]
