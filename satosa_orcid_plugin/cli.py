"""``satosa-orcid``: the admin command line. A thin click shell over the service and store."""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from .cli_base import ISSUER_HELP, Group, fail as _fail, issuer_of as _issuer_of, report_check

ENV_DATABASE_URL = "SATOSA_ORCID_DATABASE_URL"
ENV_TOKEN_KEYS = "SATOSA_ORCID_TOKEN_KEYS"


class Ctx:
    """What every command gets: the plugin configuration and the services built from it
    (by :mod:`satosa_orcid_plugin.wiring`, like the proxy and the worker build theirs)."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path or os.environ.get("SATOSA_ORCID_CONFIG") or None
        self._admin = None

    def plugin_config(self):
        from .ops.discovery import load_plugin_config

        if not self.config_path:
            raise click.UsageError("give --config PATH (a proxy_conf.yaml or the micro-service YAML)")
        return load_plugin_config(self.config_path)

    def admin(self, *, migrate: bool = True):
        """The admin service from --config, or (store-only commands) from
        SATOSA_ORCID_DATABASE_URL + SATOSA_ORCID_TOKEN_KEYS. ``migrate``: a SQLite store is
        migrated as the proxy migrates it; a PostgreSQL schema left behind is named."""
        if self._admin is None:
            from .wiring import admin_service

            if self.config_path:
                self._admin = admin_service(self.plugin_config(), migrate=migrate)
            else:
                self._admin = admin_service(None, store_settings=_store_settings_from_env(), migrate=migrate)
        return self._admin

    def has_database(self) -> bool:
        return bool(self.config_path or os.environ.get(ENV_DATABASE_URL))


def _store_settings_from_env():
    from .config import StoreSettings

    url = os.environ.get(ENV_DATABASE_URL)
    keys = tuple(k for k in os.environ.get(ENV_TOKEN_KEYS, "").replace(",", " ").split() if k)
    if not url:
        raise click.UsageError(f"give --config PATH or set {ENV_DATABASE_URL}")
    if not keys:
        raise click.UsageError(f"set {ENV_TOKEN_KEYS} (Fernet keys, newest first)")
    return StoreSettings(url, keys, os.environ.get("SATOSA_ORCID_USER_KEY_SECRET") or None)


def _link_dict(link: Any) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(link):
        value = getattr(link, f.name)
        if isinstance(value, datetime):
            value = value.astimezone(timezone.utc).isoformat()
        elif isinstance(value, tuple):
            value = " ".join(value)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            value = str(value)
        out[f.name] = value
    if getattr(link, "orcid", None) is not None:
        out["orcid_uri"] = link.orcid.uri
    return out


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="proxy_conf.yaml or the OrcidConnect micro-service YAML (or SATOSA_ORCID_CONFIG).")
@click.version_option(package_name="satosa-orcid-plugin")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Administer the SATOSA ORCID plugin: links, keys, database, config, demo."""
    import warnings

    # pysaml2 imports a cipher mode that cryptography deprecates; not actionable, and it would
    # be two lines of noise around every one-line error.
    warnings.filterwarnings("ignore", message=".*CFB has been moved.*")
    ctx.obj = Ctx(config_path)


# --- links ---------------------------------------------------------------------------
@main.group(cls=Group)
def links() -> None:
    """List, show, unlink and export researcher links."""


