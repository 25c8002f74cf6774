"""Pure decisions: what to do with a login, given what the store knows. No I/O here."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping

from .config import PluginConfig
from .errors import InvalidOrcidId
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


def first_value(values: Any) -> str | None:
    """The first non-empty string of an attribute's values (SATOSA keeps lists)."""
    if isinstance(values, str):
        return values or None
    if isinstance(values, (list, tuple)) and values and isinstance(values[0], str) and values[0]:
        return values[0]
    return None


def asserted_orcid(config: PluginConfig, issuer: str | None, attributes: Mapping[str, Any]) -> OrcidId | None:
    """An iD the upstream IdP asserted: used only when the config trusts that IdP for it."""
    if issuer not in config.trusted_orcid_issuers:
        return None
    for value in attributes.get(config.orcid_attribute) or []:
        try:
            return OrcidId.parse(value, sandbox=config.orcid.sandbox)
        except InvalidOrcidId:
            continue
    return None


def prefill(config: PluginConfig, attributes: Mapping[str, Any]) -> dict[str, str]:
    """ORCID authorize parameters (e.g. ``email``) filled from the login's attributes."""
    values = {param: first_value(attributes.get(attribute)) for param, attribute in config.prefill.items()}
    return {param: value for param, value in values.items() if value}
