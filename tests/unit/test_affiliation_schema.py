"""Every employment/education body the worker can send obeys ORCID's v3.0 rules.

The checker below is written from the rules of orcid-model's ``record_3.0/employment-3.0.xsd``,
``education-3.0.xsd`` and ``common_3.0/common-3.0.xsd`` (ORCID-Source's ``JSONInputValidator``
checks JSON input against them; a violation is 400 9047) and from ORCID-Source's v3
``ActivityValidator.validateAffiliation`` (9045, 9060, 9049, 9055). It is not generated from
the XSDs and shares no code with the plugin. The bodies come from the plugin's own path:
attributes -> ``desired_items`` -> ``present_state`` / ``gone_state`` -> ``affiliation_body``,
for POST and PUT, over generated settings and attributes.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hyp_settings, strategies as st

from satosa_orcid_plugin.affiliations import desired_items, gone_state, present_state, self_external_id
from satosa_orcid_plugin.config import _ISO_COUNTRIES, ConfigError, parse_affiliations
from satosa_orcid_plugin.orcid_records import affiliation_body

# --- the rules ------------------------------------------------------------------------------
LONG_TEXT = 4000  # common:long-text: non-empty-string, maxLength 4000
SHORT_TEXT = 350  # common:short-text: non-empty-string, maxLength 350
YEAR, MONTH, DAY = (1900, 2100), (1, 12), (1, 31)  # common:year / month / day
# ORCID-Source orcid-core OrgDisambiguatedSourceType (named by common-3.0.xsd's
# disambiguation-source documentation).
DISAMBIGUATION_SOURCES = {"RINGGOLD", "GRID", "FUNDREF", "LEI", "ROR"}
RELATIONSHIPS = {"self", "part-of", "version-of", "funded-by"}  # common:relationship-type -> orcid-model Relationship
# common:affiliation's sequence (plus the put-code attribute); visibility is the server's.
AFFILIATION_KEYS = {"put-code", "department-name", "role-title", "start-date", "end-date", "organization", "url",
                    "external-ids"}


def _non_empty(value: Any) -> bool:
    """common:non-empty-string: at least one character that is not a space, CR or LF."""
    return isinstance(value, str) and re.search(r"[^\s]", value) is not None


def _text(problems: list[str], where: str, value: Any, limit: int) -> None:
    if not _non_empty(value):
        problems.append(f"{where}: empty")
    elif len(value) > limit:
        problems.append(f"{where}: {len(value)} > {limit} characters")


def _fuzzy_date(problems: list[str], where: str, value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, dict) or not set(value) <= {"year", "month", "day"} or "year" not in value:
        problems.append(f"{where}: a fuzzy-date needs a year (then month, then day)")
        return None
    if "day" in value and "month" not in value:
        problems.append(f"{where}: a day without a month")
    parts = []
    for name, (low, high) in (("year", YEAR), ("month", MONTH), ("day", DAY)):
        if name not in value:
            break
        node = value[name]
        text = node.get("value") if isinstance(node, dict) else None
        if not isinstance(text, str) or not text.isdigit() or not low <= int(text) <= high:
            problems.append(f"{where}.{name}: {text!r} outside {low}-{high}")
            return None
        parts.append(int(text))
    if len(parts) == 3:  # ActivityValidator.validateFuzzyDate: the date must exist (9049)
        try:
            date(*parts)
        except ValueError:
            problems.append(f"{where}: {parts} does not exist (9049)")
    return tuple(parts)


def schema_problems(body: Any, *, put: bool) -> list[str]:
    problems: list[str] = []
    if not isinstance(body, dict):
        return ["not an object"]
    if set(body) - AFFILIATION_KEYS:
        problems.append(f"unknown elements {sorted(set(body) - AFFILIATION_KEYS)}")
    if put != ("put-code" in body):  # 9024 on POST; 9019 on PUT without it
        problems.append("put-code present on POST or missing on PUT")
    if "put-code" in body and (not isinstance(body["put-code"], int) or body["put-code"] < 0):
        problems.append("put-code is not a non-negative integer")
    for key in ("department-name", "role-title"):
        if key in body:
            _text(problems, key, body[key], LONG_TEXT)
    dates = {key: _fuzzy_date(problems, key, body[key]) for key in ("start-date", "end-date") if key in body}
    start, end = dates.get("start-date"), dates.get("end-date")
    if start and end:  # FuzzyDateUtils.compareTo: up to the first part missing on either side (9055)
        n = min(len(start), len(end))
        if start[:n] > end[:n]:
            problems.append("start-date after end-date (9055)")
    org = body.get("organization")
    if not isinstance(org, dict):  # required for employment/education by validateAffiliation (9046)
        problems.append("organization missing")
        org = {}
    _text(problems, "organization.name", org.get("name"), LONG_TEXT)
    address = org.get("address")
    if not isinstance(address, dict) or not set(address) <= {"city", "region", "country"}:
        problems.append("organization.address missing or with unknown elements")
        address = {}
    for key in ("city", "region"):
        if key in address:
            _text(problems, f"address.{key}", address[key], LONG_TEXT)
    if "city" not in address:
        problems.append("address.city missing (9060)")
    if address.get("country") not in _ISO_COUNTRIES:  # Iso3166Country enum (checked below to be ORCID's)
        problems.append(f"address.country {address.get('country')!r} is not an ISO 3166 code ORCID knows (9060/9047)")
    disamb = org.get("disambiguated-organization")
    if not isinstance(disamb, dict):  # validateDisambiguatedOrg: 9045
        problems.append("disambiguated-organization missing (9045)")
    else:
        _text(problems, "disambiguated-organization-identifier", disamb.get("disambiguated-organization-identifier"),
              SHORT_TEXT)
        if disamb.get("disambiguation-source") not in DISAMBIGUATION_SOURCES:
            problems.append(f"disambiguation-source {disamb.get('disambiguation-source')!r} unknown")
    ext = body.get("external-ids")
    if ext is not None:
        if not isinstance(ext, dict) or not isinstance(ext.get("external-id"), list):
            problems.append("external-ids is not {'external-id': [...]}")
        else:
            for i, e in enumerate(ext["external-id"]):
                for key in ("external-id-type", "external-id-value"):
                    if not _non_empty(e.get(key)):
                        problems.append(f"external-id[{i}].{key} empty")
                if e.get("external-id-relationship") not in RELATIONSHIPS | {None}:
                    problems.append(f"external-id[{i}].relationship unknown")
    return problems


def test_the_country_list_is_orcids_iso3166_enum():
    # orcid-model org.orcid.jaxb.model.common.Iso3166Country: the ISO 3166-1 alpha-2 codes
    # plus XK (Kosovo); 250 values, no UK or EU.
    assert len(_ISO_COUNTRIES) == 250 and "XK" in _ISO_COUNTRIES and not {"UK", "EU"} & _ISO_COUNTRIES
    assert all(re.fullmatch(r"[A-Z]{2}", c) for c in _ISO_COUNTRIES)


def test_the_checker_catches_what_orcid_refuses():
    good = {"organization": {"name": "U", "address": {"city": "C", "country": "US"},
                             "disambiguated-organization": {"disambiguated-organization-identifier": "https://ror.org/05qwgg493",
                                                            "disambiguation-source": "ROR"}}}
    assert schema_problems(good, put=False) == []
    bad = [
        {**good, "department-name": "x" * 4001},
        {**good, "role-title": " \n"},
        {**good, "start-date": {"year": {"value": "2101"}}},
        {**good, "start-date": {"year": {"value": "2020"}, "day": {"value": "01"}}},
        {**good, "start-date": {"year": {"value": "2021"}, "month": {"value": "02"}, "day": {"value": "29"}}},
        {**good, "start-date": {"year": {"value": "2022"}}, "end-date": {"year": {"value": "2021"}}},
        {**good, "organization": {**good["organization"], "address": {"country": "US"}}},
        {**good, "organization": {**good["organization"], "address": {"city": "C", "country": "UK"}}},
        {**good, "organization": {**good["organization"], "disambiguated-organization": {
            "disambiguated-organization-identifier": "1", "disambiguation-source": "ISNI"}}},
        {**good, "external-ids": {"external-id": [{"external-id-type": "", "external-id-value": "v"}]}},
        {**good, "put-code": 1},
    ]
    for body in bad:
        assert schema_problems(body, put=False), body


# --- what the worker sends --------------------------------------------------------------------
_text_values = st.one_of(
    st.text(min_size=0, max_size=20),
    st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", " ", "\u00a0", "\n"]), st.integers(3990, 4100)),
)
_dates = st.one_of(
    st.sampled_from(["1899-12-31", "1900", "1900-01-01", "2100-12-31", "2101-01-01", "2024-02-29", "2023-02-29",
                     "20190901000000Z", "2019-09", "not a date", ""]),
    st.dates(date(1890, 1, 1), date(2110, 12, 31)).map(date.isoformat),
)
_orgs = st.sampled_from([
    {"name": "Boston University", "city": "Boston", "region": "Massachusetts", "country": "US",
     "disambiguated_id": "https://ror.org/05qwgg493", "disambiguation_source": "ROR"},
    {"name": "Boston University", "city": "Boston", "country": "US", "disambiguated_id": "05qwgg493"},
    {"name": "Boston University", "city": "Boston", "country": "us", "disambiguated_id": "1846",
     "disambiguation_source": "RINGGOLD"},
    {"name": "Boston University", "city": "Boston", "country": "US", "disambiguated_id": "grid.189504.1",
     "disambiguation_source": "GRID"},
    {"name": "National Science Foundation", "city": "Alexandria", "region": "Virginia", "country": "US",
     "disambiguated_id": "10.13039/100000001", "disambiguation_source": "FUNDREF"},
    {"name": "Kosovo Example", "city": "Prishtina", "country": "XK", "disambiguated_id": "5493001KJTIIGC8Y1R12",
     "disambiguation_source": "LEI"},
    {"name": "U" * 4100, "city": "C" * 4000, "region": "R" * 4000, "country": "DE",
     "disambiguated_id": "https://ror.org/05qwgg493"},
    {"name": "U", "city": "C" * 4001, "country": "DE", "disambiguated_id": "https://ror.org/05qwgg493"},  # refused
])


@hyp_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(org=_orgs, values=st.lists(st.sampled_from(["faculty", "staff", "employee", "student", "member",
                                                     "Faculty@bu.edu", "alum"]), max_size=4),
       department=_text_values, role=_text_values, start=_dates, on_leave=st.sampled_from(["end_date", "delete"]),
       left=st.dates(date(1995, 1, 1), date(2099, 12, 31)), put_code=st.one_of(st.none(), st.integers(1, 10**9)),
       ext_type=st.sampled_from(["other-id", "source-work-id", "my_local-id"]))
def test_every_body_the_worker_can_send_obeys_orcids_v3_rules(org, values, department, role, start, on_leave, left,
                                                                put_code, ext_type):
    try:
        settings = parse_affiliations({"organization": dict(org), "department_attribute": "ou", "role_attribute": "title",
                                       "start_date_attribute": "hiredate", "on_leave": on_leave,
                                       "external_id_type": ext_type})
    except ConfigError:
        return  # refused at start-up: never sent
    attributes = {"edupersonaffiliation": values, "ou": [department], "title": [role], "hiredate": [start]}
    linked = datetime(2024, 3, 5, tzinfo=timezone.utc)
    for item in desired_items(settings, attributes, linked):
        present = present_state(settings, item)
        self_id = self_external_id("user-key", "0000-0002-1825-0097", item.kind, settings.organization.disambiguated_id)
        states = [present, gone_state(present, left, on_leave), {**gone_state(present, left, on_leave), "start": None}]
        for state in states:
            if state.get("delete"):
                continue  # a DELETE sends no body
            body = affiliation_body(state, self_id, put_code=put_code)
            assert schema_problems(body, put=put_code is not None) == [], body
