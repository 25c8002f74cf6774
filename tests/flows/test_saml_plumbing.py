"""SAML -> SAML through SATOSA's real WSGI app and the real proxy_conf/.

Most tests remove the ORCID micro-service (``micro_services=[]``) to prove the plumbing on
its own: SP -> proxy frontend -> proxy backend -> institutional IdP -> proxy -> SP.
"""
from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from werkzeug.test import Client

from satosa_orcid_plugin.devstack.demo_idp import DEMO_ATTRIBUTE_NAMES, DemoIdP, demo_user_attributes
from satosa_orcid_plugin.devstack.demo_sp import DemoSP, extract_released



def path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")

EDUPERSON_ORCID_OID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.16"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
WITHOUT_ORCID = pytest.mark.parametrize("micro_services", [[]], indirect=True, ids=["no-microservices"])


def test_proxy_conf_resolves_every_setting_from_the_environment(satosa_config, demo_layout):
    assert satosa_config["BASE"] == demo_layout.proxy_base
    assert satosa_config["COOKIE_HTTPONLY"] is True and satosa_config["COOKIE_SECURE"] is True
    assert satosa_config["COOKIE_SAMESITE"] == "None"
    assert satosa_config["INTERNAL_ATTRIBUTES"]["attributes"]["edupersonorcid"] == {
        "saml": ["eduPersonOrcid"],
        "openid": ["eduperson_orcid"],
    }
    hint, orcid, pairwise = satosa_config["MICRO_SERVICES"]
    assert pairwise["module"] == "satosa_orcid_plugin.ops.pairwise.PairwiseNameID"
    assert pairwise["config"]["salt"] == demo_layout.secrets["pairwise_salt"]
    assert hint["module"] == "satosa_orcid_plugin.OrcidRequestHint"
    assert orcid["module"] == "satosa_orcid_plugin.OrcidConnect" and orcid["name"] == "orcid"
    assert orcid["config"]["orcid"] == {
        "environment": "emulator",
        "base_url": demo_layout.emulator_url,
        "client_id": demo_layout.orcid_client_id,
        "client_secret": demo_layout.orcid_client_secret,
        "scopes": ["openid"],
        "timeouts": {"connect": 3, "read": 10},
    }
    assert orcid["config"]["store"]["database_url"] == demo_layout.database_url
    frontend = {m["name"]: m for m in satosa_config["FRONTEND_MODULES"]}
    assert frontend["OIDC"]["config"]["provider"]["extra_scopes"]["orcid"] == ["eduperson_orcid"]
    assert frontend["OIDC"]["config"]["db_uri"].startswith("stateless://")


def test_proxy_conf_fails_loudly_without_its_environment(demo_layout, monkeypatch):
    from satosa.satosa_config import SATOSAConfig

    for key, value in demo_layout.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("ORCID_CLIENT_SECRET")
    monkeypatch.chdir(demo_layout.proxy_conf_dir)
    with pytest.raises(Exception):
        SATOSAConfig("proxy_conf.yaml")


@WITHOUT_ORCID
def test_saml_to_saml_releases_the_idp_attributes(satosa_app, demo_sp, start_login, idp_respond, sp_receive,
                                                  demo_layout):
    idp_request = start_login(satosa_app, demo_sp)
    assert idp_request.url.startswith(f"{demo_layout.idp_base}/sso/redirect?")

    response = idp_respond(satosa_app, "alice")
    released = sp_receive(response, demo_sp)

    assert released.attributes == demo_user_attributes("alice")
    assert "eduPersonOrcid" not in released.attributes
    assert released.issuer == demo_layout.proxy_idp_entity_id
    assert released.name_id_format == PERSISTENT and released.name_id
    # urn:oid wire names, friendly names at the SP
    assert released.attribute_names["eduPersonPrincipalName"] == "urn:oid:1.3.6.1.4.1.5923.1.1.1.6"


