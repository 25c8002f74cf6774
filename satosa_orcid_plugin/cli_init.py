"""``satosa-orcid init``: add the plugin to an existing SATOSA configuration.

    satosa-orcid init --proxy-conf /etc/satosa/proxy_conf.yaml [--dry-run] [--client-id APP-...]

It edits the files as text, so the deployment's comments and layout stay as they were:

* ``MICRO_SERVICES`` of proxy_conf.yaml gets the request hint (optional, ``--no-hint``) and the
  ORCID hop, before the first consent or attribute-filter service (those must see
  eduPersonOrcid), else at the end;
* ``plugins/microservices/<name>.yaml`` (and ``<name>_hint.yaml``) are written with ``!ENV``
  placeholders for everything secret or deployment-specific;
* ``internal_attributes.yaml`` gets ``edupersonorcid`` (SAML friendly name ``eduPersonOrcid``,
  OIDC claim ``eduperson_orcid``);
* an env file (mode 0600) gets the variables those placeholders read, with freshly generated
  token keys (``$ORCID_CLIENT_ID``/``$ORCID_CLIENT_SECRET`` are taken from the environment
  when set).

Nothing that exists is changed: a second run finds everything in place and writes nothing.
``--dry-run`` prints the unified diff instead (generated secrets masked). Then it prints the
redirect URIs to register with ORCID and runs ``check-config``.
"""
from __future__ import annotations

import difflib
import os
import re
import textwrap
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import click
import yaml

from .cli_base import fail, report_check
from .ops.checks import OUR_SAML_BACKEND

ORCID_MODULE = "satosa_orcid_plugin.OrcidConnect"
HINT_MODULE = "satosa_orcid_plugin.OrcidRequestHint"
ORCID_MODULES = (ORCID_MODULE, "satosa_orcid_plugin.microservice.OrcidConnect")
HINT_MODULES = (HINT_MODULE, "satosa_orcid_plugin.microservice.OrcidRequestHint")
# Services that must see eduPersonOrcid: the hop goes before the first of them.
_BEFORE = re.compile(r"consent|filter|attribute_policy|attribute_authorization|attributepolicy", re.IGNORECASE)
USER_KEY_CANDIDATES = ("edupersonprincipalname", "edupersonuniqueid", "subject-id", "subjectid", "uid")
ENVIRONMENTS = ("production", "sandbox", "emulator")
ENV_FILE_NAME = "satosa-orcid.env"
SECRET_KEYS = ("SATOSA_ORCID_TOKEN_KEYS", "ORCID_CLIENT_SECRET")


class InitError(Exception):
    """``init`` cannot edit this configuration safely; the message says what to do instead."""


@dataclass
class Change:
    path: Path
    old: str | None  # None: a new file
    new: str
    mode: int = 0o644
    masked: dict[str, str] = field(default_factory=dict)  # secret -> what the diff shows

    def diff(self, base: Path) -> str:
        def show(text: str) -> list[str]:
            for secret, label in self.masked.items():
                text = text.replace(secret, label)
            return text.splitlines(keepends=True)

        try:
            name = str(self.path.relative_to(base))
        except ValueError:
            name = str(self.path)
        return "".join(difflib.unified_diff(show(self.old or ""), show(self.new),
                                            "/dev/null" if self.old is None else f"a/{name}", f"b/{name}"))


@dataclass
class Plan:
    changes: list[Change]
    env_file: Path
    env: dict[str, str]            # the env file's variables after the changes
    base: str                      # BASE as far as it is known (else ${VAR})
    name: str


# --- reading YAML without resolving !ENV -------------------------------------------------
class _Loader(yaml.SafeLoader):
    pass


