"""How big SATOSA's state cookie gets during an ORCID hop, and the warnings about it.

SATOSA keeps its whole flow in one encrypted cookie (``satosa/state.py``:
``state_to_cookie``); browsers drop cookies over 4096 bytes (RFC 6265 section 6.1), and a
dropped cookie is a login that cannot finish. The hop parks the login (every attribute) in
the store, so the plugin adds only a ticket of constant size (:func:`plugin_share`, under 300
bytes); what remains is SATOSA's own state (the frontend's request, the SP's RelayState, other
micro-services' entries). ``check-config`` (:func:`check_config_warnings`, with a worst-case
:data:`WORST_CASE_SAMPLE` or the operator's own sample) and the proxy's start-up
(:func:`warn_at_startup`) warn above :data:`STATE_COOKIE_WARN_BYTES`; a hop whose real state
would exceed the browser limit is logged with its size (:func:`state_cookie_bytes`).
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
BROWSER_COOKIE_LIMIT = 4096     # RFC 6265 section 6.1: name, value and attributes
# Below this much JSON the cookie cannot reach the limit (lzma, AES and base64 add at most
# about 4/3 + 300 bytes), so the hop skips the exact (and costly: two lzma passes) measure.
_JSON_SURELY_SMALL = 2600

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
# check-config's default worst case: a long group list (the 200 x 46-character entitlements a
# university may release) and the longest RelayState the SAML bindings allow (80 bytes,
# saml-bindings-2.0-os section 3.4.3; many SPs send more). ``check-config --cookie-sample FILE``
# replaces it: YAML with ``attributes`` (name: number of values), ``value_length``,
# ``relay_state_bytes``, ``requester`` and ``extra_state`` (entries other micro-services keep).
WORST_CASE_SAMPLE: dict[str, Any] = {
    "attributes": {"edupersonentitlement": 200, "ismemberof": 50, "edupersonaffiliation": 5,
                   "edupersonscopedaffiliation": 5},
    "value_length": 46,
    "relay_state_bytes": 80,
}
_SAML_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
_PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"


def _text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def typical_internal_data(attributes: Mapping[str, int] | Iterable[str] | None = None, value_length: int = 22) -> Any:
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
               else _text(rng, value_length) for _ in range(max(1, int(count)))]
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
                  openid: bool = True, flow_ttl: int = 1800, relay_state_bytes: int = 71,
                  extra_state: Mapping[str, Any] | None = None) -> Any:
    """A SATOSA :class:`State` as it stands while the researcher is at ORCID: SATOSA's own
    entries and the plugin's ticket (``flow``, the login, is parked in the store)."""
    import secrets

    from satosa.state import State

    from ..flow import Ticket

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
        "relay_state": _text(random.Random(80), max(0, relay_state_bytes)),
    }
    state[backend] = {"relay_state": secrets.token_urlsafe(24), "in_response_to": f"id-{secrets.token_urlsafe(13)}"}
    record = FlowRecord.new(
        FlowKind.HOP, state=secrets.token_urlsafe(24), ttl=flow_ttl,
        nonce=secrets.token_urlsafe(24) if openid else None, login=flow.to_dict(),
        user=(flow.attributes.get("edupersonprincipalname") or ["u@example.org"])[0], mode="ask", lang="en",
        form=secrets.token_urlsafe(24),
        issuer=flow.auth_info.issuer,
    )
    state[plugin_name] = Ticket.of(record, secrets.token_urlsafe(24)).to_dict()
    # what the request hint (microservice.OrcidRequestHint, HINT_STATE_KEY) keeps for the pages
    state["ORCID_HINT"] = {"requested": True, "name": "Example research service",
                           "url": "https://research-service.example.org/"}
    for key, value in (extra_state or {}).items():
        state[str(key)] = value
    return state


def _cookie_bytes(state: Any, cookie_name: str, encryption_key: str = "size-estimate-only-key") -> int:
    from satosa.state import state_to_cookie

    cookie = state_to_cookie(state, name=cookie_name, path="/", encryption_key=encryption_key, secure=True,
                             httponly=True, samesite="None")
    return len(cookie.output(header="").strip())


def plugin_share(state: Any, plugin_name: str, cookie_name: str = "SATOSA_STATE") -> int:
    """Bytes the plugin's entry adds to SATOSA's ``Set-Cookie`` header (with minus without it)."""
    without = state.copy()
    without.data.pop(plugin_name, None)
    return _cookie_bytes(state, cookie_name) - _cookie_bytes(without, cookie_name)


