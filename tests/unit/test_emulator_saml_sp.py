"""The emulator's ORCID SAML SP keys accounts the way ORCID does (ORCID-Source InstitutionalSignInManagerImpl):
a persistent NameID or eduPersonUniqueId (never a transient NameID or ePPN), refuses a later
sign-in whose identifiers changed, and shows the state-less connect URL of section 6.2.

The IdP here is the demo IdP (pysaml2) talking to the emulator's SP directly, no proxy between.
"""
from __future__ import annotations

import base64
from types import SimpleNamespace
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest
from bs4 import BeautifulSoup
from werkzeug.test import Client

from satosa_orcid_plugin.devstack import demo_idp as idp_module
from satosa_orcid_plugin.devstack.emulator import ClientRegistration, Emulator
from satosa_orcid_plugin.devstack.emulator_saml_sp import (
    ACS_PATH,
    EmulatorSamlSp,
    check_headers,
    display_name,
    headers_from_assertion,
    remote_user,
)

PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
IDP, SP = "https://idp.example.org/idp", "https://orcid.example/saml2/sp/1"
JOSIAH = "0000-0002-1825-0097"


def name_id(fmt, text="abc123", **kw):
    return SimpleNamespace(format=fmt, text=text, name_qualifier=kw.get("nq"), sp_name_qualifier=kw.get("spnq"))


# --- what ORCID makes of an assertion ----------------------------------------------------------
@pytest.mark.parametrize(
    "nid, ava, key",
    [
        (name_id(PERSISTENT), {"eduPersonUniqueId": ["u1@x"], "eduPersonPrincipalName": ["a@x"]},
         ("persistent-id", f"{IDP}!{SP}!abc123")),
        (name_id(TRANSIENT), {"eduPersonUniqueId": ["u1@x"], "eduPersonPrincipalName": ["a@x"]},
         ("edu-person-unique-id", "u1@x")),
        (name_id(TRANSIENT), {"eduPersonTargetedID": ["t1"], "subject-id": ["s@x"]}, ("targeted-id-oid", "t1")),
        (None, {"subject-id": ["s@x"], "eduPersonPrincipalName": ["a@x"]}, ("subject-id", "s@x")),
        (name_id(TRANSIENT), {"eduPersonPrincipalName": ["a@x"], "mail": ["a@x"]}, None),  # never ePPN
        (name_id("urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"), {}, None),
        (name_id(PERSISTENT, text="  "), {"eduPersonPrincipalName": ["a@x"]}, None),
    ],
    ids=["persistent-first", "unique-id", "targeted-id", "subject-id", "transient+eppn", "unspecified", "blank"],
)
def test_the_account_key_is_never_a_transient_nameid_or_eppn(nid, ava, key):
    assert remote_user(headers_from_assertion(IDP, SP, nid, ava)) == key


def test_persistent_id_keeps_the_qualifiers_shibboleth_would_write():
    headers = headers_from_assertion(IDP, SP, name_id(PERSISTENT, nq="https://q", spnq="https://spq"), {})
    assert headers["persistent-id"] == "https://q!https://spq!abc123"
    assert headers["shib-identity-provider"] == IDP


def test_multi_valued_attributes_join_like_shibboleth():
    headers = headers_from_assertion(IDP, SP, None, {"eduPersonPrincipalName": ["a;b@x", "c@x"]})
    assert headers["eppn"] == "a\\;b@x;c@x"
    assert display_name(headers) == "a;b@x"


@pytest.mark.parametrize(
    "old, new, changed",
    [
        ({"persistent-id": "p", "eppn": "a@x"}, {"persistent-id": "p", "eppn": "a@x"}, []),
        ({"persistent-id": "p", "eppn": "a@x"}, {"persistent-id": "p", "eppn": "b@x"}, ["eppn"]),
        ({"persistent-id": "p", "edu-person-unique-id": "u"}, {"persistent-id": "p", "edu-person-unique-id": "v"},
         ["edu-person-unique-id"]),
        ({"persistent-id": "p", "eppn": "a@x"}, {"persistent-id": "p"}, []),  # attribute dropped: not a change
        ({"persistent-id": "p"}, {"persistent-id": "p", "eppn": "a@x"}, []),  # attribute added: not a change
        ({"eppn": "a@x;b@x"}, {"eppn": "b@x;a@x"}, []),  # the same set of values
        ({"eppn": "a@x", "givenname": "Al"}, {"eppn": "a@x", "givenname": "Alice"}, []),  # names may change
    ],
)
def test_header_consistency_check(old, new, changed):
    assert check_headers(old, new) == changed


