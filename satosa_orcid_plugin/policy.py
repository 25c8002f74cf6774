"""Pure decisions: what to do with a login, given what the store knows. No I/O here."""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Sequence

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


@dataclass(frozen=True)
class Scope:
    """One ``shibmd:Scope`` of an IdP's metadata (the Shibboleth metadata extension,
    urn:mace:shibboleth:metadata:1.0): a value the scope of a scoped attribute must equal
    (case-insensitively, as DNS names compare), or with ``regexp="true"`` a regular
    expression the whole scope must match."""

    value: str
    regexp: bool = False

    def allows(self, scope: str) -> bool:
        if not self.regexp:
            return scope.lower() == self.value.lower()
        try:
            return any(re.fullmatch(self.value, s) is not None for s in (scope, scope.lower()))
        except re.error:
            return False


@dataclass(frozen=True)
class KeyCheck:
    """The user key a login may use, and under which issuer (see :func:`check_user_key`).

    ``user_key`` None: no lookup and no hop for this login. ``problem`` names what was wrong
    (``no_issuer``, ``unscoped``, ``scopes_unknown``, ``scope_not_allowed``), also when
    ``scope_check: warn`` lets the key through; ``scope`` is the key's scope, if it has one."""

    user_key: str | None
    issuer: str | None
    problem: str | None = None
    scope: str | None = None


def check_user_key(config: PluginConfig, user_key: str | None, idp: str | None,
                   scopes: Sequence[Scope] | None) -> KeyCheck:
    """Whether ``user_key``, asserted by the IdP ``idp``, may name a user in the link store.

    The key is stored under the IdP's entity ID (``user_key_scope: issuer``, the default: the
    same value from another IdP is another user) or under "" (``global``). A scoped key
    (``value@scope``, ``user_key_scoped``) must carry a scope the asserting IdP's metadata
    lists (``scopes``; None when the metadata is not known): ``scope_check: enforce`` drops
    the key otherwise, ``warn`` keeps it and reports the problem, ``off`` skips the check.
    """
    issuer = config.key_issuer(idp)
    if not user_key:
        return KeyCheck(None, issuer)
    if issuer is None:
        return KeyCheck(None, None, "no_issuer")
    if not config.user_key_scoped or config.scope_check == "off":
        return KeyCheck(user_key, issuer)
    local, at, scope = user_key.rpartition("@")
    problem = None
    if not (local and at and scope):
        problem, scope = "unscoped", None
    elif scopes is None:
        problem = "scopes_unknown"
    elif not any(allowed.allows(scope) for allowed in scopes):
        problem = "scope_not_allowed"
    if problem is None:
        return KeyCheck(user_key, issuer)
    return KeyCheck(user_key if config.scope_check == "warn" else None, issuer, problem, scope)


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
