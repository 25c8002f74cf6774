"""What every ``satosa-orcid`` command group shares."""
from __future__ import annotations

import sys
from typing import Any

import click

from .errors import OrcidPluginError


def fail(message: str) -> None:
    click.echo(f"satosa-orcid: {message}", err=True)
    sys.exit(1)


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
