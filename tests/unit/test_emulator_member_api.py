"""The emulator's member API (employment/education) is as strict and as lenient as ORCID.

Each rule names the ORCID source it follows: ORCID-Source (``orcid-core`` v3
``ActivityValidator``, ``OrcidCoreExceptionMapper``, ``api_en.properties``,
``orcid-api-common`` ``JSONInputValidator`` and ``APIAuthenticationEntryPoint``), orcid-model's
``common_3.0/common-3.0.xsd``, and https://info.orcid.org/ufaqs/what-are-the-api-limits.
"""
from __future__ import annotations

import copy

import pytest
from werkzeug.test import Client

from satosa_orcid_plugin.devstack.emulator import ClientRegistration, Emulator
from satosa_orcid_plugin.devstack.emulator_member_api import MemberApi, RequestQueue

ISSUER = "http://127.0.0.1:8090"
CB = "https://sp.example.org/orcid/callback"
MEMBER = ClientRegistration("APP-MEMBER0000000001", "member-secret", [CB], member=True, name="Example University")
JOSIAH = "0000-0002-1825-0097"
BODY = {
    "department-name": "Chemistry",
    "role-title": "Professor",
    "start-date": {"year": {"value": "2019"}, "month": {"value": "09"}, "day": {"value": "01"}},
    "organization": {
        "name": "Boston University",
        "address": {"city": "Boston", "region": "Massachusetts", "country": "US"},
        "disambiguated-organization": {"disambiguated-organization-identifier": "https://ror.org/05qwgg493",
                                       "disambiguation-source": "ROR"},
    },
    "external-ids": {"external-id": [{"external-id-type": "other-id", "external-id-value": "x1",
                                      "external-id-relationship": "self"}]},
}


@pytest.fixture
def emu():
    emulator = Emulator(ISSUER, [MEMBER])
    emulator._member_api_state = MemberApi(emulator, rate_limit=False)
    return emulator


@pytest.fixture
def browser(emu):
    return Client(emu)


def token_for(emu, browser, scopes="/read-limited /activities/update"):
    code = emu.issue_code_for(MEMBER.client_id, JOSIAH, scopes, CB)
    body = browser.post("/oauth/token", data={"client_id": MEMBER.client_id, "client_secret": MEMBER.client_secret,
                                              "grant_type": "authorization_code", "code": code, "redirect_uri": CB})
    return body.get_json()["access_token"]


def post(browser, token, body, kind="employment"):
    return browser.post(f"/v3.0/{JOSIAH}/{kind}", json=body, headers={
        "Authorization": f"Bearer {token}", "Accept": "application/vnd.orcid+json"})


def with_(**changes):
    body = copy.deepcopy(BODY)
    for key, value in changes.items():
        path = key.split("__")
        node = body
        for part in path[:-1]:
            node = node[part]
        if value is None:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return body


def year(y, m=None, d=None):
    out = {"year": {"value": y}}
    if m is not None:
        out["month"] = {"value": m}
    if d is not None:
        out["day"] = {"value": d}
    return out


@pytest.fixture
def token(emu, browser):
    return token_for(emu, browser)


# --- dates ------------------------------------------------------------------------------------
def test_an_end_date_without_a_start_date_is_accepted(browser, token):
    # v3 ActivityValidator.validateAffiliation has no missing-start check (funding and research
    # resources have one: MissingStartDateException, 9050).
    assert post(browser, token, with_(**{"start-date": None, "end-date": year("2020")})).status_code == 201


def test_start_after_end_is_9055_with_orcids_message(browser, token):
    # ActivityValidator: StartDateAfterEndDateException -> OrcidCoreExceptionMapper 400 / 9055.
    answer = post(browser, token, with_(**{"start-date": year("2021", "03"), "end-date": year("2021", "02")}))
    assert answer.status_code == 400
    assert answer.get_json()["error-code"] == 9055
    assert answer.get_json()["developer-message"] == "400 Bad Request: End date must come after start date."
    # FuzzyDateUtils.compareTo stops at the first part missing on either side: equal, accepted.
    assert post(browser, token, with_(**{"start-date": year("2021", "03"), "end-date": year("2021")})).status_code == 201


def test_a_date_that_does_not_exist_is_9049(browser, token):
    # ActivityValidator.validateFuzzyDate: yyyy-MM-dd parsed strictly -> InvalidFuzzyDateException, 9049.
    answer = post(browser, token, with_(**{"start-date": year("2021", "02", "30")}))
    assert answer.status_code == 400 and answer.get_json()["error-code"] == 9049
    assert "invalid date: 2021-02-30" in answer.get_json()["developer-message"]


@pytest.mark.parametrize(("date", "ok"), [
    (year("1900"), True), (year("2100", "12", "31"), True),
    (year("1899"), False), (year("2101"), False), (year("2020", "13"), False), (year("2020", "01", "32"), False),
    (year("2020", None, "05"), False), ({"month": {"value": "01"}}, False),
])
def test_years_months_and_days_follow_the_schema_ranges(browser, token, date, ok):
    # common-3.0.xsd ``year`` 1900-2100, ``month`` 1-12, ``day`` 1-31, a day only after a month;
    # JSONInputValidator checks JSON against the XSD: a violation is 400 9047.
    answer = post(browser, token, with_(**{"start-date": date}))
    assert answer.status_code == (201 if ok else 400), answer.get_data(as_text=True)
    if not ok:
        assert answer.get_json()["error-code"] == 9047


