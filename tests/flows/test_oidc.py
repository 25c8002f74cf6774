"""SAML upstream, OIDC downstream: an RP using the code flow gets `eduperson_orcid`."""
from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flowkit import html_form_fields, path_and_query

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
    action, fields = html_form_fields(page.get_data(as_text=True))
    authorize = satosa_app.post(path_and_query(action), data={**fields, "choice": "connect"}).headers["Location"]
    tokens, userinfo = rp_finish(satosa_app, oidc, demo_layout, follow_callback(satosa_app, orcid_consent(authorize)))
    assert userinfo["eduperson_orcid"] == JOSIAH  # a JSON string (oidc_claim_type: string, the default)
    assert _claims(tokens["id_token"])["nonce"] == "rp-nonce"

    # second login: straight through, from the store
    tokens, userinfo = rp_finish(satosa_app, oidc, demo_layout, rp_login(satosa_app, oidc, demo_layout, idp_respond))
    assert userinfo["eduperson_orcid"] == JOSIAH


def test_oidc_rp_that_did_not_ask_for_the_scope_does_not_get_the_claim(
    satosa_app, oidc, demo_layout, idp_respond, orcid_consent, follow_callback,
):
    page = rp_login(satosa_app, oidc, demo_layout, idp_respond)
    action, fields = html_form_fields(page.get_data(as_text=True))
    authorize = satosa_app.post(path_and_query(action), data={**fields, "choice": "connect"}).headers["Location"]
    follow_callback(satosa_app, orcid_consent(authorize))
    tokens, userinfo = rp_finish(satosa_app, oidc, demo_layout,
                                 rp_login(satosa_app, oidc, demo_layout, idp_respond, scope="openid"))
    assert "eduperson_orcid" not in userinfo


def test_scope_eduperson_orcid_is_an_alias_of_orcid(
    satosa_app, oidc, demo_layout, idp_respond, orcid_consent, follow_callback,
):
    assert "eduperson_orcid" in oidc["scopes_supported"]
    page = rp_login(satosa_app, oidc, demo_layout, idp_respond, scope="openid eduperson_orcid")
    action, fields = html_form_fields(page.get_data(as_text=True))
    authorize = satosa_app.post(path_and_query(action), data={**fields, "choice": "connect"}).headers["Location"]
    tokens, userinfo = rp_finish(satosa_app, oidc, demo_layout, follow_callback(satosa_app, orcid_consent(authorize)))
    assert userinfo["eduperson_orcid"] == JOSIAH


def test_claim_type_array_releases_a_list(
    satosa_config, demo_layout, idp_respond, orcid_consent, follow_callback, monkeypatch,
):
    """``oidc_claim_type: array``: eduPerson's multi-valued form, for RPs that want it."""
    import satosa.frontends.openid_connect as oidc_frontend
    from satosa.proxy_server import make_app
    from werkzeug.test import Client

    # the claim table is per process: put back whatever this test changes
    monkeypatch.setitem(oidc_frontend.combine_values_by_claim, "eduperson_orcid",
                        oidc_frontend.combine_values_by_claim["eduperson_orcid"])
    orcid = next(m for m in satosa_config["MICRO_SERVICES"] if m["name"] == "orcid")
    orcid["config"]["oidc_claim_type"] = "array"
    client = Client(make_app(satosa_config))
    config = json.loads(client.get("/.well-known/openid-configuration").get_data(as_text=True))
    page = rp_login(client, config, demo_layout, idp_respond)
    action, fields = html_form_fields(page.get_data(as_text=True))
    authorize = client.post(path_and_query(action), data={**fields, "choice": "connect"}).headers["Location"]
    tokens, userinfo = rp_finish(client, config, demo_layout, follow_callback(client, orcid_consent(authorize)))
    assert userinfo["eduperson_orcid"] == [JOSIAH]


def test_discovery_advertises_pkce_through_the_plugin_wsgi_entry(satosa_config):
    from werkzeug.test import Client

    from satosa_orcid_plugin.ops.wsgi import create_app

    config = Client(create_app(satosa_config)).get("/.well-known/openid-configuration").get_json(force=True)
    assert config["code_challenge_methods_supported"] == ["S256"]


def test_a_satosa_without_the_claim_table_keeps_lists_and_says_so(monkeypatch, caplog):
    import satosa.frontends.openid_connect as oidc_frontend

    from satosa_orcid_plugin.microservice import register_oidc_claim_type

    monkeypatch.delattr(oidc_frontend, "combine_values_by_claim")
    with caplog.at_level("WARNING", logger="satosa_orcid_plugin.microservice"):
        register_oidc_claim_type("eduperson_orcid", "string")
    assert "released as an array" in caplog.text
