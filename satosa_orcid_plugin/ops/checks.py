"""``satosa-orcid check-config``: load a proxy_conf.yaml as SATOSA does and list every problem."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..config import DEFAULT_ORCID_REQUESTERS, PluginConfig, StoreSettings, parse_config
from ..errors import ConfigError, StoreError
from .cookie_size import check_config_warnings
from .discovery import PLUGIN_MODULES, load_yaml, proxy_env_problems

RESERVED_STATE_KEYS = {"SATOSA_BASE", "ROUTER", "SESSION_ID", "CONSENT"}
HINT_MODULES = ("satosa_orcid_plugin.OrcidRequestHint", "satosa_orcid_plugin.microservice.OrcidRequestHint")
STORE_PROBE_SECONDS = 2.0  # libpq's smallest connect_timeout


def plugin_startup_checks(raw_config: Any, cfg: PluginConfig,
                          internal_attributes: Any) -> tuple[list[str], list[str]]:
    """The mistakes the proxy itself refuses (problems, with their full key path) or warns
    about (warnings, key paths within the plugin's ``config:``) at start-up; ``check-config``
    reports the same."""
    problems: list[str] = []
    warnings: list[str] = []
    attrs = (internal_attributes or {}).get("attributes", {}) if isinstance(internal_attributes, dict) else {}
    orcid_attr = attrs.get(cfg.orcid_attribute) if attrs else None
    if isinstance(orcid_attr, dict) and any(str(n).startswith("urn:oid:") for n in orcid_attr.get("saml") or []):
        problems.append(f"INTERNAL_ATTRIBUTES.attributes.{cfg.orcid_attribute}.saml: use the friendly "
                        "name eduPersonOrcid; the urn:oid form is silently dropped by SATOSA")
    interstitial = (raw_config or {}).get("interstitial") if isinstance(raw_config, dict) else None
    if cfg.interstitial.enabled and not (isinstance(interstitial, dict) and interstitial.get("institution")):
        warnings.append('interstitial.institution: not set, the page before ORCID names '
                        f'"{cfg.interstitial.institution}" (set your institution\'s name)')
    return problems, warnings


def store_checks(settings: StoreSettings, *, probe: bool = True) -> tuple[list[str], list[str]]:
    """Whether the store can be opened: the SQLite file's directory can be created and
    written, the PostgreSQL driver is installed (problems); with ``probe``, whether the
    server answers within :data:`STORE_PROBE_SECONDS` and its schema is current (warnings:
    the database may be down only right now). Nothing is created."""
    import sqlalchemy as sa

    from ..store import HEAD_REVISION, Budget, Database, create_store_engine, sqlite_directory

    try:
        url = sa.make_url(settings.database_url)
    except Exception:  # noqa: BLE001 - parse_config already checked the scheme
        return ["store.database_url: not a database URL"], []
    try:
        if url.drivername.startswith("sqlite"):
            if url.database not in (None, "", ":memory:"):
                sqlite_directory(url.database, create=False)
            return [], []
        engine = create_store_engine(settings.database_url,
                                     Budget(connect=STORE_PROBE_SECONDS, call=STORE_PROBE_SECONDS))
    except ConfigError as exc:
        return [f"{exc.key}: {exc.problem}"], []
    warnings: list[str] = []
    if probe:
        db = Database(engine)
        try:
            revision = db.schema_revision()
        except StoreError as exc:
            warnings.append(f"store.database_url: the database did not answer within {STORE_PROBE_SECONDS:g}s "
                            f"({exc.message})")
        else:
            if (revision is None or revision < HEAD_REVISION) and settings.auto_upgrade is not True:
                warnings.append(f"store.database_url: the schema is {'empty' if revision is None else 'at ' + revision}"
                                f", this version needs {HEAD_REVISION}: run 'satosa-orcid db upgrade'")
    engine.dispose()
    return [], warnings


def _module_problem(module: Any, where: str) -> str | None:
    """A module path SATOSA cannot import (``pydoc.locate``, as SATOSA's plugin loader)."""
    import pydoc

    if not isinstance(module, str) or not module:
        return f"{where}.module: missing"
    try:
        found = pydoc.locate(module)
    except pydoc.ErrorDuringImport as exc:
        return f"{where}.module: importing {module!r} fails: {type(exc.value).__name__}: {exc.value}"
    if found is not None:
        return None
    hint = ""
    if module.startswith("satosa_orcid_plugin") or "orcid" in module.lower():
        hint = " (the plugin's classes are satosa_orcid_plugin.OrcidConnect and satosa_orcid_plugin.OrcidRequestHint)"
    return f"{where}.module: cannot import {module!r}{hint}"


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


def check_proxy_config(path: Path, cookie_sample: Any = None, *, probe: bool = True,
                       notes: list[str] | None = None) -> tuple[list[str], list[str]]:
    """``(problems, warnings)`` of the proxy_conf.yaml at ``path``, one line each. ``probe``:
    also try to reach the store's server (a warning when it does not answer). ``cookie_sample``
    (a mapping, see ``cookie_size.WORST_CASE_SAMPLE``) is the login the state cookie estimate
    assumes. ``notes`` (when given) receives what the configuration means where it matters for
    security (user keys)."""
    notes = notes if notes is not None else []
    problems: list[str] = []
    warnings: list[str] = []
    path = path.resolve()
    if not path.is_file():
        return [f"{path}: no such file"], []
    with contextlib.chdir(path.parent):  # SATOSA resolves the config's relative paths from here
        unresolved = proxy_env_problems(path)
        if unresolved:
            return unresolved, []
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
        import_problems = []
        with _custom_module_paths(conf):
            for key, entries in (("BACKEND_MODULES", backends), ("FRONTEND_MODULES", frontends),
                                 ("MICRO_SERVICES", micro)):
                for i, entry in enumerate(entries):
                    problem = _module_problem(entry.get("module"), f"{key}[{entry.get('name') or i}]")
                    if problem:
                        import_problems.append(problem)
        problems.extend(import_problems)
        names = [m.get("name") for m in micro]
        for n in {n for n in names if names.count(n) > 1}:
            problems.append(f"MICRO_SERVICES: name {n!r} is used twice (SATOSA silently drops one's endpoints)")
        plugins = [m for m in micro if m.get("module") in PLUGIN_MODULES]
        if not plugins and not any("orcid" in p.lower() for p in import_problems):
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
            startup_problems, startup_warnings = plugin_startup_checks(m.get("config"), cfg,
                                                                       conf.get("INTERNAL_ATTRIBUTES"))
            problems.extend(startup_problems)
            warnings.extend(f"{where}.config.{w}" for w in startup_warnings)
            store_problems, store_warnings = store_checks(cfg.store, probe=probe)
            problems.extend(f"{where}.config.{p}" for p in store_problems)
            warnings.extend(f"{where}.config.{w}" for w in store_warnings)
            orcid_attr = attrs.get(cfg.orcid_attribute)
            if orcid_attr is None:
                problems.append(f"INTERNAL_ATTRIBUTES.attributes.{cfg.orcid_attribute}: missing "
                                "(add saml: [eduPersonOrcid] and openid: [eduperson_orcid])")
            else:
                saml = orcid_attr.get("saml") or []
                if any(str(n).startswith("urn:oid:") for n in saml):
                    pass  # plugin_startup_checks named it
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
        warnings.extend(metadata_warnings(frontends))
        warnings.extend(check_config_warnings(conf, attrs, frontends, backends, plugins, cookie_sample))  # state cookie size
        if conf.get("COOKIE_HTTPONLY") is not True:
            warnings.append("COOKIE_HTTPONLY: set it to true (SATOSA's default leaves the state cookie readable by scripts)")
        if conf.get("COOKIE_SECURE", True) is not True:
            warnings.append("COOKIE_SECURE: should be true in production (HTTPS)")
    return problems, warnings


def startup_problems(path: Path) -> list[str]:
    """The subset of :func:`check_proxy_config` that stops the proxy anyway, found before
    SATOSA's loader runs (which would end each in a traceback): unset ``!ENV`` variables,
    a configuration SATOSA cannot load, module paths that do not import, and the plugin's own
    configuration and store. One line each; the store is not contacted."""
    path = path.resolve()
    if not path.is_file():
        return [f"{path}: no such file"]
    with contextlib.chdir(path.parent):
        unresolved = proxy_env_problems(path)
        if unresolved:
            return unresolved
        try:
            from satosa.satosa_config import SATOSAConfig

            conf = SATOSAConfig(str(path))
        except Exception as exc:  # noqa: BLE001 - SATOSA raises plain exceptions for config errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            return [f"{path.name}: SATOSA cannot load it: {first[:300]}"]
        problems = []
        with _custom_module_paths(conf):
            for key in ("BACKEND_MODULES", "FRONTEND_MODULES", "MICRO_SERVICES"):
                for i, entry in enumerate(_module_entries(conf, key)):
                    problem = _module_problem(entry.get("module"), f"{key}[{entry.get('name') or i}]")
                    if problem:
                        problems.append(problem)
        for m in _module_entries(conf, "MICRO_SERVICES"):
            if m.get("module") not in PLUGIN_MODULES:
                continue
            where = f"MICRO_SERVICES[{m.get('name')}]"
            try:
                cfg = parse_config(m.get("config"))
            except ConfigError as exc:
                problems.append(f"{where}.config.{exc.key}: {exc.problem}")
                continue
            problems += plugin_startup_checks(m.get("config"), cfg, conf.get("INTERNAL_ATTRIBUTES"))[0]
            problems += [f"{where}.config.{p}" for p in store_checks(cfg.store, probe=False)[0]]
        return problems


@contextlib.contextmanager
def _custom_module_paths(conf: Any):
    """SATOSA's ``CUSTOM_PLUGIN_MODULE_PATHS``, on ``sys.path`` while modules are located."""
    import sys

    extra = [str(p) for p in conf.get("CUSTOM_PLUGIN_MODULE_PATHS") or []]
    sys.path[:0] = extra
    try:
        yield
    finally:
        for p in extra:
            if p in sys.path:
                sys.path.remove(p)


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