def _placeholder(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    return "${%s}" % loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("!ENV", _placeholder)
_Loader.add_constructor("!ENVFILE", _placeholder)


def _load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InitError(f"{path}: cannot be read: {exc.strerror or exc}") from None


# --- MICRO_SERVICES ------------------------------------------------------------------------
_TOP_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:(.*)$")


def _top_level_block(lines: list[str], key: str) -> tuple[int, int] | None:
    """(index of ``KEY:``, index after its block) for a top-level key, or None."""
    for i, line in enumerate(lines):
        m = _TOP_KEY.match(line)
        if m and m.group(1) == key:
            end = i + 1
            while end < len(lines) and (not lines[end].strip() or lines[end][:1] in (" ", "\t", "#", "-")):
                end += 1
            # trailing blank/comment lines belong to what follows
            while end > i + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")):
                end -= 1
            return i, end
    return None


def _items(lines: list[str], start: int, end: int) -> list[tuple[int, int, str]]:
    """The block sequence items between ``start`` and ``end``: (first line, end line, text)."""
    heads = [i for i in range(start, end) if re.match(r"^\s*- ", lines[i]) or lines[i].strip() == "-"]
    if not heads:
        return []
    indent = len(lines[heads[0]]) - len(lines[heads[0]].lstrip())
    heads = [i for i in heads if len(lines[i]) - len(lines[i].lstrip()) == indent]
    out = []
    for n, head in enumerate(heads):
        stop = heads[n + 1] if n + 1 < len(heads) else end
        out.append((head, stop, "".join(lines[head:stop])))
    return out


def _item_module(text: str, conf_dir: Path) -> str | None:
    try:
        value = _load(text)
    except yaml.YAMLError:
        return None
    value = value[0] if isinstance(value, list) and value else value
    if isinstance(value, str):
        path = Path(value) if Path(value).is_absolute() else conf_dir / value
        try:
            value = _load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return None
    return str(value.get("module")) if isinstance(value, dict) else None


def _micro_services(text: str, conf_dir: Path, entries: list[tuple[str, tuple[str, ...]]],
                    comment: str) -> tuple[str, dict[str, str]]:
    """proxy_conf.yaml with ``entries`` ((path, its modules)) added to MICRO_SERVICES (those
    whose module is already listed are skipped), and {module: item} of what was already there."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    block = _top_level_block(lines, "MICRO_SERVICES")
    present: dict[str, str] = {}
    if block is None:
        new_items = [f"  - {path}\n" for path, _ in entries]
        return "".join(lines) + f"\n{comment}MICRO_SERVICES:\n" + "".join(new_items), present
    start, end = block
    rest = _TOP_KEY.match(lines[start]).group(2).split("#", 1)[0].strip()  # type: ignore[union-attr]
    items = _items(lines, start + 1, end)
    if rest not in ("", "[]"):
        raise InitError("proxy_conf.yaml: MICRO_SERVICES is written as a flow list; write it as a block list "
                        "(one '- item' per line) or add the plugin's entries by hand")
    indent = "  "
    insert_at = end
    for head, stop, item_text in items:
        indent = lines[head][: len(lines[head]) - len(lines[head].lstrip())]
        module = _item_module(textwrap.dedent(item_text), conf_dir)
        if module in ORCID_MODULES + HINT_MODULES:
            present[module] = item_text.strip()[2:].strip()
        elif module and _BEFORE.search(module) and insert_at == end:
            insert_at = head
    todo = [p for p, modules in entries if not any(m in present for m in modules)]
    if not todo:
        return text, present
    new_items = [f"{indent}{line}\n" for line in comment.rstrip("\n").split("\n")] + [f"{indent}- {p}\n" for p in todo]
    if rest == "[]":
        lines[start] = lines[start].replace("[]", "", 1)
        insert_at = start + 1
    lines[insert_at:insert_at] = new_items
    return "".join(lines), present


# --- internal_attributes.yaml --------------------------------------------------------------
ORCID_ATTRIBUTE_BLOCK = (
    "# Authenticated ORCID iD, added by satosa-orcid (https://orcid.org/XXXX-XXXX-XXXX-XXXX). Friendly\n"
    "# names only: SATOSA filters released attributes by them and drops a urn:oid name.\n"
    "edupersonorcid:\n"
    "  saml: [eduPersonOrcid]\n"
    "  openid: [eduperson_orcid]\n"
)


def _internal_attributes(text: str, where: str) -> str:
    doc = _load(text) or {}
    attrs = doc.get("attributes") if isinstance(doc, dict) else None
    if isinstance(attrs, dict) and "edupersonorcid" in attrs:
        return text
    lines = text.splitlines(keepends=True)
    block = _top_level_block(lines, "attributes")
    if block is None or _TOP_KEY.match(lines[block[0]]).group(2).split("#", 1)[0].strip():  # type: ignore[union-attr]
        raise InitError(f"{where}: no block 'attributes:' mapping to add edupersonorcid to; add "
                        "'edupersonorcid: {saml: [eduPersonOrcid], openid: [eduperson_orcid]}' under attributes")
    start, end = block
    child = next((l for l in lines[start + 1:end] if l.strip() and not l.lstrip().startswith("#")), "  x")
    indent = child[: len(child) - len(child.lstrip())] or "  "
    added = "".join(f"{indent}{line}\n" if line else "\n" for line in ORCID_ATTRIBUTE_BLOCK.rstrip("\n").split("\n"))
    lines[start + 1:start + 1] = [added]
    return "".join(lines)


# --- the plugin's files and the env file ---------------------------------------------------
def plugin_yaml(name: str, *, environment: str, user_key_attribute: str, institution: str | None,
                emulator: bool) -> str:
    base_url = "    base_url: !ENV ORCID_BASE_URL          # the emulator's address\n" if emulator else ""
    institution_line = (f"    institution: {_yaml_scalar(institution)}\n" if institution else
                        "    # institution: Example University   # your institution's name on the page (set it)\n")
    return f"""# ORCID hop of satosa-orcid (written by `satosa-orcid init`): after the institutional login it
# sends researchers without a stored link through ORCID's consent screen (once) and releases
# the authenticated iD as eduPersonOrcid (SAML) / eduperson_orcid (OIDC).
#
# Register with your ORCID client: <BASE>/{name}/callback and <BASE>/{name}/connect
# Values behind !ENV come from the environment (see the env file `satosa-orcid init` wrote).
module: {ORCID_MODULE}
name: {name}
config:
  orcid:
    environment: {environment}              # production | sandbox | emulator
{base_url}    client_id: !ENV ORCID_CLIENT_ID
    client_secret: !ENV ORCID_CLIENT_SECRET
    scopes: [openid]                    # add /activities/update (member API) to write affiliations
  # The internal attribute that identifies the user in the link store (stable, never reassigned).
  user_key_attribute: {user_key_attribute}
  trigger: always                       # or a list of the SP entity IDs / OIDC clients to ask for
  # The short page before ORCID's consent screen: "Connect" / "Not now" / "Don't ask again".
  interstitial:
    enabled: true
{institution_line}  on_error: continue                    # ORCID down or denied: the login goes on without the iD
  store:
    database_url: !ENV SATOSA_ORCID_DATABASE_URL
    token_keys: !ENV SATOSA_ORCID_TOKEN_KEYS   # Fernet keys, newest first (satosa-orcid keys generate)
"""


def hint_yaml(name: str) -> str:
    return f"""# Request side of satosa-orcid (optional, written by `satosa-orcid init`): notes whether the
# SP's request asked for eduPersonOrcid and keeps its display name for the page before ORCID.
module: {HINT_MODULE}
name: {name}_hint
config:
  orcid_attribute: edupersonorcid
"""


def _yaml_scalar(value: str) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` lines (``#`` comments, optional ``export``, optional quotes)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _env_file(old: str | None, wanted: dict[str, tuple[str, str]]) -> str:
    """The env file with every ``wanted`` variable (value, comment) that it lacks appended."""
    have = parse_env_file(old or "")
    text = old or ("# satosa-orcid: the variables plugins/microservices read through !ENV (written by\n"
                   "# `satosa-orcid init`, mode 0600: it holds secrets). Give them to the proxy's processes:\n"
                   "# systemd EnvironmentFile=, docker --env-file, or `set -a; . ./satosa-orcid.env; set +a`.\n")
    if text and not text.endswith("\n"):
        text += "\n"
    for key, (value, comment) in wanted.items():
        if key not in have:
            text += f"# {comment}\n{key}={value}\n"
    return text


# --- the plan ---------------------------------------------------------------------------
def plan_init(proxy_conf: Path, *, name: str = "orcid", hint: bool = True, environment: str = "production",
              orcid_base_url: str | None = None, client_id: str | None = None, user_key_attribute: str | None = None,
              institution: str | None = None, database_url: str | None = None, env_file: Path | None = None,
              environ: dict[str, str] | None = None, new_key: Any = None) -> Plan:
    """What ``init`` would change (nothing is written here)."""
    from .tokens import TokenCipher

    environ = dict(os.environ if environ is None else environ)
    proxy_conf = proxy_conf.absolute()
    conf_dir = proxy_conf.parent
    text = _read(proxy_conf)
    try:
        doc = _load(text)
    except yaml.YAMLError as exc:
        raise InitError(f"{proxy_conf}: not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise InitError(f"{proxy_conf}: not a SATOSA proxy_conf.yaml (a YAML mapping)")
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", name):
        raise InitError(f"--name {name!r}: letters, digits, '-' and '_' only (it becomes a URL path segment)")
    if environment == "emulator" and not orcid_base_url:
        raise InitError("--environment emulator needs --orcid-base-url (the emulator's address)")
    changes: list[Change] = []

    # internal attributes: which file, and the user key
    ia = doc.get("INTERNAL_ATTRIBUTES")
    if isinstance(ia, str):
        ia_path = Path(ia) if Path(ia).is_absolute() else conf_dir / ia
        ia_text = _read(ia_path)
        attrs = ((_load(ia_text) or {}).get("attributes") or {})
        ia_new = _internal_attributes(ia_text, str(ia_path))
        if ia_new != ia_text:
            changes.append(Change(ia_path, ia_text, ia_new))
    else:
        attrs = (ia or {}).get("attributes") or {} if isinstance(ia, dict) else {}
        if "edupersonorcid" not in attrs:
            raise InitError("proxy_conf.yaml: INTERNAL_ATTRIBUTES is inline; add 'edupersonorcid: {saml: "
                            "[eduPersonOrcid], openid: [eduperson_orcid]}' under its attributes (or move it to a file)")
    if user_key_attribute is None:
        user_key_attribute = next((c for c in USER_KEY_CANDIDATES if c in attrs), None)
        if user_key_attribute is None:
            raise InitError("no internal attribute to identify users by (none of "
                            f"{', '.join(USER_KEY_CANDIDATES)}); give --user-key-attribute NAME")
    elif user_key_attribute not in attrs:
        raise InitError(f"--user-key-attribute {user_key_attribute}: not an internal attribute of the configuration")

    # the plugin's files, next to the other micro-services' files
    existing_ms = [m for m in (doc.get("MICRO_SERVICES") or []) if isinstance(m, str)]
    ms_dir = Path(existing_ms[0]).parent if existing_ms else Path("plugins/microservices")
    files = [(ms_dir / f"{name}.yaml", plugin_yaml(name, environment=environment, user_key_attribute=user_key_attribute,
                                                    institution=institution, emulator=environment == "emulator"),
              ORCID_MODULES)]
    if hint:
        files.insert(0, (ms_dir / f"{name}_hint.yaml", hint_yaml(name), HINT_MODULES))
    comment = ("# satosa-orcid (added by `satosa-orcid init`): the ORCID hop, before consent and attribute\n"
               "# filters so that they see eduPersonOrcid; the hint (request side) is optional.\n")
    ms_new, present = _micro_services(text, conf_dir, [(str(rel), modules) for rel, _, modules in files], comment)
    for rel, content, modules in files:
        if any(m in present for m in modules):
            continue  # already configured, in whatever file
        path = rel if rel.is_absolute() else conf_dir / rel
        if path.exists():
            current = _item_module(f"- {path}\n", conf_dir)
            if current not in modules:
                raise InitError(f"{path}: exists and is not the plugin's; choose another --name")
            continue
        changes.append(Change(path, None, content))
    # The SAML backend: the plugin's drop-in subclass of SATOSA's (same configuration), which
    # keeps the InResponseTo check in the state cookie (any worker takes the IdP's answer) and
    # gives the plugin the asserting IdP's shibmd:Scope for the user-key scope check.
    ms_new = _our_saml_backend(ms_new)  # backends written inline in proxy_conf.yaml
    for entry in doc.get("BACKEND_MODULES") or []:
        if isinstance(entry, str):
            path = Path(entry) if Path(entry).is_absolute() else conf_dir / entry
            backend_old = _read(path)
            backend_new = _our_saml_backend(backend_old)
            if backend_new != backend_old:
                changes.append(Change(path, backend_old, backend_new))
    if ms_new != text:
        changes.insert(0, Change(proxy_conf, text, ms_new))

    # the env file
    env_path = (env_file or conf_dir / ENV_FILE_NAME).absolute()
    env_old = env_path.read_text(encoding="utf-8") if env_path.exists() else None
    key = new_key or TokenCipher.generate_key()
    secret = environ.get("ORCID_CLIENT_SECRET", "")
    wanted = {
        "ORCID_CLIENT_ID": (client_id or environ.get("ORCID_CLIENT_ID", ""),
                            "your ORCID client's id (APP-XXXXXXXXXXXXXXXX), from ORCID's Developer Tools / member API"),
        "ORCID_CLIENT_SECRET": (secret, "your ORCID client's secret (fill it in; keep this file 0600)"),
        "SATOSA_ORCID_DATABASE_URL": (database_url or f"sqlite:///{conf_dir / 'satosa-orcid-links.sqlite'}",
                                      "the link store: a SQLite file (one instance) or postgresql+psycopg://... (shared)"),
        "SATOSA_ORCID_TOKEN_KEYS": (key, "Fernet key(s) encrypting ORCID tokens at rest, newest first (generated)"),
    }
    if environment == "emulator":
        wanted["ORCID_BASE_URL"] = (orcid_base_url or "", "the ORCID emulator's address")
    env_new = _env_file(env_old, wanted)
    if env_new != env_old:
        masked = {key: "<generated token key>"}
        if secret:
            masked[secret] = "<$ORCID_CLIENT_SECRET>"
        changes.append(Change(env_path, env_old, env_new, mode=0o600, masked=masked))

    return Plan(changes, env_path, parse_env_file(env_new), _base(doc, environ), name)


STOCK_SAML_BACKEND = "satosa.backends.saml2.SAMLBackend"


def _our_saml_backend(text: str) -> str:
    r"""``text`` with SATOSA's SAML backend module replaced by the plugin's subclass.

    >>> _our_saml_backend("module: satosa.backends.saml2.SAMLBackend\nname: Saml2\n").splitlines()[0]
    'module: satosa_orcid_plugin.ops.saml2_backend.SAMLBackend  # set by satosa-orcid init (was satosa.backends.saml2.SAMLBackend)'
    """
    return re.sub(rf"^([ \t]*-?[ \t]*module:[ \t]*){re.escape(STOCK_SAML_BACKEND)}[ \t]*$",
                  rf"\g<1>{OUR_SAML_BACKEND}  # set by satosa-orcid init (was {STOCK_SAML_BACKEND})", text,
                  flags=re.MULTILINE)


def _base(doc: dict[str, Any], environ: dict[str, str]) -> str:
    base = str(doc.get("BASE") or "<BASE>")
    m = re.fullmatch(r"\$\{(\w+)\}", base)
    if m:
        base = environ.get(m.group(1)) or base
    return base.rstrip("/")


def apply(plan: Plan) -> None:
    """Write the plan's files (new files created, the env file 0600 before any secret is in it)."""
    for change in plan.changes:
        change.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = change.path.with_name(f".{change.path.name}.init-tmp")
        mode = change.mode if change.old is None or change.mode == 0o600 else (change.path.stat().st_mode & 0o777)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(change.new)
        os.chmod(tmp, mode)
        os.replace(tmp, change.path)


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in values.items() if v})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# --- the command ------------------------------------------------------------------------
@click.command("init")
@click.option("--proxy-conf", "proxy_conf", required=True, type=click.Path(dir_okay=False, exists=False),
              help="The deployment's proxy_conf.yaml.")
