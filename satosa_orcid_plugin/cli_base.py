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