def test_display_name_falls_back_like_orcid():
    assert display_name({"displayname": "Alice A"}) == "Alice A"
    assert display_name({"givenname": "Alice", "sn": "A"}) == "Alice A"
    assert display_name({"persistent-id": "idp!sp!opaque"}) == "opaque"


# --- through real SAML messages -------------------------------------------------------------------
@pytest.fixture
def world(tmp_path):
    """The emulator with its SAML SP, and the demo IdP trusting that SP (no proxy between)."""
    from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

    layout = DemoLayout(tmp_path / "d", DemoPorts.free())
    emulator = Emulator(layout.emulator_url, [ClientRegistration(**c) for c in layout.emulator_clients()])
    sp = EmulatorSamlSp.mount(emulator, key_file=str(layout.keys.emulator_sp.key_path),
                              cert_file=str(layout.keys.emulator_sp.cert_path), idp_metadata=[str(layout.idp_metadata)],
                              idp_clients={layout.idp_entity_id: layout.orcid_client_id})
    config = layout.idp_saml_config(with_metadata=False)
    config["metadata"] = {"local": [str(layout.emulator_sp_metadata)]}
    config["service"]["idp"]["want_authn_requests_signed"] = False  # ORCID's SP does not sign them
    idp = idp_module.DemoIdP(config=config)
    return SimpleNamespace(layout=layout, emulator=emulator, sp=sp, idp=idp)


def institutional_sign_in(world, browser, user="alice", pending=None):
    """Start at "Sign in with your institution"; the IdP answers; the browser posts to the ACS."""
    start = "/signin/institution" + (f"?pending={pending}" if pending else "")
    login = browser.get(start)
    assert login.status_code == 302 and login.headers["Location"].startswith("/Shibboleth.sso/Login?")
    to_idp = browser.get(login.headers["Location"])
    assert to_idp.status_code == 302
    location = to_idp.headers["Location"]
    assert location.startswith(f"{world.layout.idp_base}/sso/redirect?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    acs, fields = world.idp.respond(query["SAMLRequest"], query.get("RelayState"),
                                    "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect", user)
    assert acs == f"{world.layout.emulator_url}{ACS_PATH}"
    return browser.post(ACS_PATH, data=fields), fields


def link_account(browser, page_response, orcid=JOSIAH, password="orcid-demo"):
    soup = BeautifulSoup(page_response.get_data(as_text=True), "html.parser")
    token = soup.find("input", attrs={"name": "link"})["value"]
    return browser.post("/shibboleth/link", data={"link": token, "username": orcid, "password": password})


def test_first_sign_in_links_the_account_later_ones_sign_straight_in(world):
    browser = Client(world.emulator)
    signin = BeautifulSoup(browser.get("/signin").get_data(as_text=True), "html.parser")
    assert signin.find("a", id="institutional-signin")["href"] == "/signin/institution"

    answer, _ = institutional_sign_in(world, browser)
    assert answer.status_code == 200 and "Link your" in answer.get_data(as_text=True)
    assert link_account(browser, answer, password="wrong").status_code == 401
    linked = link_account(browser, answer)
    assert linked.status_code == 302 and linked.headers["Location"] == "/my-orcid"
    (connection,) = world.sp.connections
    assert connection.orcid == JOSIAH and connection.id_type == "persistent-id"
    assert connection.headers["eppn"] == "alice@demo.example.org"

    page = BeautifulSoup(browser.get("/my-orcid").get_data(as_text=True), "html.parser")
    button = page.find("a", id="connect-institution")
    layout = world.layout
    assert button["href"] == (
        f"{layout.emulator_url}/oauth/authorize?response_type=code&client_id={layout.orcid_client_id}"
        f"&scope=%2Fread-limited+%2Factivities%2Fupdate&redirect_uri={quote_plus(layout.orcid_connect_url)}"
    )
    assert button["target"] == "_blank"

    again, _ = institutional_sign_in(world, Client(world.emulator))  # another browser, same person
    assert again.status_code == 302 and again.headers["Location"] == "/my-orcid"
    assert len(world.sp.connections) == 1