@WITHOUT_ORCID
def test_the_relay_state_and_request_id_survive_the_round_trip(satosa_app, demo_sp, demo_idp, start_login,
                                                              idp_respond, form_fields, demo_layout):
    request = start_login(satosa_app, demo_sp, relay_state="/the/page")
    authn_request = demo_idp.parse_request(request.saml_request, request.binding, relay_state=request.relay_state,
                                           sigalg=request.sigalg, signature=request.signature)
    assert request.sigalg == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert authn_request.issuer.text == demo_layout.proxy_sp_entity_id
    assert authn_request.assertion_consumer_service_url == demo_layout.proxy_acs_url

    final = idp_respond(satosa_app, "bob")
    _, fields = form_fields(final.get_data(as_text=True))
    assert fields["RelayState"] == "/the/page"
    released = demo_sp.parse_response(fields["SAMLResponse"], outstanding={request.sp_request_id: "/the/page"})
    assert released.in_response_to == request.sp_request_id
    assert released.attributes["eduPersonPrincipalName"] == ["bob@demo.example.org"]


@WITHOUT_ORCID
def test_eduperson_orcid_goes_out_under_its_oid(satosa_config, demo_sp, start_login, idp_respond, form_fields):
    """The SAML frontend maps the internal edupersonorcid to urn:oid:...16 (friendly eduPersonOrcid)."""
    from satosa.proxy_server import make_app

    # A stand-in for the ORCID micro-service: SATOSA's static-attribute service adds the iD.
    satosa_config["MICRO_SERVICES"] = [{
        "module": "satosa.micro_services.attribute_modifications.AddStaticAttributes",
        "name": "static_orcid",
        "config": {"static_attributes": {"edupersonorcid": ["https://orcid.org/0000-0002-1825-0097"]}},
    }]
    client = Client(make_app(satosa_config))
    start_login(client, demo_sp)
    _, fields = form_fields(idp_respond(client, "carol").get_data(as_text=True))
    released = demo_sp.parse_response(fields["SAMLResponse"])
    assert released.attributes["eduPersonOrcid"] == ["https://orcid.org/0000-0002-1825-0097"]
    assert released.attribute_names["eduPersonOrcid"] == EDUPERSON_ORCID_OID
    xml = base64.b64decode(fields["SAMLResponse"]).decode()
    assert f'Name="{EDUPERSON_ORCID_OID}"' in xml


@WITHOUT_ORCID
def test_state_cookie_is_secure_httponly_samesite_none(satosa_app, demo_sp):
    url = demo_sp.authn_request_url()
    response = satosa_app.get(path_and_query(url))
    cookies = [h.strip() for k, h in response.headers.items()
               if k.lower() == "set-cookie" and h.strip().startswith("SATOSA_STATE=")]
    assert cookies, response.headers
    flags = {part.strip().lower() for part in cookies[0].split(";")[1:]}
    assert {"secure", "httponly", "samesite=none", "path=/"} <= flags


@WITHOUT_ORCID
def test_tampered_idp_response_is_refused(satosa_app, demo_sp, demo_idp, start_login, form_fields):
    request = start_login(satosa_app, demo_sp)
    destination, fields = demo_idp.respond(request.saml_request, request.relay_state, request.binding, "alice",
                                           sigalg=request.sigalg, signature=request.signature)
    xml = base64.b64decode(fields["SAMLResponse"]).decode()
    tampered = xml.replace("alice@demo.example.org", "mallory@demo.example.org")
    assert tampered != xml
    fields["SAMLResponse"] = base64.b64encode(tampered.encode()).decode()
    response = satosa_app.post(urlsplit(destination).path, data=fields)
    # The proxy refuses the broken signature and answers the SP with a SAML error status.
    from saml2.response import StatusAuthnFailed

    _, back = form_fields(response.get_data(as_text=True))
    with pytest.raises(StatusAuthnFailed):
        demo_sp.parse_response(back["SAMLResponse"])


