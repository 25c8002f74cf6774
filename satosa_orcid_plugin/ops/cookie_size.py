"""How big SATOSA's state cookie gets during an ORCID hop, and the warnings about it.

The hop parks the whole login (:class:`InternalData` with every attribute) in SATOSA's state
cookie (``satosa/state.py``: ``state_to_cookie``); browsers drop cookies over 4096 bytes
(RFC 6265 section 6.1), and a dropped cookie is a login that can't finish. Both
``check-config`` (:func:`check_config_warnings`) and the proxy's start-up
(:func:`warn_at_startup`, called by ``OrcidConnect.__init__``) warn above
:data:`STATE_COOKIE_WARN_BYTES`.
"""
from __future__ import annotations

import logging
import random
import string
from typing import Any, Iterable, Mapping

from ..config import parse_config
from ..flow import FlowKind, FlowRecord

log = logging.getLogger(__name__)

STATE_COOKIE_WARN_BYTES = 3584  # 3.5 KB; browsers keep at most 4096 bytes per cookie

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
    state[backend] = {"relay_state": secrets.token_urlsafe(24), "in_response_to": f"id-{secrets.token_urlsafe(13)}"}
    state[plugin_name] = FlowRecord.new(
        FlowKind.HOP, state=secrets.token_urlsafe(24), ttl=flow_ttl,
        nonce=secrets.token_urlsafe(24) if openid else None, login=flow.to_dict(),
        user=(flow.attributes.get("edupersonprincipalname") or ["u@example.org"])[0], mode="ask", lang="en",
        issuer=flow.auth_info.issuer,
    ).to_dict()
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


__all__ = [
    "STATE_COOKIE_WARN_BYTES", "estimate_state_cookie", "check_config_warnings", "state_cookie_warning", "warn_at_startup",
    "typical_internal_data", "typical_state",
]
