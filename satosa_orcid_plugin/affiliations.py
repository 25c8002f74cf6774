"""What should be on a researcher's ORCID record: settings, desired items, ORCID v3.0 bodies.

Pure functions only (no database, no HTTP). The micro-service config gains an optional
``affiliations:`` block::

    affiliations:
      organization:
        name: Boston University
        city: Boston
        region: Massachusetts            # optional
        country: US                      # ISO 3166-1 alpha-2
        disambiguated_id: https://ror.org/05qwgg493
        disambiguation_source: ROR       # ROR (recommended), RINGGOLD, GRID, FUNDREF, LEI
      kinds:                             # eduPersonAffiliation value -> item (defaults shown)
        faculty: employment
        staff: employment
        employee: employment
        student: education
      affiliation_attributes: [edupersonaffiliation, edupersonscopedaffiliation]
      scopes: [bu.edu]                   # optional: only these scopes of scoped affiliations
      department_attribute: ou           # optional
      role_attribute: title              # optional
      start_date_attribute: null         # optional; default: the date of the link
      on_leave: end_date                 # end_date (PUT with end-date) | delete
      sync:                              # the worker (satosa-orcid sync run)
        rate_per_second: 23              # shared by every worker; ORCID allows 24/s
        burst: 36                        # ORCID allows bursts of 40

Each item carries a ``self`` external id derived from the stored user key, the iD, the kind
and the organisation, so that ORCID answers 409 instead of storing a duplicate (orcid-facts
§4.4) whatever crashes or retries happen.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Iterable, Mapping

from .errors import ConfigError

EMPLOYMENT, EDUCATION = "employment", "education"
KINDS = (EMPLOYMENT, EDUCATION)
DEFAULT_KINDS: dict[str, str] = {"faculty": EMPLOYMENT, "staff": EMPLOYMENT, "employee": EMPLOYMENT, "student": EDUCATION}
DEFAULT_AFFILIATION_ATTRIBUTES = ("edupersonaffiliation", "edupersonscopedaffiliation")
ON_LEAVE = ("end_date", "delete")
SOURCES = ("ROR", "RINGGOLD", "GRID", "FUNDREF", "LEI")
DEFAULT_EXTERNAL_ID_TYPE = "other-id"
SELF_ID_PREFIX = "satosa-orcid-"
# ORCID's documented member API limit (orcid-facts §4.6); the defaults leave room for
# requests already on the wire when several workers share the bucket.
ORCID_RATE_LIMIT, ORCID_BURST = 24.0, 40
MAX_TEXT = 1000  # department-name and role-title length limit in the v3.0 schema

_ISO_COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW
""".split())
_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_ROR = re.compile(r"^(?:https?://ror\.org/)?(0[0-9a-hjkmnp-tv-z]{6}[0-9]{2})$", re.IGNORECASE)
_ID_FORMATS = {
    "RINGGOLD": re.compile(r"^[0-9]{1,10}$"),
    "GRID": re.compile(r"^grid\.[0-9]+\.[0-9a-f]+$"),
    "FUNDREF": re.compile(r"^(?:https?://dx\.doi\.org/|https?://doi\.org/)?10\.13039/[0-9a-zA-Z]+$"),
    "LEI": re.compile(r"^[0-9A-Z]{18}[0-9]{2}$"),
}
_EXTERNAL_ID_TYPE = re.compile(r"^[a-z][a-z0-9_-]{1,63}$")
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
        if not 1900 <= self.year <= 2200:
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

    def orcid(self) -> dict[str, Any]:
        out: dict[str, Any] = {"year": {"value": f"{self.year:04d}"}}
        if self.month is not None:
            out["month"] = {"value": f"{self.month:02d}"}
        if self.day is not None:
            out["day"] = {"value": f"{self.day:02d}"}
        return out

    def _key(self) -> tuple[int, int, int]:
        return (self.year, self.month or 0, self.day or 0)

    def after(self, other: "PartialDate") -> bool:
        return self._key() > other._key()


@dataclass(frozen=True)
class Organization:
    name: str
    city: str
    country: str
    disambiguated_id: str
    disambiguation_source: str = "ROR"
    region: str | None = None

    def orcid(self) -> dict[str, Any]:
        address: dict[str, str] = {"city": self.city, "country": self.country}
        if self.region:
            address = {"city": self.city, "region": self.region, "country": self.country}
        return {
            "name": self.name,
            "address": address,
            "disambiguated-organization": {
                "disambiguated-organization-identifier": self.disambiguated_id,
                "disambiguation-source": self.disambiguation_source,
            },
        }