@click.option("--dry-run", is_flag=True, help="Print the changes as a unified diff; write nothing.")
@click.option("--name", default="orcid", show_default=True, help="The micro-service's name: its URL prefix.")
@click.option("--no-hint", is_flag=True, help="Do not add the optional request hint (OrcidRequestHint).")
@click.option("--environment", type=click.Choice(ENVIRONMENTS), default="production", show_default=True,
              help="Which ORCID.")
@click.option("--orcid-base-url", default=None, help="With --environment emulator: the emulator's address.")
@click.option("--client-id", default=None, help="The ORCID client id (default $ORCID_CLIENT_ID).")
@click.option("--user-key-attribute", default=None,
              help="Internal attribute identifying users (default: eduPersonPrincipalName's, if defined).")
@click.option("--institution", default=None, help="Your institution's name, shown on the page before ORCID.")
@click.option("--database-url", default=None, help="The link store (default: a SQLite file next to proxy_conf.yaml).")
@click.option("--env-file", type=click.Path(dir_okay=False), default=None,
              help=f"Where the variables go (default: {ENV_FILE_NAME} next to proxy_conf.yaml).")
def init(proxy_conf: str, dry_run: bool, name: str, no_hint: bool, environment: str, orcid_base_url: str | None,
         client_id: str | None, user_key_attribute: str | None, institution: str | None, database_url: str | None,
         env_file: str | None) -> None:
    """Add the plugin to an existing SATOSA proxy: MICRO_SERVICES entries, the plugin's YAML,
    edupersonorcid in internal_attributes.yaml, an env file with generated token keys; then
    print the URIs to register with ORCID and run check-config. Idempotent."""
    path = Path(proxy_conf)
    if not path.is_file():
        fail(f"--proxy-conf {proxy_conf}: no such file")
    try:
        plan = plan_init(path, name=name, hint=not no_hint, environment=environment, orcid_base_url=orcid_base_url,
                         client_id=client_id, user_key_attribute=user_key_attribute, institution=institution,
                         database_url=database_url, env_file=Path(env_file) if env_file else None)
    except InitError as exc:
        fail(str(exc))
    conf_dir = path.absolute().parent
    if dry_run:
        for change in plan.changes:
            click.echo(change.diff(conf_dir), nl=False)
        if not plan.changes:
            click.echo("nothing to change: the plugin is already configured", err=True)
        return
    apply(plan)
    for change in plan.changes:
        click.echo(f"{'created' if change.old is None else 'updated'} {change.path}", err=True)
    if not plan.changes:
        click.echo("nothing to change: the plugin is already configured", err=True)
    click.echo("\nRegister these redirect URIs with your ORCID client (Developer Tools, or your member API client):\n"
               f"  {plan.base}/{plan.name}/callback\n"
               f"  {plan.base}/{plan.name}/connect   (Institutional Connect; optional)\n")
    if not plan.env.get("ORCID_CLIENT_SECRET"):
        click.echo(f"Then put the client's id and secret into {plan.env_file}.", err=True)
    click.echo(f"The proxy's processes need the variables of {plan.env_file} (systemd EnvironmentFile=, "
               "docker --env-file, or: set -a; . FILE; set +a).\n", err=True)
    from .ops.checks import check_proxy_config

    with _environment(plan.env):
        problems, warnings = check_proxy_config(path)
    report_check(problems, warnings, f"check-config {path}: OK")


def register(main_group: click.Group) -> None:
    main_group.add_command(init)


__all__ = ["init", "plan_init", "apply", "Plan", "Change", "InitError", "parse_env_file", "register"]