def test_a_changed_eppn_fails_the_later_sign_in(world, monkeypatch):
    answer, _ = institutional_sign_in(world, Client(world.emulator))
    link_account(Client(world.emulator), answer)
    real = idp_module.demo_user_attributes
    monkeypatch.setattr(idp_module, "demo_user_attributes",
                        lambda user: {**real(user), "eduPersonPrincipalName": ["alice.andersson@demo.example.org"]})
    refused, _ = institutional_sign_in(world, Client(world.emulator))
    assert refused.status_code == 403
    text = refused.get_data(as_text=True)
    assert "header_mismatch" in text and "eppn" in text


def test_without_a_persistent_identifier_the_sign_in_is_refused(world, monkeypatch):
    """Transient NameID and only ePPN: ORCID cannot key the account."""
    from saml2.saml import NAMEID_FORMAT_TRANSIENT

    real_respond = world.idp.create_response

    def transient(saml_request, binding, username, **kw):
        with pytest.MonkeyPatch.context() as mp:  # the demo IdP's NameID, made transient
            mp.setattr("saml2.saml.NAMEID_FORMAT_PERSISTENT", NAMEID_FORMAT_TRANSIENT)
            return real_respond(saml_request, binding, username, **kw)

    real = idp_module.demo_user_attributes
    monkeypatch.setattr(idp_module, "demo_user_attributes",
                        lambda user: {k: v for k, v in real(user).items() if k != "eduPersonUniqueId"})
    monkeypatch.setattr(world.idp, "create_response", transient)
    refused, _ = institutional_sign_in(world, Client(world.emulator))
    assert refused.status_code == 403
    text = refused.get_data(as_text=True)
    assert "unsupported_institution" in text and "transient NameID or eduPersonPrincipalName" in text
    assert world.sp.connections == []


def test_a_response_is_accepted_once(world):
    browser = Client(world.emulator)
    answer, fields = institutional_sign_in(world, browser)
    assert answer.status_code == 200
    replay = browser.post(ACS_PATH, data=fields)
    assert replay.status_code == 400 and "expired or was already used" in replay.get_data(as_text=True)
    forged = browser.post(ACS_PATH, data={"SAMLResponse": base64.b64encode(b"<x/>").decode(), "RelayState": "nope"})
    assert forged.status_code == 400


def test_institutional_sign_in_during_an_authorize_request_continues_it(world):
    layout, browser = world.layout, Client(world.emulator)
    authorize = browser.get("/oauth/authorize", query_string={
        "client_id": layout.orcid_client_id, "response_type": "code", "scope": "openid",
        "redirect_uri": layout.orcid_callback_url, "state": "s1"})
    page = BeautifulSoup(authorize.get_data(as_text=True), "html.parser")
    start = page.find("a", id="institutional-signin")["href"]
    pending = parse_qs(urlsplit(start).query)["pending"][0]
    answer, _ = institutional_sign_in(world, browser, pending=pending)
    consent = link_account(browser, answer)
    assert consent.status_code == 200 and "Authorize access" in consent.get_data(as_text=True)


def test_no_notification_once_the_client_knows_the_user(world):
    layout = world.layout
    world.emulator.issue_code_for(layout.orcid_client_id, JOSIAH, "/activities/update", layout.orcid_connect_url)
    browser = Client(world.emulator)
    answer, _ = institutional_sign_in(world, browser)
    link_account(browser, answer)
    assert world.sp.notifications  # the client only had a code, no token yet
    code = world.emulator.issue_code_for(layout.orcid_client_id, JOSIAH, "/read-limited /activities/update",
                                         layout.orcid_connect_url)
    token = browser.post("/oauth/token", data={
        "client_id": layout.orcid_client_id, "client_secret": layout.orcid_client_secret,
        "grant_type": "authorization_code", "code": code, "redirect_uri": layout.orcid_connect_url})
    assert token.status_code == 200
    page = browser.get("/my-orcid").get_data(as_text=True)
    assert 'id="connect-institution"' not in page and 'id="no-notifications"' in page
    assert all(n.archived for n in world.sp.notifications)
