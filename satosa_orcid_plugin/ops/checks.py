"""``satosa-orcid check-config``: load a proxy_conf.yaml as SATOSA does and list every problem."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..config import DEFAULT_ORCID_REQUESTERS, parse_config
from ..errors import ConfigError
from .cookie_size import check_config_warnings
from .discovery import PLUGIN_MODULES, load_yaml

RESERVED_STATE_KEYS = {"SATOSA_BASE", "ROUTER", "SESSION_ID", "CONSENT"}


def _module_entries(conf: Any, key: str) -> list[dict[str, Any]]:
    out = []
    for item in conf.get(key) or []:
        if isinstance(item, str):
            try:
                item = load_yaml(Path(item))
            except ConfigError:
                continue
        if isinstance(item, dict):
            out.append(item)
    return out


OUR_SAML_BACKEND = "satosa_orcid_plugin.ops.saml2_backend.SAMLBackend"


def _user_key_notes(where: str, cfg: Any, backends: list[dict[str, Any]], problems: list[str],
                    warnings: list[str], notes: list[str]) -> None:
    """How user keys are bound and checked (user_key_scope, default_issuer, scope_check)."""
    key = f"{where}.config"
    if cfg.user_key_scope == "global":
        warnings.append(f"{key}.user_key_scope: global: a link belongs to the user key alone, so any IdP behind the "
                        "proxy that asserts a user's key receives that user's ORCID iD; use it only when every IdP "
                        "shares one identifier namespace")
        notes.append(f"{key}: user keys are issuer-free ({cfg.user_key_attribute} alone)")
    else:
        notes.append(f"{key}: user keys are bound to the asserting IdP ({cfg.user_key_attribute} + IdP entity ID); "
                     + (f"links stored before that belong to default_issuer {cfg.default_issuer}" if cfg.default_issuer
                        else "links stored before that get the one IdP of the SAML backend's metadata, or set "
                             "default_issuer"))
    if not cfg.user_key_scoped:
        notes.append(f"{key}: {cfg.user_key_attribute} is not a scoped attribute: no shibmd:Scope check")
        return
    notes.append(f"{key}.scope_check: {cfg.scope_check} (the scope of {cfg.user_key_attribute} against the asserting "
                 "IdP's shibmd:Scope)")
    if cfg.scope_check == "off":
        warnings.append(f"{key}.scope_check: off: any IdP may assert {cfg.user_key_attribute} values of any scope")
    elif not any(str(b.get("module")) == OUR_SAML_BACKEND for b in backends):
        message = (f"{key}.scope_check: {cfg.scope_check} reads the IdPs' shibmd:Scope from the SAML backend's "
                   f"metadata, which needs the backend module {OUR_SAML_BACKEND}; with the configured backends no "
                   "scope is known")
        if cfg.scope_check == "enforce":
            problems.append(message + ", so every login's ORCID lookup would be refused")
        else:
            warnings.append(message)


def check_proxy_config(path: Path, notes: list[str] | None = None) -> tuple[list[str], list[str]]:
    """Problems and warnings of the proxy configuration at ``path``; ``notes`` (when given)
    receives what the configuration means where it matters for security (user keys)."""
    notes = notes if notes is not None else []
    problems: list[str] = []
    warnings: list[str] = []
    path = path.resolve()
    if not path.is_file():
        return [f"{path}: no such file"], []
    with contextlib.chdir(path.parent):  # SATOSA resolves the config's relative paths from here
        try:
            from satosa.satosa_config import SATOSAConfig

            conf = SATOSAConfig(str(path))
        except Exception as exc:  # SATOSA raises plain exceptions for config errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return [f"{path.name}: SATOSA cannot load it: {first[:300]}"], []

        attrs = (conf.get("INTERNAL_ATTRIBUTES") or {}).get("attributes", {})
        micro = _module_entries(conf, "MICRO_SERVICES")
        backends = _module_entries(conf, "BACKEND_MODULES")
        frontends = _module_entries(conf, "FRONTEND_MODULES")
        names = [m.get("name") for m in micro]
        for n in {n for n in names if names.count(n) > 1}:
            problems.append(f"MICRO_SERVICES: name {n!r} is used twice (SATOSA silently drops one's endpoints)")
        plugins = [m for m in micro if m.get("module") in PLUGIN_MODULES]
        if not plugins:
            problems.append("MICRO_SERVICES: no satosa_orcid_plugin.OrcidConnect entry")
        plugin_names = {str(b.get("name")) for b in backends + frontends}
        for m in plugins:
            name = str(m.get("name"))
            where = f"MICRO_SERVICES[{name}]"
            if name in plugin_names or name in RESERVED_STATE_KEYS:
                problems.append(f"{where}.name: {name!r} clashes with a frontend/backend or a SATOSA state key")
            try:
                cfg = parse_config(m.get("config"))
            except ConfigError as exc:
                problems.append(f"{where}.config.{exc.key}: {exc.problem}")
                continue
            orcid_attr = attrs.get(cfg.orcid_attribute)
            if orcid_attr is None:
                problems.append(f"INTERNAL_ATTRIBUTES.attributes.{cfg.orcid_attribute}: missing "
                                "(add saml: [eduPersonOrcid] and openid: [eduperson_orcid])")
            else:
                saml = orcid_attr.get("saml") or []
                if any(str(n).startswith("urn:oid:") for n in saml):
                    problems.append(f"INTERNAL_ATTRIBUTES.attributes.{cfg.orcid_attribute}.saml: use the friendly "
                                    "name eduPersonOrcid; the urn:oid form is silently dropped by SATOSA")
                elif "eduPersonOrcid" not in saml:
                    warnings.append(f"INTERNAL_ATTRIBUTES.attributes.{cfg.orcid_attribute}.saml: eduPersonOrcid not listed")
                if not orcid_attr.get("openid"):
                    warnings.append(f"INTERNAL_ATTRIBUTES.attributes.{cfg.orcid_attribute}.openid: not set, OIDC "
                                    "clients will not receive the iD (use eduperson_orcid)")
            if cfg.orcid.sandbox and not set(cfg.orcid_requesters) - set(DEFAULT_ORCID_REQUESTERS):
                problems.append(f"{where}.config.orcid_requesters: the environment is sandbox but no sandbox SAML SP "
                                "is listed; ORCID publishes no sandbox entity ID, so configure it explicitly (README: "
                                "'Institutional sign-in on the sandbox')")
            if cfg.user_key_attribute not in attrs:
                problems.append(f"{where}.config.user_key_attribute: {cfg.user_key_attribute!r} is not an internal attribute")
            _user_key_notes(where, cfg, backends, problems, warnings, notes)
            for f in frontends:
                if "openid_connect" in str(f.get("module", "")).lower():
                    scopes = ((f.get("config") or {}).get("provider") or {}).get("extra_scopes") or {}
                    claim = (orcid_attr or {}).get("openid", [None])[0]
                    if claim and not any(claim in (v or []) for v in scopes.values()):
                        warnings.append(f"FRONTEND_MODULES[{f.get('name')}].config.provider.extra_scopes: no scope "
                                        f"releases {claim!r} (add orcid: [{claim}])")
        warnings.extend(_orcid_identifier_warnings(frontends, attrs, plugins))
        warnings.extend(check_config_warnings(conf, attrs, frontends, backends, plugins))  # state cookie size
        if conf.get("COOKIE_HTTPONLY") is not True:
            warnings.append("COOKIE_HTTPONLY: set it to true (SATOSA's default leaves the state cookie readable by scripts)")
        if conf.get("COOKIE_SECURE", True) is not True:
            warnings.append("COOKIE_SECURE: should be true in production (HTTPS)")
    return problems, warnings


STABLE_SAML_IDS = {"eduPersonUniqueId", "subject-id", "eduPersonTargetedID", "pairwise-id"}
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"


def _orcid_identifier_warnings(frontends: list[dict[str, Any]], attrs: dict[str, Any],
                               plugins: list[dict[str, Any]]) -> list[str]:
    """ORCID's institutional sign-in keys accounts on a locally unique, persistent,
    non-reassignable identifier: a persistent NameID, eduPersonUniqueId or eduPersonTargetedID
    (never ePPN; a transient NameID changes every login), see "Requirements for use" at
    https://info.orcid.org/documentation/integration-guide/sign-into-orcid-with-institutional-credentials/
    (subject-id, its SAML successor, counts as stable here too)."""
    out = []
    released = {name for a in attrs.values() for name in (a.get("saml") or [])}
    for f in frontends:
        if "saml2.SAMLFrontend" not in str(f.get("module", "")):
            continue
        idp = (((f.get("config") or {}).get("idp_config") or {}).get("service") or {}).get("idp") or {}
        formats = idp.get("name_id_format") or []
        formats = [formats] if isinstance(formats, str) else formats
        if (not formats or formats[0] == TRANSIENT) and not (released & STABLE_SAML_IDS):
            out.append(
                f"FRONTEND_MODULES[{f.get('name')}].config.idp_config.service.idp.name_id_format: ORCID would "
                "receive a transient NameID and no eduPersonUniqueId/subject-id, so its institutional sign-in "
                "cannot recognise returning users; release a stable identifier to ORCID's SP "
                f"({', '.join(sorted({r for p in plugins for r in (p.get('config') or {}).get('orcid_requesters') or ['https://orcid.org/saml2/sp/1']}))})"
            )
    return out
