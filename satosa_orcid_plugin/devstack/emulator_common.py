"""What the emulator's parts share: its browser session, the demo password, and the exception
a handler raises to answer at once. Imported by ``emulator``, ``emulator_member_api`` and
``emulator_saml_sp``; imports none of them (so the three have no import cycle)."""
from __future__ import annotations

from dataclasses import dataclass

from werkzeug.wrappers import Response

SESSION_COOKIE = "orcid_emulator_session"
DEMO_PASSWORD = "orcid-demo"


@dataclass
class Session:
    """A browser signed in to the emulated orcid.org."""

    id: str
    orcid: str
    auth_time: float


class Reply(Exception):
    """Short-circuits a handler with a ready response."""

    def __init__(self, response: Response) -> None:
        self.response = response


__all__ = ["SESSION_COOKIE", "DEMO_PASSWORD", "Session", "Reply"]
