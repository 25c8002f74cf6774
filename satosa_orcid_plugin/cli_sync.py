"""``satosa-orcid sync ...`` and ``satosa-orcid affiliations ...``: the affiliation worker and
its administration. Registered on the main group by ``cli.py`` with ``register(main)``.

    satosa-orcid --config proxy_conf.yaml sync run            # the long-running worker
    satosa-orcid --config proxy_conf.yaml sync run --once     # drain what is due, then exit
    satosa-orcid --config proxy_conf.yaml sync status [--json]
    satosa-orcid --config proxy_conf.yaml affiliations show USER [--json]
    satosa-orcid --config proxy_conf.yaml affiliations resync USER | --all

``sync run`` is the one worker command (it is also what ``python -m satosa_orcid_plugin.cli``
runs); it builds its :class:`~satosa_orcid_plugin.services.SyncWorker` through
:mod:`satosa_orcid_plugin.wiring`. The other commands are thin shells over the admin service
(``Ctx.admin()`` of ``cli.py``).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone
from typing import Any

import click

from .cli_base import Group, issuer_of
from .ops.signals import stop_event_on_signals


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
@click.option("--owner", default=None, help="Worker name in leases and logs (default host:pid).")
@click.pass_obj
def sync_run(obj: Any, once: bool, lease: float | None, batch_size: int | None, owner: str | None) -> None:
    """Run the outbox worker (any number may run against one PostgreSQL database)."""
    from .metrics import record_sync_report
    from .wiring import sync_worker

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    worker = sync_worker(obj.plugin_config(), owner=owner, lease_seconds=lease, batch_size=batch_size)
    if once:
        report = worker.run_once()
        record_sync_report(report)
        click.echo(json.dumps(report.as_dict()))
        return
    stop = stop_event_on_signals()
    click.echo(f"affiliation sync worker {worker.owner} running (Ctrl-C to stop)", err=True)
    worker.run_forever(stop, on_report=record_sync_report)


@sync_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def sync_status(obj: Any, as_json: bool) -> None:
    """Queued, retrying, done and parked items (with reasons), and the oldest waiting age."""
    data = obj.admin().sync_status()
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
@click.option("--issuer", default=None, help="Entity ID of the IdP that asserted USER, when several IdPs' users have it.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def affiliations_show(obj: Any, user: str, issuer: str | None, as_json: bool) -> None:
    """USER's items as we think they are on the record, next to what ORCID has."""
    admin = obj.admin()
    ours = [_item_dict(i) for i in admin.affiliation_items(user)]
    link, summaries, remote_error = admin.affiliations_at_orcid(user, issuer_of(admin, user, issuer))
    client_id = admin.client.settings.client_id if link is not None else None
    remote = {kind: [dict(_jsonable(s), ours=s.source_client_id == client_id) for s in items]
              for kind, items in summaries.items()}
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


@affiliations_group.command("resync")
@click.argument("user", required=False)
@click.option("--all", "all_users", is_flag=True, help="Every item of every user.")
@click.pass_obj
def affiliations_resync(obj: Any, user: str | None, all_users: bool) -> None:
    """Queue USER's items (or --all) to be written again, parked ones included."""
    if bool(user) == all_users:
        raise click.UsageError("give either USER or --all")
    count = obj.admin().resync(None if all_users else user)
    click.echo(f"queued {count} item(s); `satosa-orcid sync run --once` writes them")


def register(main_group: click.Group) -> None:
    """Add ``sync`` and ``affiliations`` to the ``satosa-orcid`` group."""
    main_group.add_command(sync_group)
    main_group.add_command(affiliations_group)


__all__ = ["register", "sync_group", "affiliations_group"]