@WITHOUT_ORCID
def test_the_demo_idp_refuses_unsigned_or_altered_authn_requests(satosa_app, demo_sp, demo_idp, start_login):
    request = start_login(satosa_app, demo_sp)
    with pytest.raises(Exception):
        demo_idp.parse_request(request.saml_request, request.binding, relay_state=request.relay_state)
    with pytest.raises(Exception):
        demo_idp.parse_request(request.saml_request, request.binding, relay_state="another-relay-state",
                               sigalg=request.sigalg, signature=request.signature)


@WITHOUT_ORCID
def test_proxy_publishes_its_idp_metadata(satosa_app, demo_layout):
    response = satosa_app.get(urlsplit(demo_layout.proxy_idp_entity_id).path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/samlmetadata+xml"
    body = response.get_data(as_text=True)
    assert f'entityID="{demo_layout.proxy_idp_entity_id}"' in body
    assert f"{demo_layout.proxy_base}/Saml2/sso/redirect" in body


@WITHOUT_ORCID
def test_oidc_discovery_offers_the_orcid_scope(satosa_app, demo_layout):
    response = satosa_app.get("/.well-known/openid-configuration")
    assert response.status_code == 200
    conf = json.loads(response.get_data(as_text=True))
    assert conf["issuer"] == demo_layout.proxy_base
    assert "orcid" in conf["scopes_supported"]
    assert "eduperson_orcid" in conf["claims_supported"]


@WITHOUT_ORCID
def test_demo_web_apps_walk_through_the_proxy(satosa_app, demo_layout, form_fields):
    """The demo SP and IdP as WSGI apps (what the browser sees), wired in-process."""
    sp_web = Client(DemoSP(demo_layout))
    idp_web = Client(DemoIdP(demo_layout))

    home = sp_web.get("/").get_data(as_text=True)
    assert "Log in through the proxy" in home and "href='/login'" in home
    to_proxy = sp_web.get("/login")
    assert to_proxy.status_code == 303
    assert to_proxy.headers["Location"].startswith(f"{demo_layout.proxy_base}/Saml2/sso/redirect?")
    to_idp = satosa_app.get(path_and_query(to_proxy.headers["Location"]))
    login_page = idp_web.get(path_and_query(to_idp.headers["Location"]))
    assert login_page.status_code == 200
    page = login_page.get_data(as_text=True)
    assert "alice" in page and "demo" in page
    action, fields = form_fields(page)

    wrong = idp_web.post(action, data={**fields, "username": "alice", "password": "nope"})
    assert wrong.status_code == 401
    posted = idp_web.post(action, data={**fields, "username": "alice", "password": "demo"})
    page = posted.get_data(as_text=True)
    assert "Continue" in page
    acs, saml = form_fields(page)
    assert acs == demo_layout.proxy_acs_url

    to_sp = satosa_app.post(urlsplit(acs).path, data=saml)
    sp_acs, saml = form_fields(to_sp.get_data(as_text=True))
    assert sp_acs == demo_layout.sp_acs_url
    result = sp_web.post(urlsplit(sp_acs).path, data=saml)
    assert result.status_code == 200
    data = extract_released(result.get_data(as_text=True))
    assert data["attributes"] == demo_user_attributes("alice")
    assert set(data["attribute_names"]) == set(DEMO_ATTRIBUTE_NAMES)
    assert "No ORCID iD" in result.get_data(as_text=True)


def test_with_the_orcid_microservice_the_login_detours_to_orcid(satosa_app, demo_sp, start_login, idp_respond,
                                                                pass_interstitial, demo_layout):
    """proxy_conf as shipped: after the IdP, the micro-service sends the browser to ORCID."""
    start_login(satosa_app, demo_sp)
    location = pass_interstitial(satosa_app, idp_respond(satosa_app, "alice"))
    assert location.startswith(f"{demo_layout.emulator_url}/oauth/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["client_id"] == demo_layout.orcid_client_id
    assert query["redirect_uri"] == demo_layout.orcid_callback_url
    assert query["response_type"] == "code" and query["state"]


@WITHOUT_ORCID
def test_oidc_frontend_code_flow_releases_eduperson_orcid_for_scope_orcid(satosa_config, demo_layout, idp_respond,
                                                                          monkeypatch):
    """OIDC RP -> proxy (pyop, stateless storage) -> SAML IdP -> proxy -> code -> token -> userinfo.
    Without the plugin, SATOSA releases the claim as a list (its default for claims it does
    not know); the plugin's micro-service registers it as a string (tests/flows/test_oidc.py)."""
    from urllib.parse import urlencode

    import satosa.frontends.openid_connect as oidc_frontend
    from satosa.proxy_server import make_app

    # the claim table is per process: an app with the plugin, built earlier, registered the claim
    monkeypatch.delitem(oidc_frontend.combine_values_by_claim, "eduperson_orcid", raising=False)

    satosa_config["MICRO_SERVICES"] = [{
        "module": "satosa.micro_services.attribute_modifications.AddStaticAttributes",
        "name": "static_orcid",
        "config": {"static_attributes": {"edupersonorcid": ["https://orcid.org/0000-0002-1825-0097"]}},
    }]
    client = Client(make_app(satosa_config))
    rp = demo_layout.oidc_client
    discovery = json.loads(client.get("/.well-known/openid-configuration").get_data(as_text=True))
    authz = urlsplit(discovery["authorization_endpoint"]).path
    query = urlencode({
        "client_id": rp["client_id"], "response_type": "code", "scope": "openid orcid",
        "redirect_uri": rp["redirect_uris"][0], "state": "rp-state", "nonce": "rp-nonce",
    })
    to_idp = client.get(f"{authz}?{query}")
    assert to_idp.status_code in (302, 303), to_idp.get_data(as_text=True)[:300]
    back = idp_respond(client, "alice", to_idp.headers["Location"])
    assert back.status_code in (302, 303), back.get_data(as_text=True)[:300]
    location = back.headers["Location"]
    assert location.startswith(rp["redirect_uris"][0])
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert params["state"] == "rp-state"

    basic = base64.b64encode(f"{rp['client_id']}:{rp['client_secret']}".encode()).decode()
    token = client.post(urlsplit(discovery["token_endpoint"]).path,
                        data={"grant_type": "authorization_code", "code": params["code"],
                              "redirect_uri": rp["redirect_uris"][0]},
                        headers={"Authorization": f"Basic {basic}"})
    assert token.status_code == 200, token.get_data(as_text=True)
    tokens = json.loads(token.get_data(as_text=True))
    userinfo = client.get(urlsplit(discovery["userinfo_endpoint"]).path,
                          headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200, userinfo.get_data(as_text=True)
    claims = json.loads(userinfo.get_data(as_text=True))
    assert claims["eduperson_orcid"] == ["https://orcid.org/0000-0002-1825-0097"]
    assert "eduperson_principal_name" not in claims  # not requested (scope eduperson)


def test_full_login_through_the_orcid_emulator(satosa_app, demo_sp, start_login, idp_respond, sp_receive,
                                               pass_interstitial, orcid_consent, follow_callback, demo_layout):
    """proxy_conf as shipped, the emulator on loopback: the SP receives the authenticated iD."""
    start_login(satosa_app, demo_sp)
    callback = orcid_consent(pass_interstitial(satosa_app, idp_respond(satosa_app, "alice")))
    assert callback.startswith(f"{demo_layout.orcid_callback_url}?")
    released = sp_receive(follow_callback(satosa_app, callback), demo_sp)
    assert released.attributes["eduPersonOrcid"] == ["https://orcid.org/0000-0002-1825-0097"]
    assert released.attribute_names["eduPersonOrcid"] == EDUPERSON_ORCID_OID
    assert released.attributes["eduPersonPrincipalName"] == ["alice@demo.example.org"]