# --- texts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["department-name", "role-title", "organization__name"])
def test_long_texts_allow_4000_characters(browser, token, field):
    # common-3.0.xsd: department-name, role-title and organization name are ``long-text``
    # (non-empty, maxLength 4000).
    assert post(browser, token, with_(**{field: "x" * 4000})).status_code == 201
    too_long = post(browser, token, with_(**{field: "x" * 4001}))
    assert too_long.status_code == 400 and too_long.get_json()["error-code"] == 9047
    blank = post(browser, token, with_(**{field: "   "}))
    assert blank.status_code == 400 and blank.get_json()["error-code"] == 9047


# --- external ids -------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [
    {"external-id-type": "satosa-made-up-type", "external-id-value": "v"},  # no relationship, any type
    {"external-id-type": "ringgold", "external-id-value": "v", "external-id-relationship": "part-of"},
])
def test_external_id_types_are_not_checked_against_a_list(browser, token, ext):
    # validateAffiliation does not call ExternalIDValidator; the XSD only wants non-empty strings
    # and a relationship from orcid-model's Relationship enum when there is one.
    assert post(browser, token, with_(**{"external-ids": {"external-id": [ext]}})).status_code == 201


@pytest.mark.parametrize("ext", [
    {"external-id-type": "", "external-id-value": "v"},
    {"external-id-type": "other-id", "external-id-value": " "},
    {"external-id-type": "other-id", "external-id-value": "v", "external-id-relationship": "sibling-of"},
])
def test_empty_external_ids_or_unknown_relationships_are_refused(browser, token, ext):
    answer = post(browser, token, with_(**{"external-ids": {"external-id": [ext]}}))
    assert answer.status_code == 400 and answer.get_json()["error-code"] == 9047


def test_duplicates_are_matched_on_self_ids_or_ids_without_relationship(browser, token):
    # ActivityValidator.checkExternalIdentifiersForDuplicates / areRelationshipsSameAndSelf:
    # equal ids from the same source whose relationships are both self, or both absent -> 409 9021.
    first = post(browser, token, BODY)
    put_code = first.headers["Location"].rsplit("/", 1)[1]
    again = post(browser, token, BODY)
    assert again.status_code == 409 and again.get_json()["error-code"] == 9021
    assert f"put-code {put_code}" in again.get_json()["developer-message"]
    part_of = {"external-id-type": "other-id", "external-id-value": "p1", "external-id-relationship": "part-of"}
    assert post(browser, token, with_(**{"external-ids": {"external-id": [part_of]}})).status_code == 201
    assert post(browser, token, with_(**{"external-ids": {"external-id": [part_of]}})).status_code == 201
    bare = {"external-id-type": "other-id", "external-id-value": "b1"}
    assert post(browser, token, with_(**{"external-ids": {"external-id": [bare]}})).status_code == 201
    assert post(browser, token, with_(**{"external-ids": {"external-id": [bare]}})).status_code == 409


# --- tokens and scopes ---------------------------------------------------------------------------
def test_no_token_is_403_forbidden(browser):
    # orcid-api-common APIAuthenticationEntryPoint: no authentication -> 403 {"error": "forbidden"}.
    answer = browser.post(f"/v3.0/{JOSIAH}/employment", json=BODY, headers={"Accept": "application/vnd.orcid+json"})
    assert answer.status_code == 403 and answer.get_json()["error"] == "forbidden"


def test_a_missing_write_scope_is_403_9038_in_orcids_error_shape(emu, browser):
    # MemberV3ApiServiceDelegatorImpl.createEmployment -> OrcidSecurityManagerImpl.checkScopes ->
    # OrcidAccessControlException -> OrcidCoreExceptionMapper 403 / 9038.
    read_only = token_for(emu, browser, "/read-limited")
    answer = post(browser, read_only, BODY)
    assert answer.status_code == 403
    body = answer.get_json()
    assert body["error-code"] == 9038 and body["response-code"] == 403
    assert set(body) == {"response-code", "developer-message", "user-message", "error-code", "more-info"}


# --- rate limit ----------------------------------------------------------------------------------
def test_the_burst_is_queued_and_slowed_before_503():
    # https://info.orcid.org/ufaqs/what-are-the-api-limits: "Bursts are the number of requests we
    # will allow to be queued before rejecting. Requests in the queue are slowed down to the rate
    # of requests a second. If you exceed the burst, you will get a 503 response."
    now = [100.0]
    queue = RequestQueue(24.0, 40, clock=lambda: now[0])
    waits = [queue.admit() for _ in range(42)]
    assert waits[0] == 0.0
    assert all(w is not None and w > 0 for w in waits[1:41])
    assert waits[40] == pytest.approx(40 / 24)
    assert waits[41] is None  # the 41st queued request is over the burst
    now[0] += 1.0  # a second later 24 have been served: room in the queue again
    assert queue.admit() is not None


def test_the_emulator_sleeps_queued_requests_and_answers_503_beyond_the_burst(emu, browser, token):
    slept: list[float] = []
    api = MemberApi(emu, rate=1.0, burst=2, sleep=slept.append)
    api.queue = RequestQueue(1.0, 2, clock=lambda: 0.0)
    emu._member_api_state = api
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.orcid+json"}
    statuses = [browser.get(f"/v3.0/{JOSIAH}/employments", headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 503]
    assert slept == [1.0, 2.0] and api.rate_delayed == 2 and api.rate_limited == 1
