"""The items the attributes call for, their states, and the ORCID v3.0 bodies."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from satosa_orcid_plugin.affiliations import (
    DesiredItem,
    PartialDate,
    desired_items,
    gone_state,
    present_state,
    self_external_id,
    state_hash,
)
from satosa_orcid_plugin.config import AffiliationSettings, ConfigError, parse_affiliations
from satosa_orcid_plugin.orcid_records import affiliation_body

LINKED = datetime(2024, 3, 5, 10, 0, tzinfo=timezone.utc)
ORG = {"name": "Boston University", "city": "Boston", "region": "Massachusetts", "country": "US",
       "disambiguated_id": "https://ror.org/05qwgg493", "disambiguation_source": "ROR"}


def settings(**extra) -> AffiliationSettings:
    raw = {"organization": dict(ORG), "department_attribute": "ou", "role_attribute": "title"}
    raw.update(extra)
    parsed = parse_affiliations(raw)
    assert parsed is not None
    return parsed


def test_custom_kinds_can_add_and_drop_values():
    s = settings(kinds={"faculty": "employment", "affiliate": "employment", "student": "none"})
    assert s.kind_for("Affiliate") == "employment"
    assert s.kind_for("student") is None


# --- desired items -----------------------------------------------------------------------
def test_faculty_and_staff_make_one_employment_with_department_role_and_link_date():
    items = desired_items(settings(), {"eduPersonAffiliation": ["Faculty", "staff", "member"],
                                       "OU": ["Chemistry", "Physics"], "title": ["  Research   Scientist "]}, LINKED)
    assert items == [DesiredItem("employment", "Chemistry", "Research Scientist", PartialDate(2024, 3, 5))]


def test_student_and_employee_make_two_items_sorted_by_kind():
    items = desired_items(settings(), {"edupersonaffiliation": ["student", "employee"]}, LINKED)
    assert [i.kind for i in items] == ["education", "employment"]


def test_only_member_or_nothing_means_no_items():
    assert desired_items(settings(), {"edupersonaffiliation": ["member", "affiliate"]}, LINKED) == []
    assert desired_items(settings(), {}, LINKED) == []


def test_scoped_affiliations_count_only_for_configured_scopes():
    s = settings(scopes=["bu.edu"])
    attrs = {"edupersonscopedaffiliation": ["faculty@bu.edu", "student@other.example"]}
    assert [i.kind for i in desired_items(s, attrs, LINKED)] == ["employment"]
    assert [i.kind for i in desired_items(settings(), attrs, LINKED)] == ["education", "employment"]


@pytest.mark.parametrize(("value", "expected"), [
    ("2019", PartialDate(2019)),
    ("2019-09", PartialDate(2019, 9)),
    ("2019-09-01", PartialDate(2019, 9, 1)),
    ("2019-09-01T08:00:00Z", PartialDate(2019, 9, 1)),
    ("20190901000000Z", PartialDate(2019, 9, 1)),
    ("not a date", PartialDate(2024, 3, 5)),
    ("2019-13-01", PartialDate(2024, 3, 5)),
    ("2101-01-01", PartialDate(2024, 3, 5)),  # beyond ORCID's last year (2100): ORCID would answer 400
    ("2100-12-31", PartialDate(2100, 12, 31)),
])
def test_start_date_from_an_attribute_or_the_link_date(value, expected):
    s = settings(start_date_attribute="hireDate")
    items = desired_items(s, {"edupersonaffiliation": ["staff"], "hiredate": [value]}, LINKED)
    assert items[0].start == expected


def test_long_values_are_cut_to_orcids_limit():
    # orcid-model common-3.0.xsd: department-name and role-title are ``long-text``, 4,000 characters
    items = desired_items(settings(), {"edupersonaffiliation": ["staff"], "ou": ["x" * 4500], "title": ["y" * 3999]}, LINKED)
    assert len(items[0].department) == 4000 and len(items[0].role) == 3999
    assert len(settings(organization={**ORG, "name": "U" * 4500}).organization.name) == 4000
    for key in ("city", "region"):  # long-text too, but cutting an address would change it: refused
        with pytest.raises(ConfigError, match=f"affiliations.organization.{key}"):
            settings(organization={**ORG, key: "C" * 4001})


def test_an_item_with_an_end_date_and_no_start_date_is_sent_as_it_is():
    # ORCID accepts it (v3 ActivityValidator.validateAffiliation has no missing-start rule for
    # affiliations), so no start date is invented from the end date.
    s = settings()
    item = desired_items(s, {"edupersonaffiliation": ["staff"]}, LINKED)[0]
    state = {**gone_state(present_state(s, item), date(2025, 6, 30), "end_date"), "start": None}
    body = affiliation_body(state, "id", put_code=7)
    assert "start-date" not in body
    assert body["end-date"] == {"year": {"value": "2025"}, "month": {"value": "06"}, "day": {"value": "30"}}


@pytest.mark.parametrize(("stored", "sent"), [("2100-12-31", "2100"), ("1900", "1900"), ("2101-01-01", None),
                                               ("1899-12-31", None)])
def test_years_outside_1900_to_2100_are_never_sent(stored, sent):
    # orcid-model common-3.0.xsd ``year``: 1900-2100; ORCID would answer 400 9047.
    s = settings()
    state = {**present_state(s, desired_items(s, {"edupersonaffiliation": ["staff"]}, LINKED)[0]), "start": stored}
    body = affiliation_body(state, "id")
    assert (body["start-date"]["year"]["value"] if "start-date" in body else None) == sent


# --- bodies --------------------------------------------------------------------------------
def test_post_body_is_orcids_v3_employment_with_a_self_external_id():
    s = settings()
    item = desired_items(s, {"edupersonaffiliation": ["faculty"], "ou": ["Chemistry"], "title": ["Professor"]}, LINKED)[0]
    body = affiliation_body(present_state(s, item), "satosa-orcid-abc")
    assert body == {
        "department-name": "Chemistry",
        "role-title": "Professor",
        "start-date": {"year": {"value": "2024"}, "month": {"value": "03"}, "day": {"value": "05"}},
        "organization": {
            "name": "Boston University",
            "address": {"city": "Boston", "region": "Massachusetts", "country": "US"},
            "disambiguated-organization": {"disambiguated-organization-identifier": "https://ror.org/05qwgg493",
                                           "disambiguation-source": "ROR"},
        },
        "external-ids": {"external-id": [{"external-id-type": "other-id", "external-id-value": "satosa-orcid-abc",
                                          "external-id-relationship": "self"}]},
    }
    assert "put-code" not in body  # ORCID: 400 9024 on create


def test_put_body_carries_the_put_code_and_optional_fields_are_left_out():
    s = parse_affiliations({"organization": {k: v for k, v in ORG.items() if k != "region"}})
    item = desired_items(s, {"edupersonaffiliation": ["student"]}, LINKED)[0]
    body = affiliation_body(present_state(s, item), "id", put_code=54563)
    assert body["put-code"] == 54563
    assert "department-name" not in body and "role-title" not in body
    assert body["organization"]["address"] == {"city": "Boston", "country": "US"}


def test_gone_items_are_end_dated_never_before_their_start():
    s = settings(start_date_attribute="hiredate")
    item = desired_items(s, {"edupersonaffiliation": ["staff"], "hiredate": ["2030-01-01"]}, LINKED)[0]
    gone = gone_state(present_state(s, item), date(2025, 6, 30), "end_date")
    body = affiliation_body(gone, "id", put_code=7)
    assert body["start-date"]["year"]["value"] == "2030"
    assert body["end-date"] == body["start-date"]  # clamped: ORCID rejects start after end
    normal = affiliation_body(gone_state(present_state(s, item), date(2031, 2, 1), "end_date"), "id", put_code=7)
    assert normal["end-date"] == {"year": {"value": "2031"}, "month": {"value": "02"}, "day": {"value": "01"}}


def test_the_hash_of_a_gone_item_does_not_depend_on_the_day_it_was_noticed():
    s = settings()
    state = present_state(s, desired_items(s, {"edupersonaffiliation": ["staff"]}, LINKED)[0])
    assert state_hash(gone_state(state, date(2025, 1, 1), "end_date")) == state_hash(gone_state(state, date(2026, 1, 1), "end_date"))
    assert state_hash(gone_state(state, date(2025, 1, 1), "end_date")) != state_hash(gone_state(state, date(2025, 1, 1), "delete"))
    changed = present_state(s, DesiredItem("employment", "Physics", None, PartialDate(2024, 3, 5)))
    assert state_hash(state) != state_hash(changed)


def test_self_external_id_is_stable_distinct_and_opaque():
    a = self_external_id("alice@example.org", "0000-0002-1825-0097", "employment", "https://ror.org/05qwgg493")
    assert a == self_external_id("alice@example.org", "0000-0002-1825-0097", "employment", "https://ror.org/05qwgg493")
    assert a != self_external_id("alice@example.org", "0000-0002-1825-0097", "education", "https://ror.org/05qwgg493")
    assert a != self_external_id("bob@example.org", "0000-0002-1825-0097", "employment", "https://ror.org/05qwgg493")
    assert "alice" not in a and len(a) <= 64
