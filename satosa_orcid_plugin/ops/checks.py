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


def check_proxy_config(path: Path) -> tuple[list[str], list[str]]:
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
            for f in frontends:
                if "openid_connect" in str(f.get("module", "")).lower():
                    scopes = ((f.get("config") or {}).get("provider") or {}).get("extra_scopes") or {}
                    claim = (orcid_attr or {}).get("openid", [None])[0]
                    if claim and not any(claim in (v or []) for v in scopes.values()):
                        warnings.append(f"FRONTEND_MODULES[{f.get('name')}].config.provider.extra_scopes: no scope "
                                        f"releases {claim!r} (add orcid: [{claim}])")
        warnings.extend(_orcid_identifier_warnings(frontends, attrs, plugins))
        warnings.extend(metadata_warnings(frontends))
        warnings.extend(check_config_warnings(conf, attrs, frontends, backends, plugins))  # state cookie size
        if conf.get("COOKIE_HTTPONLY") is not True:
            warnings.append("COOKIE_HTTPONLY: set it to true (SATOSA's default leaves the state cookie readable by scripts)")
        if conf.get("COOKIE_SECURE", True) is not True:
            warnings.append("COOKIE_SECURE: should be true in production (HTTPS)")
    return problems, warnings


def _is_saml_frontend(entry: dict[str, Any]) -> bool:
    """SATOSA's ``satosa.frontends.saml2.SAMLFrontend`` or the plugin's subclass of it."""
    return str(entry.get("module", "")).endswith("SAMLFrontend")


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
        if not _is_saml_frontend(f):
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


# RFC 2606 / RFC 6761 names: never a real deployment's.
_EXAMPLE_DOMAINS = ("example", "example.org", "example.com", "example.net", "test", "invalid", "localhost")
_EXAMPLE_NAMES = {"example university", "example organisation", "example organization"}


def _is_example(value: Any) -> bool:
    text = str(value or "").strip().lower()
    if not text:
        return False
    if text in _EXAMPLE_NAMES:
        return True
    host = text
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].rsplit("@", 1)[-1].split(":", 1)[0].strip(".")
    if host.startswith("mailto:"):
        host = host[len("mailto:"):]
    return any(host == d or host.endswith("." + d) for d in _EXAMPLE_DOMAINS)


def metadata_warnings(frontends: list[dict[str, Any]]) -> list[str]:
    """What a federation would refuse in the SAML frontend's metadata: values left at their
    examples (proxy_conf/plugins/frontends/saml2_frontend.yaml, docker/satosa.env.example), and
    a missing shibmd:Scope, mdui:UIInfo or contact."""
    out: list[str] = []
    for f in frontends:
        if not _is_saml_frontend(f):
            continue
        where = f"FRONTEND_MODULES[{f.get('name')}].config.idp_config"
        idp_config = (f.get("config") or {}).get("idp_config") or {}
        if isinstance(idp_config, dict):  # as the frontend reads it: empty optional values left out
            from .saml2_frontend import federation_idp_config

            idp_config = federation_idp_config(idp_config)
        idp = (idp_config.get("service") or {}).get("idp") or {}
        values: list[tuple[str, Any]] = []
        org = idp_config.get("organization") or {}
        values += [(f"organization.{k}", v) for k, v in org.items()] if isinstance(org, dict) else []
        for i, person in enumerate(idp_config.get("contact_person") or []):
            if isinstance(person, dict):
                emails = person.get("email_address")
                for email in emails if isinstance(emails, list) else [emails]:
                    values.append((f"contact_person[{i}].email_address ({_contact_kind(person)})", email))
        ui = idp.get("ui_info") or {}
        if isinstance(ui, dict):
            for key in ("display_name", "information_url", "privacy_statement_url"):
                values.append((f"service.idp.ui_info.{key}", ui.get(key)))
            logo = ui.get("logo")
            values.append(("service.idp.ui_info.logo", logo.get("text") if isinstance(logo, dict) else logo))
        scopes = idp.get("scope")
        for scope in scopes if isinstance(scopes, list) else [scopes]:
            values.append(("service.idp.scope", scope))
        values.append(("service.idp.error_url", idp.get("error_url")))
        for key, value in values:
            if _is_example(value):
                out.append(f"{where}.{key}: still the example value {str(value).strip()!r}; set the deployment's "
                           "own (a federation will not register example values)")
        if not scopes:
            out.append(f"{where}.service.idp.scope: no shibmd:Scope (SATOSA_SCOPE); Shibboleth SPs drop "
                       "eduPersonPrincipalName and eduPersonScopedAffiliation without it")
        if not ui:
            out.append(f"{where}.service.idp.ui_info: no mdui:UIInfo (display name, information and privacy URLs)")
        if not idp_config.get("contact_person"):
            out.append(f"{where}.contact_person: no contacts (technical, support, security)")
    return out


def _contact_kind(person: dict[str, Any]) -> str:
    """``technical``, ``support``, ... or ``security`` for a REFEDS security contact."""
    ext = person.get("extension_attributes") or {}
    if isinstance(ext, dict) and any(str(v).endswith("/contactType/security") for v in ext.values()):
        return "security"
    return str(person.get("contact_type"))