@dataclass(frozen=True)
class SyncSettings:
    """How the worker runs. Rate limit numbers are totals across all workers and hosts."""

    rate_per_second: float = 23.0
    burst: int = 36
    batch_size: int = 20
    poll_interval: float = 5.0
    lease_seconds: int = 300
    max_attempts: int = 12
    backoff_base: float = 30.0
    backoff_max: float = 3600.0


@dataclass(frozen=True)
class AffiliationSettings:
    organization: Organization
    kinds: tuple[tuple[str, str], ...] = tuple(DEFAULT_KINDS.items())
    affiliation_attributes: tuple[str, ...] = DEFAULT_AFFILIATION_ATTRIBUTES
    scopes: frozenset[str] = frozenset()
    department_attribute: str | None = None
    role_attribute: str | None = None
    start_date_attribute: str | None = None
    on_leave: str = "end_date"
    external_id_type: str = DEFAULT_EXTERNAL_ID_TYPE
    sync: SyncSettings = field(default_factory=SyncSettings)

    def kind_for(self, value: str) -> str | None:
        value = value.strip().lower()
        for affiliation, kind in self.kinds:
            if affiliation == value:
                return kind
        return None


@dataclass(frozen=True)
class DesiredItem:
    """One affiliation that should be on the record (before it gets a put-code)."""

    kind: str
    department: str | None = None
    role: str | None = None
    start: PartialDate | None = None


# --- config ----------------------------------------------------------------------------
def parse_affiliations(raw: Any, path: str = "affiliations") -> AffiliationSettings | None:
    """Parse the ``affiliations:`` block; None when it is absent or ``enabled: false``."""
    from .config import _Section  # late: config.py imports this module

    if raw is None:
        return None
    s = _Section(raw, path, {
        "enabled", "organization", "kinds", "affiliation_attributes", "scopes", "department_attribute",
        "role_attribute", "start_date_attribute", "on_leave", "external_id_type", "sync",
    })
    if not s.bool("enabled", True):
        return None
    org = _parse_organization(s.section("organization", {
        "name", "city", "region", "country", "disambiguated_id", "disambiguation_source",
    }))
    kinds = _parse_kinds(s)
    attributes = tuple(a.lower() for a in s.list("affiliation_attributes", DEFAULT_AFFILIATION_ATTRIBUTES))
    ext_type = s.str("external_id_type", DEFAULT_EXTERNAL_ID_TYPE)
    if not _EXTERNAL_ID_TYPE.match(ext_type):
        raise ConfigError(s.key("external_id_type"), "must be an ORCID external identifier type such as other-id")

    def attribute(key: str) -> str | None:
        value = s.str(key)
        return value.lower() if value else None

    return AffiliationSettings(
        organization=org,
        kinds=kinds,
        affiliation_attributes=attributes,
        scopes=frozenset(x.lower() for x in s.list("scopes")),
        department_attribute=attribute("department_attribute"),
        role_attribute=attribute("role_attribute"),
        start_date_attribute=attribute("start_date_attribute"),
        on_leave=s.choice("on_leave", ON_LEAVE, default="end_date"),
        external_id_type=ext_type,
        sync=_parse_sync(s.section("sync", {
            "rate_per_second", "burst", "batch_size", "poll_interval", "lease", "max_attempts", "backoff_base", "backoff_max",
        })),
    )


def _parse_organization(s: Any) -> Organization:
    name = s.str("name", required=True)
    city = s.str("city", required=True)  # ORCID: 9060 without city and country
    country = s.str("country", required=True).upper()
    if country not in _ISO_COUNTRIES:
        raise ConfigError(s.key("country"), "must be an ISO 3166-1 alpha-2 country code such as US or DE")
    source = s.str("disambiguation_source", "ROR").upper()
    if source not in SOURCES:
        raise ConfigError(s.key("disambiguation_source"), f"must be one of {', '.join(SOURCES)} (ROR recommended)")
    ident = s.str("disambiguated_id", required=True)
    return Organization(
        name=name[:MAX_TEXT], city=city, country=country, region=s.str("region"),
        disambiguated_id=normalise_org_id(ident, source, s.key("disambiguated_id")), disambiguation_source=source,
    )


