"""What should be on a researcher's ORCID record: the domain rules, no ORCID JSON.

Pure functions only (no database, no HTTP): the items the institution's attributes call
for (:func:`desired_items`), their present/gone states as the outbox keeps them, the hash
the fast path compares, and each item's ``self`` external id. The settings they follow
(the ``affiliations:`` block) are parsed by :mod:`.config`; the ORCID v3.0 bodies built
from a state are in :mod:`.orcid_records`.

Each item carries a ``self`` external id derived from the stored user key, the iD, the kind
and the organisation, so that ORCID answers 409 (error 9021) instead of storing a duplicate
whatever crashes or retries happen: ORCID-Source's ``AffiliationsManagerImpl`` checks a
source's new affiliation against its existing ones with
``ActivityValidator.checkExternalIdentifiersForDuplicates`` (``self`` ids only).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Iterable, Mapping

from .config import KINDS, MAX_TEXT, AffiliationSettings

SELF_ID_PREFIX = "satosa-orcid-"
_DATE_FORMATS = (
    re.compile(r"^(\d{4})$"),
    re.compile(r"^(\d{4})-(\d{2})$"),
    re.compile(r"^(\d{4})-(\d{2})-(\d{2})(?:[T ].*)?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})(?:\d{6}(?:\.\d+)?)?(?:Z|[+-]\d{4})?$"),  # LDAP GeneralizedTime
)


# --- values ----------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class PartialDate:
    """ORCID's fuzzy date: a year, optionally a month, optionally a day."""

    year: int
    month: int | None = None
    day: int | None = None

    def __post_init__(self) -> None:
        if not 1900 <= self.year <= 2100:  # orcid-model common-3.0.xsd ``year``: 1900 to 2100
            raise ValueError("year out of range")
        if self.day is not None and self.month is None:
            raise ValueError("a day needs a month")
        if self.month is not None:
            date(self.year, self.month, self.day or 1)  # raises ValueError when impossible

    @classmethod
    def of(cls, value: date | datetime) -> "PartialDate":
        return cls(value.year, value.month, value.day)

    @classmethod
    def parse(cls, text: str) -> "PartialDate | None":
        """``2021``, ``2021-09``, ``2021-09-01`` (ISO, time ignored) or LDAP ``20210901000000Z``;
        None when it is none of these."""
        text = (text or "").strip()
        for pattern in _DATE_FORMATS:
            m = pattern.match(text)
            if m:
                parts = [int(p) for p in m.groups() if p is not None]
                try:
                    return cls(*parts)
                except ValueError:
                    return None
        return None

    def iso(self) -> str:
        out = f"{self.year:04d}"
        if self.month is not None:
            out += f"-{self.month:02d}"
        if self.day is not None:
            out += f"-{self.day:02d}"
        return out

    def _key(self) -> tuple[int, int, int]:
        return (self.year, self.month or 0, self.day or 0)

    def after(self, other: "PartialDate") -> bool:
        return self._key() > other._key()


@dataclass(frozen=True)
class DesiredItem:
    """One affiliation that should be on the record (before it gets a put-code)."""

    kind: str
    department: str | None = None
    role: str | None = None
    start: PartialDate | None = None


# --- what should be on the record -------------------------------------------------------
def _values(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, Iterable):
        return [v for v in value if isinstance(v, str)]
    return []


def _first(value: Any) -> str | None:
    for v in _values(value):
        v = " ".join(v.split())
        if v:
            return v[:MAX_TEXT]
    return None


def desired_items(
    settings: AffiliationSettings, attributes: Mapping[str, Any], link_date: date | datetime
) -> list[DesiredItem]:
    """The items the institution's attributes call for, at most one per kind, sorted by kind.

    ``attributes`` are SATOSA internal attributes (names matched case-insensitively, values
    lists of strings). Scoped values (``faculty@example.org``) count when their scope is in
    ``settings.scopes`` (or when no scopes are configured). The start date comes from
    ``start_date_attribute`` when it holds a readable date, else from ``link_date``.
    """
    attrs = {str(k).lower(): v for k, v in (attributes or {}).items()}
    kinds: set[str] = set()
    for name in settings.affiliation_attributes:
        for raw in _values(attrs.get(name)):
            value, _, scope = raw.strip().partition("@")
            if scope and settings.scopes and scope.lower() not in settings.scopes:
                continue
            kind = settings.kind_for(value)
            if kind:
                kinds.add(kind)
    if not kinds:
        return []
    department = _first(attrs.get(settings.department_attribute)) if settings.department_attribute else None
    role = _first(attrs.get(settings.role_attribute)) if settings.role_attribute else None
    start = None
    if settings.start_date_attribute:
        text = _first(attrs.get(settings.start_date_attribute))
        start = PartialDate.parse(text) if text else None
    if start is None:
        start = PartialDate.of(link_date)
    return [DesiredItem(kind, department, role, start) for kind in sorted(kinds)]


def self_external_id(stored_user_key: str, orcid: str, kind: str, org_id: str) -> str:
    """A stable, opaque value for the item's ``self`` external id (no user key in clear)."""
    digest = hashlib.sha256("\x1f".join(("satosa-orcid/affiliation/v1", stored_user_key, orcid, kind, org_id)).encode())
    return SELF_ID_PREFIX + digest.hexdigest()[:32]


# --- the desired state as stored in the outbox ------------------------------------------
def present_state(settings: AffiliationSettings, item: DesiredItem) -> dict[str, Any]:
    """The JSON kept in the outbox for an item that should be on the record."""
    org = settings.organization
    return {
        "present": True,
        "kind": item.kind,
        "department": item.department,
        "role": item.role,
        "start": item.start.iso() if item.start else None,
        "organization": {
            "name": org.name, "city": org.city, "region": org.region, "country": org.country,
            "disambiguated_id": org.disambiguated_id, "disambiguation_source": org.disambiguation_source,
        },
        "external_id_type": settings.external_id_type,
    }


def gone_state(previous: Mapping[str, Any], today: date, on_leave: str) -> dict[str, Any]:
    """The JSON for an item whose affiliation ended: the last known item, end-dated today
    (or marked for deletion)."""
    state = dict(previous)
    state["present"] = False
    state["delete"] = on_leave == "delete"
    state["end"] = PartialDate.of(today).iso()
    return state


def state_hash(state: Mapping[str, Any]) -> str:
    """What the fast path compares. A gone item hashes the same whatever its end date, so a
    person who has left does not cause a write on every later login."""
    if not state.get("present"):
        return hashlib.sha256(f"gone:{state.get('kind')}:{bool(state.get('delete'))}".encode()).hexdigest()
    canonical = json.dumps(state, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


__all__ = [
    "DesiredItem", "PartialDate", "desired_items", "self_external_id",
    "present_state", "gone_state", "state_hash",
    # the settings and the item kinds are config types; named here for the modules that use them with these rules
    "AffiliationSettings", "KINDS",
]
