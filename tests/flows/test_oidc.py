"""SAML upstream, OIDC downstream: an RP using the code flow gets `eduperson_orcid`."""
from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flowkit import connect_link, html_form_fields, path_and_query

JOSIAH = "https://orcid.org/0000-0002-1825-0097"


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture
def oidc(satosa_app):
    config = json.loads(satosa_app.get("/.well-known/openid-configuration").get_data(as_text=True))
    assert "orcid" in config["scopes_supported"]
    return config


def rp_login(client, oidc, demo_layout, idp_respond, scope="openid orcid"):
    params = {"client_id": "demo-rp", "redirect_uri": demo_layout.oidc_redirect_uri, "response_type": "code",
              "scope": scope, "state": "rp-state", "nonce": "rp-nonce"}
    response = client.get(path_and_query(oidc["authorization_endpoint"]) + "?" + urlencode(params))
    assert response.status_code in (302, 303), response.status
    return idp_respond(client, "alice", response.headers["Location"])


def rp_finish(client, oidc, demo_layout, response):
    assert response.status_code in (302, 303), (response.status, response.get_data(as_text=True)[:300])
    location = response.headers["Location"]
    assert location.startswith(demo_layout.oidc_redirect_uri)
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["rp-state"]
    secret = demo_layout.oidc_client["client_secret"]
    basic = base64.b64encode(f"demo-rp:{secret}".encode()).decode()
    token = client.post(path_and_query(oidc["token_endpoint"]), data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": demo_layout.oidc_redirect_uri,
    }, headers={"Authorization": f"Basic {basic}"})
    assert token.status_code == 200, token.get_data(as_text=True)
    tokens = token.get_json()
    userinfo = client.get(path_and_query(oidc["userinfo_endpoint"]),
                          headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200
    return tokens, userinfo.get_json()


def test_oidc_rp_receives_eduperson_orcid_after_the_hop(
    satosa_app, oidc, demo_layout, idp_respond, orcid_consent, follow_callback,
):
    page = rp_login(satosa_app, oidc, demo_layout, idp_respond)
    authorize = connect_link(page.get_data(as_text=True))
    tokens, userinfo = rp_finish(satosa_app, oidc, demo_layout, follow_callback(satosa_app, orcid_consent(authorize)))
    assert userinfo["eduperson_orcid"] == [JOSIAH]  # SATOSA releases extra-scope claims as lists (#457)
    assert _claims(tokens["id_token"])["nonce"] == "rp-nonce"

    # second login: straight through, from the store
    tokens, userinfo = rp_finish(satosa_app, oidc, demo_layout, rp_login(satosa_app, oidc, demo_layout, idp_respond))
    assert userinfo["eduperson_orcid"] == [JOSIAH]  # SATOSA releases extra-scope claims as lists (#457)


def test_oidc_rp_that_did_not_ask_for_the_scope_does_not_get_the_claim(
    satosa_app, oidc, demo_layout, idp_respond, orcid_consent, follow_callback,
):
    page = rp_login(satosa_app, oidc, demo_layout, idp_respond)
    authorize = connect_link(page.get_data(as_text=True))
    follow_callback(satosa_app, orcid_consent(authorize))
    tokens, userinfo = rp_finish(satosa_app, oidc, demo_layout,
                                 rp_login(satosa_app, oidc, demo_layout, idp_respond, scope="openid"))
    assert "eduperson_orcid" not in userinfo
