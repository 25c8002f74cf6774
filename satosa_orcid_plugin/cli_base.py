"""What every ``satosa-orcid`` command group shares."""
from __future__ import annotations

import sys
from typing import Any

import click

from .errors import OrcidPluginError


PREFIX = "satosa-orcid"


def fail(message: str) -> None:
    """``message`` as one line on stderr, prefixed once with ``satosa-orcid``; exit 1."""
    line = " ".join(message.split())  # never more than one line
    click.echo(line if line.startswith(PREFIX) else f"{PREFIX}: {line}", err=True)
    sys.exit(1)


def report_check(problems: list[str], warnings: list[str], ok: str) -> None:
    """check-config's answer: every warning and problem on its own line on stderr, then exit 1
    when there is a problem, else the ``ok`` line on stdout."""
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    for p in problems:
        click.echo(f"error: {p}", err=True)
    if problems:
        sys.exit(1)
    click.echo(ok)


class Group(click.Group):
    """Turns the plugin's own errors into one line on stderr and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OrcidPluginError as exc:
            fail(exc.message)


ISSUER_HELP = ("Entity ID of the IdP that asserted USER (user keys are bound to their IdP); needed only when "
               "several IdPs' users have this key. '' names an issuer-free key (user_key_scope: global).")


def issuer_of(admin: Any, user: str, issuer: str | None, *, decisions: bool = False) -> str:
    """--issuer when given, else the only issuer USER has; several: a usage error naming them."""
    if issuer is not None:
        return issuer
    found = admin.issuers(user, decisions=decisions)
    if len(found) > 1:
        listed = ", ".join(repr(i) for i in found)
        raise click.UsageError(f"{user!r} is the key of users of {len(found)} IdPs: give --issuer (one of {listed})")
    return found[0] if found else ""
