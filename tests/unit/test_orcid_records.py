"""ORCID's JSON read without HTTP: token responses, error bodies and affiliation summaries."""
from __future__ import annotations

import pytest

from satosa_orcid_plugin.errors import (
    DuplicateItem,
    OrcidApiError,
    OrcidOAuthError,
    OrcidProtocolError,
    OrcidUnavailable,
    OrcidValidationError,
    TokenRevoked,
)
from satosa_orcid_plugin.orcid_id import OrcidId
from satosa_orcid_plugin.orcid_records import (
    affiliation_summaries,
    member_error,
    oauth_error,
    read_token_response,
)

JOSIAH = "0000-0002-1825-0097"


def test_token_response_fields_are_read_leniently_and_never_shown():
    grant = read_token_response({"access_token": "at-1", "refresh_token": 5, "expires_in": 631138518.0,
                                 "scope": "/authenticate  /activities/update", "name": "  ", "orcid": JOSIAH},
                                sandbox=True)
    assert grant.orcid == OrcidId(JOSIAH, sandbox=True)
    assert (grant.refresh_token, grant.expires_in, grant.name) == (None, 631138518, None)
    assert grant.scope == ("/authenticate", "/activities/update")
    assert (grant.amr, dict(grant.id_token_claims)) == (None, {})
    assert "at-1" not in repr(grant)


@pytest.mark.parametrize("body, match", [
    ({"orcid": JOSIAH}, "access_token"),
    ({"access_token": "", "orcid": JOSIAH}, "access_token"),
    ({"access_token": "x", "orcid": None}, "orcid"),
    ({"access_token": "x", "orcid": "0000-0002-1825-0098"}, "orcid"),
])
def test_a_token_response_without_token_or_id_is_a_protocol_error(body, match):
    with pytest.raises(OrcidProtocolError, match=match):
        read_token_response(body, sandbox=False)


def test_oauth_error_bodies():
    err = oauth_error("token", 400, {"error": "invalid_grant", "error_description": "Reused authorization code: abc"})
    assert type(err) is OrcidOAuthError and (err.error_code, err.status) == ("invalid_grant", 400)
    assert err.developer_message == "Reused authorization code: abc"
    assert isinstance(oauth_error("userinfo", 401, {"error": "invalid_token"}), TokenRevoked)
    bare = oauth_error("token", 401, None)
    assert (bare.error_code, bare.developer_message) == ("invalid_client", "Bad client credentials")
    other = oauth_error("revoke", 403, ["not", "an", "object"])
    assert (other.error_code, other.status) == ("http_403", 403)


def test_member_error_bodies():
    dup = member_error("employment.post", 409, {
        "response-code": 409, "error-code": 9021,
        "developer-message": "409 Conflict: You have already added this activity (matched by external identifiers), "
                             "please see element with put-code 1234."})
    assert isinstance(dup, DuplicateItem) and dup.put_code == 1234 and dup.error_code == 9021
    bad = member_error("employment.post", 400, {"error-code": "9045", "developer-message": "unknown org"})
    assert isinstance(bad, OrcidValidationError) and bad.error_code == 9045 and bad.status == 400
    gone = member_error("employment.delete", 404, None)
    assert type(gone) is OrcidApiError and gone.error_code is None
    assert gone.developer_message == "ORCID employment.delete refused the request"
    revoked = member_error("employment.post", 401, {"error": "invalid_token",
                                                    "error_description": "Invalid access token: secret-token"})
    assert isinstance(revoked, TokenRevoked) and "secret-token" not in str(revoked)


def test_affiliation_summaries_skip_what_has_no_put_code():
    body = {"affiliation-group": [
        {"summaries": [{"employment-summary": {
            "put-code": 7, "source": {"source-client-id": {"path": "APP-1"}},
            "department-name": "Chemistry", "role-title": None,
            "start-date": {"year": {"value": "2021"}, "month": {"value": "09"}, "day": None},
            "organization": {"name": "BU", "disambiguated-organization": {
                "disambiguated-organization-identifier": "https://ror.org/05qwgg493"}},
            "external-ids": {"external-id": [{"external-id-type": "other-id", "external-id-value": "s1",
                                              "external-id-relationship": "self"}]},
        }}]},
        {"summaries": [{"employment-summary": {"put-code": "not a number"}}, None]},
        None,
    ]}
    [summary] = affiliation_summaries("employment", body)
    assert (summary.put_code, summary.source_client_id, summary.department, summary.role) == (7, "APP-1", "Chemistry", None)
    assert (summary.start, summary.end, summary.org_id) == ("2021-09", None, "https://ror.org/05qwgg493")
    assert summary.has_self_id("s1") and not summary.has_self_id("s2")
    assert affiliation_summaries("education", body) == []


def test_only_a_401_invalid_token_is_a_revocation():
    # ORCID-Source OrcidBearerTokenFilter: introspection that fails is a 401 invalid_token too,
    # but says so; the worker retries it instead of marking the link revoked.
    unlooked = member_error("employment.post", 401, {
        "error": "invalid_token",
        "error_description": "Invalid access token: Unable to obtain information from the authorization server: 5e1f-secret"})
    assert isinstance(unlooked, OrcidUnavailable) and "5e1f-secret" not in str(unlooked)
    forbidden = member_error("employments.get", 403, {"error": "forbidden", "error_description": "Forbidden"})
    assert not isinstance(forbidden, TokenRevoked) and forbidden.status == 403
    assert not isinstance(oauth_error("userinfo", 403, {"error": "access_denied",
                                                        "error-description": "access_token is invalid"}), TokenRevoked)
    assert not isinstance(oauth_error("userinfo", 400, {"error": "invalid_token"}), TokenRevoked)
    echoed = oauth_error("userinfo", 401, {"error": "invalid_token", "error_description": "Invalid access token: 5e1f-secret"})
    assert isinstance(echoed, TokenRevoked) and "5e1f-secret" not in str(echoed)