def normalise_org_id(ident: str, source: str, key: str = "disambiguated_id") -> str:
    """The identifier as ORCID stores it (ROR: the full https://ror.org/ URL, checksum verified)."""
    ident = ident.strip()
    if source == "ROR":
        m = _ROR.match(ident)
        if not m or not _ror_checksum_ok(m.group(1).lower()):
            raise ConfigError(key, "must be a ROR id such as https://ror.org/05qwgg493 (checksum verified)")
        return f"https://ror.org/{m.group(1).lower()}"
    pattern = _ID_FORMATS[source]
    if not pattern.match(ident):
        raise ConfigError(key, f"is not a {source} identifier")
    if source == "FUNDREF" and not ident.startswith("http"):
        ident = f"http://dx.doi.org/{ident}"  # as ORCID's org database holds FundRef ids
    return ident


def _ror_checksum_ok(ror: str) -> bool:
    number = 0
    for ch in ror[1:7]:
        number = number * 32 + _CROCKFORD.index(ch)
    return int(ror[7:9]) == 98 - (number * 100) % 97


def _parse_kinds(s: Any) -> tuple[tuple[str, str], ...]:
    raw = s.data.get("kinds")
    if raw is None:
        return tuple(DEFAULT_KINDS.items())
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(s.key("kinds"), "must map affiliation values (faculty, student, ...) to employment or education")
    out = []
    for value, kind in raw.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(s.key("kinds"), "keys must be affiliation values such as faculty or student")
        if kind in (None, "none", False):
            continue  # explicitly ignored
        if kind not in KINDS:
            raise ConfigError(f"{s.key('kinds')}.{value}", "must be employment, education or none")
        out.append((value.strip().lower(), kind))
    return tuple(out)


def _parse_sync(s: Any) -> SyncSettings:
    rate = s.number("rate_per_second", 23.0)
    if rate > ORCID_RATE_LIMIT:
        raise ConfigError(s.key("rate_per_second"), f"must not exceed ORCID's limit of {ORCID_RATE_LIMIT:g} requests/s")
    burst = int(s.number("burst", 36))
    if burst > ORCID_BURST:
        raise ConfigError(s.key("burst"), f"must not exceed ORCID's burst of {ORCID_BURST}")
    max_attempts = int(s.number("max_attempts", 12))
    base = s.number("backoff_base", 30.0)
    top = s.number("backoff_max", 3600.0)
    if top < base:
        raise ConfigError(s.key("backoff_max"), "must not be smaller than backoff_base")
    return SyncSettings(
        rate_per_second=rate, burst=max(burst, 1), batch_size=int(s.number("batch_size", 20)),
        poll_interval=s.number("poll_interval", 5.0), lease_seconds=max(s.duration("lease", 300), 1),
        max_attempts=max_attempts, backoff_base=base, backoff_max=top,
    )


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


def affiliation_body(state: Mapping[str, Any], self_id: str, *, put_code: int | None = None) -> dict[str, Any]:
    """The ORCID v3.0 employment/education JSON for an outbox state (orcid-facts §4.2-4.3).

    ``put_code`` goes into the body for PUT (ORCID: 400 9019 when it does not match the URL)
    and must be absent for POST (400 9024).
    """
    org = state["organization"]
    body: dict[str, Any] = {}
    if put_code is not None:
        body["put-code"] = int(put_code)
    if state.get("department"):
        body["department-name"] = state["department"]
    if state.get("role"):
        body["role-title"] = state["role"]
    start = PartialDate.parse(state["start"]) if state.get("start") else None
    if start is not None:
        body["start-date"] = start.orcid()
    if not state.get("present") and state.get("end"):
        end = PartialDate.parse(state["end"])
        if end is not None:
            if start is None:
                body["start-date"] = end.orcid()  # ORCID: an end-date needs a start-date
            elif start.after(end):
                end = start  # ORCID: start must not be after end
            body["end-date"] = end.orcid()
    body["organization"] = Organization(
        name=org["name"], city=org["city"], country=org["country"], region=org.get("region"),
        disambiguated_id=org["disambiguated_id"], disambiguation_source=org["disambiguation_source"],
    ).orcid()
    body["external-ids"] = {"external-id": [{
        "external-id-type": state.get("external_id_type") or DEFAULT_EXTERNAL_ID_TYPE,
        "external-id-value": self_id,
        "external-id-relationship": "self",
    }]}
    return body


__all__ = [
    "AffiliationSettings", "DesiredItem", "Organization", "PartialDate", "SyncSettings",
    "parse_affiliations", "desired_items", "affiliation_body", "self_external_id",
    "present_state", "gone_state", "state_hash", "KINDS", "EMPLOYMENT", "EDUCATION",
]
