"""Pure decisions: what to do with a login, given what the store knows. No I/O here."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .config import PluginConfig
from .orcid_id import OrcidId


class Action(str, Enum):
    RELEASE = "release"  # linked: add the attribute from the store, no network
    HOP = "hop"  # send the researcher through ORCID's consent screen
    SKIP = "skip"  # continue the login without the attribute


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    orcid: OrcidId | None = None
    mode: str = "ask"  # ask | require | never, for this requester

    @property
    def required(self) -> bool:
        return self.mode == "require"


def decide(
    config: PluginConfig,
    *,
    user_key: str | None,
    requester: str | None,
    linked: OrcidId | None,
    declined: str | None,
    asserted: OrcidId | None = None,
    requested: bool = False,
) -> Decision:
    """Decide for one login.

    ``linked`` is the iD of the user's active link, ``declined`` the user's standing
    decision (``not_now``/``never``), ``asserted`` a verified iD a trusted upstream IdP
    already released, and ``requested`` whether the SP's own request asked for the iD.

    A ``require`` service hops even for a user who said "not now": without the iD there is
    no login to that service.
    """
    if requester and requester in config.orcid_requesters:
        # The user is signing in to ORCID itself: never send them to ORCID mid-login.
        return Decision(Action.SKIP, "orcid_signin", mode="never")
    mode = config.mode_for(requester, requested=requested)
    if linked is not None:
        return Decision(Action.RELEASE, "linked", linked, mode)
    if asserted is not None:
        return Decision(Action.RELEASE, "asserted_by_trusted_idp", asserted, mode)
    if not user_key:
        return Decision(Action.SKIP, "no_user_key", mode=mode)
    if mode == "never":
        return Decision(Action.SKIP, "not_triggered", mode=mode)
    if declined and mode != "require":
        return Decision(Action.SKIP, f"declined_{declined}", mode=mode)
    return Decision(Action.HOP, "not_linked", mode=mode)
