"""``satosa-orcid sync ...`` and ``satosa-orcid affiliations ...``: the affiliation worker and
its administration. Registered on the main group by ``cli.py`` with ``register(main)``.

    satosa-orcid --config proxy_conf.yaml sync run            # the long-running worker
    satosa-orcid --config proxy_conf.yaml sync run --once     # drain what is due, then exit
    satosa-orcid --config proxy_conf.yaml sync status [--json]
    satosa-orcid --config proxy_conf.yaml affiliations show USER [--json]
    satosa-orcid --config proxy_conf.yaml affiliations resync USER | --all

Each command is a thin shell over ``sync.SyncWorker`` and ``store.outbox``; the ``Ctx`` of
``cli.py`` provides ``plugin_config()``, ``store()`` and ``service()``.
"""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any

import click

from .cli_base import Group

from .errors import ConfigError, OrcidError
from .ops.signals import stop_event_on_signals




def _settings(obj: Any) -> Any:
    """The ``affiliations:`` settings: from the parsed plugin config when it carries them,
    else straight from the YAML."""
    import os

    from .config import parse_affiliations
    from .ops.discovery import find_plugin_entries

    settings = getattr(obj.plugin_config(), "affiliations", None)
    if settings is None:
        path = obj.config_path or os.environ.get("SATOSA_ORCID_CONFIG")
        settings = parse_affiliations(find_plugin_entries(path)[0].raw.get("affiliations"))
    if settings is None:
        raise ConfigError("affiliations", "is not configured (or enabled: false)")
    return settings


def _outbox(obj: Any) -> Any:
    return obj.store().outbox


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    if dataclasses.is_dataclass(value):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _item_dict(item: Any) -> dict[str, Any]:
    data = _jsonable(item)
    for private in ("lease_owner", "desired_hash", "synced_hash"):
        data.pop(private, None)
    data["in_step"] = item.synced_hash == item.desired_hash
    return data


# --- sync ------------------------------------------------------------------------------
@click.group("sync", cls=Group)
def sync_group() -> None:
    """Write queued employment/education items to ORCID records."""


@sync_group.command("run")
@click.option("--once", is_flag=True, help="Process what is due, print a JSON report, exit.")
@click.option("--lease", type=float, default=None, help="Seconds an item stays leased to this worker.")
@click.option("--batch-size", type=int, default=None)
@click.pass_obj
def sync_run(obj: Any, once: bool, lease: float | None, batch_size: int | None) -> None:
    """Run the outbox worker (any number may run against one PostgreSQL database)."""
    from .sync import SyncWorker

    settings = _settings(obj)
    overrides = {k: v for k, v in (("lease_seconds", lease), ("batch_size", batch_size)) if v is not None}
    if overrides:
        settings = dataclasses.replace(settings, sync=dataclasses.replace(settings.sync, **overrides))
    worker = SyncWorker.from_service(obj.service(), settings)
    if once:
        from .metrics import record_sync_report

        report = worker.run_once()
        record_sync_report(report)
        click.echo(json.dumps(report.as_dict()))
        return
    stop = stop_event_on_signals()
    click.echo(f"affiliation sync worker {worker.owner} running (Ctrl-C to stop)", err=True)
    from .metrics import record_sync_report

    worker.run_forever(stop, on_report=record_sync_report)


@sync_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def sync_status(obj: Any, as_json: bool) -> None:
    """Queued, retrying, done and parked items (with reasons), and the oldest waiting age."""
    data = _outbox(obj).summary()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for status, count in data["counts"].items():
        click.echo(f"{status}: {count}")
    age = data["oldest_waiting_seconds"]
    click.echo(f"oldest waiting: {'-' if age is None else f'{age:.0f} s'}")
    for p in data["parked"]:
        click.echo(f"  parked #{p['id']} {p['kind']} {p['orcid']} since {p['since']}: {p['reason']}")


# --- affiliations ----------------------------------------------------------------------
@click.group("affiliations", cls=Group)
def affiliations_group() -> None:
    """What we hold for a researcher's record, and what ORCID holds."""


@affiliations_group.command("show")
@click.argument("user")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def affiliations_show(obj: Any, user: str, as_json: bool) -> None:
    """USER's items as we think they are on the record, next to what ORCID has."""
    outbox = _outbox(obj)
    ours = [_item_dict(i) for i in outbox.items(user)]
    link = obj.store().links.get_active(user)
    remote: dict[str, Any] = {}
    remote_error = None
    if link is None:
        remote_error = "no active link"
    else:
        remote, remote_error = _remote_items(obj, outbox, link)
    data = {"user": user, "orcid": str(link.orcid) if link else None, "ours": ours,
            "orcid_has": remote, "orcid_error": remote_error}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"user: {user}  orcid: {data['orcid'] or '-'}")
    click.echo("ours:")
    for i in ours:
        d = i["desired"]
        what = "present" if d.get("present") else ("delete" if d.get("delete") else f"ended {d.get('end')}")
        click.echo(f"  {i['kind']}: put-code {i['put_code'] or '-'}  {i['status']}  {what}  "
                   f"dept={d.get('department') or '-'} role={d.get('role') or '-'} start={d.get('start') or '-'}"
                   + (f"  error: {i['last_error']}" if i["last_error"] else ""))
    click.echo("orcid has:" + (f" ({remote_error})" if remote_error else ""))
    for kind, summaries in remote.items():
        for s in summaries:
            mine = " (ours)" if s["ours"] else f" (source {s['source_client_id']})"
            click.echo(f"  {kind}: put-code {s['put_code']}{mine}  {s['organization']}  dept={s['department'] or '-'} "
                       f"role={s['role'] or '-'} {s['start'] or '?'}..{s['end'] or ''}")


def _remote_items(obj: Any, outbox: Any, link: Any) -> tuple[dict[str, Any], str | None]:
    from .affiliations import KINDS
    from .orcid_client import OrcidClient
    from .sync import worker_session

    tokens = outbox.tokens_for_link(link.id)
    if tokens is None:
        return {}, "no tokens for the link"
    config = obj.plugin_config()
    client = OrcidClient(config.orcid, session=worker_session())
    out: dict[str, Any] = {}
    try:
        for kind in KINDS:
            out[kind] = [
                dict(_jsonable(s), ours=s.source_client_id == config.orcid.client_id)
                for s in client.list_affiliations(link.orcid, kind, tokens.access_token)
            ]
    except OrcidError as exc:
        return out, f"{exc.code}: {exc.message}"
    return out, None


@affiliations_group.command("resync")
@click.argument("user", required=False)
@click.option("--all", "all_users", is_flag=True, help="Every item of every user.")
@click.pass_obj
def affiliations_resync(obj: Any, user: str | None, all_users: bool) -> None:
    """Queue USER's items (or --all) to be written again, parked ones included."""
    if bool(user) == all_users:
        raise click.UsageError("give either USER or --all")
    count = _outbox(obj).resync(None if all_users else user)
    click.echo(f"queued {count} item(s); `satosa-orcid sync run --once` writes them")


def register(main_group: click.Group) -> None:
    """Add ``sync`` and ``affiliations`` to the ``satosa-orcid`` group."""
    main_group.add_command(sync_group)
    main_group.add_command(affiliations_group)


__all__ = ["register", "sync_group", "affiliations_group"]