@links.command("list")
@click.option("--status", type=click.Choice(["active", "revoked", "unlinked"]), default=None)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@click.pass_obj
def links_list(obj: Ctx, status: str | None, limit: int, as_json: bool) -> None:
    """List links, newest first."""
    rows = [_link_dict(l) for l in obj.admin().links(status=status, limit=limit)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(f"{r['user_key']}\t{r['issuer'] or '-'}\t{r['orcid_uri']}\t{r['status']}\t{r.get('updated_at', '')}")


@links.command("show")
@click.argument("user", required=False)
@click.option("--orcid", "orcid", default=None, help="Show the link holding this iD instead (any form of the iD).")
@click.option("--issuer", default=None, help=ISSUER_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def links_show(obj: Ctx, user: str | None, orcid: str | None, issuer: str | None, as_json: bool) -> None:
    """Show USER's link (or the link holding --orcid) and its audit trail (never a token)."""
    if bool(user) == bool(orcid):
        raise click.UsageError("give USER or --orcid ID")
    admin = obj.admin()
    link = admin.link(user, _issuer_of(admin, user, issuer)) if user else admin.link_of_orcid(orcid)
    if link is None:
        _fail(f"no link for user {user!r}" if user else f"no link holds the ORCID iD {orcid}")
    data = _link_dict(link)
    data["audit"] = admin.audit_trail(user, limit=20) if user else admin.audit_trail(limit=20, orcid=link.orcid)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for k, v in data.items():
        if k != "audit":
            click.echo(f"{k}: {v}")
    for event in data["audit"]:
        click.echo(f"  {event.get('at')} {event.get('event')}")


@links.command("unlink")
@click.argument("user")
@click.option("--reason", default="admin", show_default=True)
@click.option("--issuer", default=None, help=ISSUER_HELP)
@click.pass_obj
def links_unlink(obj: Ctx, user: str, reason: str, issuer: str | None) -> None:
    """Unlink USER, revoking the tokens at ORCID."""
    from .errors import NotFound

    admin = obj.admin()
    issuer = _issuer_of(admin, user, issuer)
    try:
        link = admin.unlink(user, issuer=issuer, reason=reason)
    except NotFound:
        _fail(f"no active link for user {user!r}" + (f" of {issuer}" if issuer else ""))
    click.echo(f"unlinked {user}" + (f" of {issuer}" if issuer else "") + f" ({link.orcid.uri})")


@links.command("check")
@click.argument("user", required=False)
@click.option("--all", "check_all", is_flag=True, help="Check every active link (one ORCID call each).")
@click.option("--issuer", default=None, help=ISSUER_HELP)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def links_check(obj: Ctx, user: str | None, check_all: bool, issuer: str | None, as_json: bool) -> None:
    """Ask ORCID whether USER's access still works; marks links the researcher revoked."""
    if bool(user) == check_all:
        raise click.UsageError("give USER or --all")
    admin = obj.admin()
    if user:
        users = [(user, _issuer_of(admin, user, issuer))]
    else:
        if admin.hashes_user_keys:
            _fail("--all cannot be used with hashed user keys; give USER")
        users = admin.active_users()
    checked = [(u, i, admin.check_link(u, i)) for u, i in users]
    if as_json:
        click.echo(json.dumps([{"user_key": u, "issuer": i, "result": r} for u, i, r in checked] if check_all
                              else {u: r for u, _, r in checked}, indent=2))
    else:
        for u, i, r in checked:
            click.echo(f"{u}\t{i or '-'}\t{r}" if check_all else f"{u}\t{r}")
    results = {u: r for u, _, r in checked}
    if user and results[user] == "no_link":
        sys.exit(1)


@links.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--status", type=click.Choice(["active", "revoked", "unlinked"]), default=None)
@click.pass_obj
def links_export(obj: Ctx, fmt: str, status: str | None) -> None:
    """Export every link (no tokens) as CSV or JSON on stdout."""
    rows = [_link_dict(link) for link in obj.admin().all_links(status=status)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    fields = ["user_key", "issuer", "orcid", "orcid_uri", "status", "environment", "name", "amr", "scopes", "created_at", "updated_at"]
    writer = csv.DictWriter(sys.stdout, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


@main.group(cls=Group)
def decisions() -> None:
    """Researchers' "not now" / "don't ask again" answers."""


@decisions.command("show")
@click.argument("user")
@click.option("--issuer", default=None, help=ISSUER_HELP)
@click.pass_obj
def decisions_show(obj: Ctx, user: str, issuer: str | None) -> None:
    """Print USER's standing decision (not_now, never or none)."""
    admin = obj.admin()
    click.echo(admin.decision(user, _issuer_of(admin, user, issuer, decisions=True)) or "none")


@decisions.command("clear")
@click.argument("user")
@click.option("--issuer", default=None, help=ISSUER_HELP)
@click.pass_obj
def decisions_clear(obj: Ctx, user: str, issuer: str | None) -> None:
    """Forget USER's decision: the next login asks again."""
    admin = obj.admin()
    admin.clear_decision(user, _issuer_of(admin, user, issuer, decisions=True))
    click.echo(f"cleared the decision of {user}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(obj: Ctx, as_json: bool) -> None:
    """Counts: linked, revoked, declined, links in the last day."""
    data = obj.admin().stats()
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        for k, v in data.items():
            click.echo(f"{k}: {v}")


# --- database and keys ---------------------------------------------------------------
@main.group(cls=Group)
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.pass_obj
def db_upgrade(obj: Ctx) -> None:
    """Apply schema migrations (run before starting new proxy versions on PostgreSQL)."""
    obj.admin(migrate=False).upgrade()
    click.echo("database schema is up to date")


@main.group(cls=Group)
def keys() -> None:
    """Token encryption keys."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key (put it first in token_keys, keep the old ones after it)."""
    from .tokens import TokenCipher

    click.echo(TokenCipher.generate_key())


@keys.command("rotate")
@click.pass_obj
def keys_rotate(obj: Ctx) -> None:
    """Re-encrypt every stored token under the newest key."""
    n = obj.admin().rotate_keys()
    click.echo(f"re-encrypted {n} token rows under the newest key")


# --- config --------------------------------------------------------------------------
@main.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--cookie-sample", type=click.Path(exists=True, dir_okay=False), default=None,
              help="YAML describing the worst login to size SATOSA's state cookie for (attributes: {name: "
                   "values}, value_length, relay_state_bytes, requester, extra_state); default: 200 long "
                   "entitlements and an 80-byte RelayState.")
def check_config(path: str, cookie_sample: str | None) -> None:
    """Load PATH (proxy_conf.yaml) as SATOSA does and report every problem with its key path."""
    from .ops.checks import check_proxy_config

    sample = None
    if cookie_sample:
        import yaml

        sample = yaml.safe_load(Path(cookie_sample).read_text(encoding="utf-8")) or {}
        if not isinstance(sample, dict):
            click.echo(f"error: {cookie_sample}: not a mapping", err=True)
            sys.exit(1)
    notes: list[str] = []
    problems, warnings = check_proxy_config(Path(path), sample, notes=notes)
    for n in notes:
        click.echo(f"note: {n}")
    report_check(problems, warnings, f"{path}: OK")


# --- devstack ------------------------------------------------------------------------
@main.command()
@click.option("--once", is_flag=True, help="Run one scripted login, print the SP's attributes as JSON, exit.")
@click.option("--root", type=click.Path(file_okay=False), default="demo-data", show_default=True,
              help="Where keys, metadata and the SQLite file are generated.")
@click.option("--port-base", type=int, default=None, help="Use consecutive ports from here.")
@click.option("--journey", type=click.Choice(["login", "connect"]), default="login", show_default=True,
              help="login: the ORCID hop during a login; connect: ORCID's Institutional Connect first "
                   "(without --once the demo says where it starts).")
@click.option("--proxy-conf", type=click.Path(), default=None,
              help="Run your own proxy_conf.yaml (frontend Saml2IDP, backend Saml2, BASE at the demo's "
                   "proxy port) with the demo IdP, SP and the ORCID emulator around it.")
def demo(once: bool, root: str, port_base: int | None, journey: str, proxy_conf: str | None) -> None:
    """Run the whole stack on loopback: ORCID emulator, demo IdP, proxy (gunicorn), demo SP."""
    from .devstack import demo as demo_mod

    argv = ["--root", root, "--journey", journey]
    if proxy_conf:
        argv += ["--proxy-conf", proxy_conf]
    if once:
        argv.append("--once")
    if port_base is not None:
        argv += ["--port-base", str(port_base)]
    sys.exit(demo_mod.main(argv))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8090, show_default=True)
@click.option("--issuer", default=None, help="Public base URL (default http://HOST:PORT).")
@click.option("--clients", "clients_file", type=click.Path(dir_okay=False), default=None,
              help="JSON file: a list of client registrations (or $ORCID_EMULATOR_CLIENTS holding the JSON). "
                   "Default: one local client for the proxy at --proxy-base.")
@click.option("--proxy-base", default="https://127.0.0.1:8443", show_default=True,
              help="Without --clients: the proxy's BASE; the local client accepts BASE/orcid/callback "
                   "and BASE/orcid/connect.")
def emulator(host: str, port: int, issuer: str | None, clients_file: str | None, proxy_base: str) -> None:
    """Serve the offline ORCID emulator (loopback only by default).

    \b
    A client registration (the --clients file holds a JSON list of them):
      [{"client_id": "APP-LOCAL00000000001",
        "client_secret": "local-emulator-secret",
        "redirect_uris": ["https://proxy.example.org/orcid/callback"],
        "connect_redirect_uri": "https://proxy.example.org/orcid/connect",
        "member": true,
        "name": "Example University"}]
    redirect_uris must match the proxy's redirect URI exactly; connect_redirect_uri is the
    Institutional Connect URI (optional); member false gives a public-API client (no
    /activities/update); name is what ORCID's pages call the institution.

    \b
    Without --clients it registers one local client, APP-LOCAL00000000001 with the secret
    local-emulator-secret, for the plugin named "orcid" at --proxy-base. Point the proxy at
    it with orcid.environment: emulator and orcid.base_url: http://HOST:PORT.
    """
    from werkzeug.serving import run_simple

    from .devstack import emulator as emulator_mod

    if clients_file:
        try:
            raw = Path(clients_file).read_text(encoding="utf-8")
        except OSError as exc:
            _fail(f"--clients {clients_file}: {exc.strerror or exc}")
        source = f"--clients {clients_file}"
    elif os.environ.get("ORCID_EMULATOR_CLIENTS"):
        raw, source = os.environ["ORCID_EMULATOR_CLIENTS"], "ORCID_EMULATOR_CLIENTS"
    else:
        client = emulator_mod.local_client(proxy_base)
        raw, source = json.dumps([dataclasses.asdict(client)]), None
        click.echo(f"no --clients: registered the local client {client.client_id} (secret {client.client_secret}) "
                   f"for {client.redirect_uris[0]} and {client.connect_redirect_uri}", err=True)
    try:
        emulator_mod.parse_clients(raw)
    except ValueError as exc:
        _fail(f"{source}: {exc}")
    os.environ["ORCID_EMULATOR_ISSUER"] = issuer or f"http://{host}:{port}"
    os.environ["ORCID_EMULATOR_CLIENTS"] = raw
    try:
        app = emulator_mod.make_app_from_env()
    except (RuntimeError, OSError) as exc:
        _fail(str(exc))
    click.echo(f"ORCID emulator on {os.environ['ORCID_EMULATOR_ISSUER']}", err=True)
    try:
        run_simple(host, port, app, threaded=True, use_reloader=False)
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


from .cli_sync import register as _register_sync  # noqa: E402

_register_sync(main)
from .cli_ops import register as _register_ops  # noqa: E402  (metrics serve, health)
_register_ops(main)
from .cli_init import register as _register_init  # noqa: E402  (init)
_register_init(main)

if __name__ == "__main__":  # pragma: no cover
    main()
