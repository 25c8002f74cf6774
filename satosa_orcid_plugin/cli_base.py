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


class Group(click.Group):
    """Turns the plugin's own errors into one line on stderr and exit 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OrcidPluginError as exc:
            fail(exc.message)