def estimate_state_cookie(plugin_name: str = "orcid", *, attributes: Mapping[str, int] | Iterable[str] | None = None,
                          cookie_name: str = "SATOSA_STATE", frontend: str = "Saml2IDP", backend: str = "Saml2",
                          openid: bool = True, sample: Mapping[str, Any] | None = None) -> int:
    """Bytes of the ``Set-Cookie`` value SATOSA sends while a login is at ORCID (built with
    SATOSA's own ``state_to_cookie``: JSON, compressed, encrypted, base64); ``sample`` (see
    :data:`WORST_CASE_SAMPLE`) overrides the login's shape."""
    sample = dict(sample or {})
    data = typical_internal_data(sample.get("attributes", attributes), int(sample.get("value_length", 22)))
    if sample.get("requester"):
        data.requester = str(sample["requester"])
    state = typical_state(plugin_name, data, frontend=frontend, backend=backend, openid=openid,
                          relay_state_bytes=int(sample.get("relay_state_bytes", 71)),
                          extra_state=sample.get("extra_state"))
    return _cookie_bytes(state, cookie_name)


def state_cookie_bytes(state: Any, cookie_name: str = "SATOSA_STATE") -> int | None:
    """Bytes of the ``Set-Cookie`` header SATOSA will send for ``state`` (a ``State``), or None
    when it is surely under :data:`BROWSER_COOKIE_LIMIT` (cheap check) or cannot be measured.
    The size does not depend on the key (AES-CBC with a random IV), so a fixed one is used."""
    try:
        import json

        from satosa.state import state_to_cookie

        if len(json.dumps(getattr(state, "data", state))) < _JSON_SURELY_SMALL:
            return None
        cookie = state_to_cookie(state, name=cookie_name, path="/", encryption_key="size-estimate-only-key",
                                 secure=True, httponly=True, samesite="None")
        return len(cookie.output(header="").strip())
    except Exception as exc:  # noqa: BLE001 - a measure must never fail a login
        log.debug("state cookie size not measured: %s", exc)
        return None


def state_cookie_warning(size: int, where: str = "") -> str | None:
    if size <= STATE_COOKIE_WARN_BYTES:
        return None
    return (f"{where}the SATOSA state cookie of a login with an ORCID hop is about {size} bytes "
            f"(over {STATE_COOKIE_WARN_BYTES}; browsers drop cookies over {BROWSER_COOKIE_LIMIT} bytes and the login "
            "cannot finish): the ORCID plugin keeps only a small ticket there; look at what SATOSA's frontend and "
            "the other micro-services keep in the state (RelayState, requests)")


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
                          plugins: list, sample: Mapping[str, Any] | None = None) -> list[str]:
    """``check-config``: the state cookie estimate for this proxy's attribute map, frontend and
    backend names, in the worst case of ``sample`` (default :data:`WORST_CASE_SAMPLE`); and
    cookie settings browsers would refuse."""
    warnings = []
    sample = dict(WORST_CASE_SAMPLE if sample is None else sample)
    counts = {name: 1 for name in attrs}
    counts.update({str(k): int(v) for k, v in (sample.get("attributes") or {}).items()})
    sample["attributes"] = counts
    frontend = next((str(f.get("name")) for f in frontends if "saml" in str(f.get("module", "")).lower()),
                    str(frontends[0].get("name")) if frontends else "Saml2IDP")
    backend = str(backends[0].get("name")) if backends else "Saml2"
    for entry in plugins:
        name = str(entry.get("name") or "orcid")
        try:
            openid = parse_config(entry.get("config")).orcid.openid
            size = estimate_state_cookie(name, openid=openid, frontend=frontend, backend=backend, sample=sample,
                                         cookie_name=str(conf.get("COOKIE_STATE_NAME") or "SATOSA_STATE"))
        except Exception:  # noqa: BLE001 - config problems are reported elsewhere
            continue
        message = state_cookie_warning(size, f"MICRO_SERVICES[{name}]: ")
        if message:
            warnings.append(message)
    if str(conf.get("COOKIE_SAMESITE", "")).lower() == "none" and conf.get("COOKIE_SECURE", True) is not True:
        warnings.append("COOKIE_SAMESITE: None needs COOKIE_SECURE: true (browsers drop such cookies otherwise)")
    return warnings


__all__ = [
    "STATE_COOKIE_WARN_BYTES", "BROWSER_COOKIE_LIMIT", "WORST_CASE_SAMPLE", "estimate_state_cookie", "plugin_share",
    "state_cookie_bytes", "check_config_warnings", "state_cookie_warning", "warn_at_startup",
    "typical_internal_data", "typical_state",
]
