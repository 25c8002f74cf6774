"""The offline ORCID emulator behaves as ORCID does (OAuth, OpenID Connect, member API; the sources are named at each rule in the emulator).

The HTML pages are driven the way a scripted client would: find the form holding the button
with the visible text, send its fields plus the button's name/value to the form's action.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from bs4 import BeautifulSoup
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.test import Client

from satosa_orcid_plugin.devstack.emulator import (
    DEMO_ACCOUNTS,
    ClientRegistration,
    DropConnection,
    Emulator,
    make_app_from_env,
    serve_in_thread,
)
from satosa_orcid_plugin.orcid_id import OrcidId

ISSUER = "http://127.0.0.1:8090"
CB = "https://sp.example.org/orcid/callback"
MEMBER = ClientRegistration("APP-MEMBER0000000001", "member-secret", [CB], member=True, name="Example University")
PUBLIC = ClientRegistration("APP-PUBLIC0000000001", "public-secret", [CB], member=False, name="Public App")
JOSIAH = "0000-0002-1825-0097"
SOFIA = "0000-0001-5109-3700"  # mfa
PRIVATE = "0000-0002-1694-233X"  # no public name
TOKEN_KEYS = {"access_token", "token_type", "refresh_token", "expires_in", "scope", "name", "orcid"}


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class FakeClock:
    """Starts at the real time (PyJWT checks exp against it) and only moves when told."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def emu(key, clock):
    return Emulator(ISSUER, [MEMBER, PUBLIC], clock=clock, signing_key=key)


@pytest.fixture
def browser(emu):
    return Client(emu)


# --- helpers -------------------------------------------------------------------------
def authorize(browser, client=MEMBER, **params):
    query = {"client_id": client.client_id, "response_type": "code", "scope": "openid", "redirect_uri": CB,
             "state": "st-1", **params}
    return browser.get("/oauth/authorize", query_string={k: v for k, v in query.items() if v is not None})


def submit(browser, response, button_text, **fields):
    """Press the button with that visible text, as a browser would."""
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    button = soup.find("button", string=button_text)
    assert button is not None, f"no button {button_text!r} on the page"
    assert button.get("type") == "submit"
    form = button.find_parent("form")
    data = {i["name"]: i.get("value", "") for i in form.find_all("input") if i.get("name")}
    data.update(fields)
    data[button["name"]] = button["value"]
    assert form["method"].lower() == "post"
    return browser.post(form["action"], data=data)


def sign_in(browser, page, username=JOSIAH, password="orcid-demo"):
    return submit(browser, page, "Sign in", username=username, password=password)


def location_params(response):
    return parse_qs(urlsplit(response.headers["Location"]).query)


def login_and_grant(browser, client=MEMBER, username=JOSIAH, **params):
    consent = sign_in(browser, authorize(browser, client, **params), username)
    assert consent.status_code == 200
    granted = submit(browser, consent, "Authorize access")
    assert granted.status_code == 302
    return location_params(granted)["code"][0]


def exchange(browser, code, client=MEMBER, redirect_uri=CB, **extra):
    form = {"client_id": client.client_id, "client_secret": client.client_secret, "grant_type": "authorization_code",
            "code": code, **extra}
    if redirect_uri is not None:
        form["redirect_uri"] = redirect_uri
    return browser.post("/oauth/token", data=form)


def jwks_verify(browser, id_token, client=MEMBER, nonce=None):
    jwks = jwt.PyJWKSet.from_dict(browser.get("/oauth/jwks").get_json())
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = next((k for k in jwks.keys if k.key_id == kid), None)
    if key is None:
        raise LookupError(f"kid {kid} not in JWKS")
    claims = jwt.decode(id_token, key.key, algorithms=["RS256"], audience=client.client_id, issuer=ISSUER)
    if nonce is not None and claims.get("nonce") != nonce:
        raise ValueError("nonce mismatch")
    return claims


# --- authorize: grant, deny, sign-in, consent ---------------------------------------------
def test_grant_redirects_with_six_char_code_and_state(browser):
    page = authorize(browser, scope="openid /read-limited")
    assert page.status_code == 200
    soup = BeautifulSoup(page.get_data(as_text=True), "html.parser")
    for name in ("username", "password"):
        field = soup.find("input", attrs={"name": name})
        assert soup.find("label", attrs={"for": field["id"]}) is not None
    consent = sign_in(browser, page)
    html = consent.get_data(as_text=True)
    assert "Example University has asked for the following access to your ORCID record" in html
    scopes = [li["data-scope"] for li in BeautifulSoup(html, "html.parser").select("#scopes li")]
    assert scopes == ["openid", "/read-limited"]
    granted = submit(browser, consent, "Authorize access")
    assert granted.status_code == 302
    location = granted.headers["Location"]
    assert location.startswith(CB + "?code=")
    params = location_params(granted)
    assert re.fullmatch(r"[A-Za-z0-9]{6}", params["code"][0])
    assert params["state"] == ["st-1"]


def test_deny_redirects_with_access_denied_and_state(browser):
    consent = sign_in(browser, authorize(browser, state="keep me"))
    denied = submit(browser, consent, "Deny access")
    assert denied.status_code == 302
    assert denied.headers["Location"] == f"{CB}?error=access_denied&error_description=User%20denied%20access&state=keep%20me"


def test_wrong_password_stays_on_sign_in_page(browser):
    page = sign_in(browser, authorize(browser), password="nope")
    assert page.status_code == 401
    assert "Incorrect email, ORCID iD or password" in page.get_data(as_text=True)
    assert "Location" not in page.headers
    consent = sign_in(browser, page, username="JOSIAH.carberry@example.edu")  # email, any case
    assert "has asked for the following access" in consent.get_data(as_text=True)


def test_sign_in_page_is_prefilled_and_lists_demo_accounts(browser):
    page = authorize(browser, orcid=SOFIA, given_names="Ada", family_names="Lovelace", lang="de")
    soup = BeautifulSoup(page.get_data(as_text=True), "html.parser")
    assert soup.find("input", attrs={"name": "username"})["value"] == SOFIA
    assert soup.find("input", attrs={"name": "given_names"})["value"] == "Ada"
    assert soup.find("input", attrs={"name": "family_names"})["value"] == "Lovelace"
    assert soup.html["lang"] == "de"
    listed = {tr["data-orcid"] for tr in soup.select("#demo-accounts tr[data-orcid]")}
    assert listed == {a.orcid for a in DEMO_ACCOUNTS}


def test_demo_accounts_have_valid_ids_and_one_private_name():
    assert len(DEMO_ACCOUNTS) == 4
    assert all(OrcidId.is_valid(a.orcid) and a.password == "orcid-demo" for a in DEMO_ACCOUNTS)
    assert [a.orcid for a in DEMO_ACCOUNTS if a.public_name is None] == [PRIVATE]


def test_redirect_uri_mismatch_is_an_error_page_not_a_redirect(browser):
    wrong_ones = (CB.upper(), "https://evil.example/cb", CB.replace("https:", "http:"), CB.replace(".org/", ".org:443/"),
                  "https://sp.example.org/orcid/call", "https://user@sp.example.org/orcid/callback", None)
    for wrong in wrong_ones:
        page = authorize(browser, redirect_uri=wrong)
        assert page.status_code == 400
        assert "Location" not in page.headers
        text = " ".join(BeautifulSoup(page.get_data(as_text=True), "html.parser").get_text().split())
        assert (f"The provided redirect URI {wrong or '(none)'} does not match the redirect URIs registered by "
                "Example University") in text


def test_unknown_client_is_an_error_page(browser):
    page = authorize(browser, client=ClientRegistration("APP-NOPE", "x", [CB]))
    assert page.status_code == 400
    assert "Location" not in page.headers
    assert "invalid_client" in page.get_data(as_text=True)


@pytest.mark.parametrize("scope", ["/read-limited", "openid /activities/update", "/person/update"])
def test_public_client_asking_member_scopes_gets_invalid_scope(browser, scope):
    # orcid-angular src/app/core/oauth/oauth.service.ts: `${redirectUrl}#error=${error}`:
    # the fragment, no state, no description.
    response = authorize(browser, client=PUBLIC, scope=scope)
    assert response.status_code == 302
    assert response.headers["Location"] == f"{CB}#error=invalid_scope"
    assert authorize(browser, client=MEMBER, scope=scope).status_code == 200  # members may


def test_unknown_scope_is_invalid_scope(browser):
    assert authorize(browser, scope="/orcid-works/update").headers["Location"] == f"{CB}#error=invalid_scope"


def test_redirect_uri_matches_by_scheme_host_port_and_path_prefix(browser):
    # ORCID-Source OrcidOauthRedirectResolver.redirectMatches: the registered URI is the root of
    # the requested one; the query does not matter. The code goes to the requested URI, and the
    # token endpoint wants that same URI again.
    for requested in (CB + "/", CB + "/deeper?tenant=a", CB + "?x=1", CB + "-v2"):
        code = location_params(submit(browser, sign_in(browser, authorize(browser, redirect_uri=requested)),
                                      "Authorize access"))["code"][0]
        assert browser.get("/signout").status_code == 200
        assert exchange(browser, code, redirect_uri=CB).get_json()["error"] == "invalid_grant"
    code = location_params(submit(browser, sign_in(browser, authorize(browser, redirect_uri=CB + "/deeper")),
                                  "Authorize access"))["code"][0]
    assert exchange(browser, code, redirect_uri=CB + "/deeper").status_code == 200


def test_plus_separated_scopes_are_accepted(browser):
    consent = sign_in(browser, browser.get(
        f"/oauth/authorize?client_id={MEMBER.client_id}&response_type=code&scope=%2Fread-limited+%2Factivities%2Fupdate&redirect_uri={CB}"))
    scopes = [li["data-scope"] for li in BeautifulSoup(consent.get_data(as_text=True), "html.parser").select("#scopes li")]
    assert scopes == ["/read-limited", "/activities/update"]


def test_implicit_flow_is_refused_in_the_fragment(browser):
    response = authorize(browser, response_type="id_token token")
    assert response.status_code == 302
    assert response.headers["Location"] == f"{CB}#error=unsupported_response_type"  # orcid-angular oauth.service.ts


def test_skip_consent_when_client_already_holds_a_token(browser):
    code = login_and_grant(browser, scope="openid /read-limited")
    assert exchange(browser, code).status_code == 200
    again = authorize(browser, scope="openid /read-limited", state="second")
    assert again.status_code == 302  # straight back, no sign-in, no consent
    params = location_params(again)
    assert params["state"] == ["second"] and params["code"][0] != code
    second = exchange(browser, params["code"][0]).get_json()
    assert second["orcid"] == JOSIAH
    first_and_second = [t for t in browser.application.tokens(JOSIAH, MEMBER.client_id)]
    assert len(first_and_second) == 2  # both tokens stay valid
    # More scopes than the existing token holds: consent is asked again.
    assert "has asked for the following access" in authorize(browser, scope="openid /activities/update").get_data(as_text=True)
    # Fewer: also asked again (ORCID-Source OrcidRandomValueTokenServicesImpl.longLifeTokenExist
    # wants exactly the same scope set).
    assert "has asked for the following access" in authorize(browser, scope="openid").get_data(as_text=True)


def test_no_skip_before_the_code_is_exchanged(browser):
    login_and_grant(browser)
    assert "has asked for the following access" in authorize(browser).get_data(as_text=True)


def test_prompt_login_forces_sign_in_only_with_openid(browser):
    exchange(browser, login_and_grant(browser, scope="openid"))
    forced = authorize(browser, scope="openid", prompt="login")
    assert forced.status_code == 200
    assert BeautifulSoup(forced.get_data(as_text=True), "html.parser").find("button", string="Sign in")
    # Signing in as someone else links that account.
    consent = sign_in(browser, forced, username=SOFIA)
    assert SOFIA in consent.get_data(as_text=True)
    # Without openid, prompt is ignored: already signed in, so no sign-in page.
    ignored = authorize(browser, scope="/authenticate", prompt="login")
    assert "has asked for the following access" in ignored.get_data(as_text=True)


def test_prompt_none(browser):
    not_signed_in = authorize(browser, prompt="none")
    assert not_signed_in.status_code == 302
    assert not_signed_in.headers["Location"] == f"{CB}#error=login_required&state=st-1"
    login_and_grant(browser)  # signed in, code not exchanged: no token yet
    assert authorize(browser, prompt="none").headers["Location"].endswith("#error=interaction_required&state=st-1")
    consent = authorize(browser)  # already signed in: straight to consent
    exchange(browser, location_params(submit(browser, consent, "Authorize access"))["code"][0])
    assert "code" in location_params(authorize(browser, prompt="none"))


def test_consent_form_cannot_be_answered_by_another_browser(emu, browser):
    consent = sign_in(browser, authorize(browser))
    stranger = Client(emu)
    response = submit(stranger, consent, "Authorize access")
    assert response.status_code == 403
    assert "Location" not in response.headers


def test_signout_ends_the_emulator_session(browser):
    login_and_grant(browser)
    browser.get("/signout")
    assert BeautifulSoup(authorize(browser).get_data(as_text=True), "html.parser").find("button", string="Sign in")


# --- token endpoint ------------------------------------------------------------------------
def test_token_response_has_orcid_shape(browser):
    code = login_and_grant(browser, scope="/read-limited /activities/update")
    response = exchange(browser, code)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == TOKEN_KEYS  # no id_token without openid
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 631138518
    assert body["scope"] == "/read-limited /activities/update"
    assert body["orcid"] == JOSIAH and body["name"] == "Josiah Carberry"
    assert uuid.UUID(body["access_token"]).version == 4 and uuid.UUID(body["refresh_token"]).version == 4


def test_private_name_gives_an_empty_name(browser):
    # ORCID-Source ProfileEntityManagerImpl.retrivePublicDisplayName: StringUtils.EMPTY
    body = exchange(browser, login_and_grant(browser, username=PRIVATE)).get_json()
    assert "name" in body and body["name"] == ""
    claims = jwks_verify(browser, body["id_token"])
    assert not {"name", "given_name", "family_name"} & set(claims)


def test_code_is_single_use_and_reuse_revokes_its_tokens(browser):
    code = login_and_grant(browser)
    token = exchange(browser, code).get_json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.orcid+json"}
    assert browser.get("/oauth/userinfo", headers=bearer).status_code == 200
    assert browser.get(f"/v3.0/{JOSIAH}/record", headers=bearer).status_code == 200

    reused = exchange(browser, code)
    assert reused.status_code == 400
    assert reused.get_json() == {"error": "invalid_grant", "error_description": f"Reused authorization code: {code}"}
    userinfo = browser.get("/oauth/userinfo", headers=bearer)
    assert userinfo.status_code == 403
    assert userinfo.get_json() == {"error": "access_denied", "error-description": "access_token is invalid"}
    record = browser.get(f"/v3.0/{JOSIAH}/record", headers=bearer)
    assert record.status_code == 401
    assert record.get_json() == {"error": "invalid_token", "error_description": f"Invalid access token: {token}"}
    # Nothing left to revoke: ORCID then calls the code invalid.
    assert exchange(browser, code).get_json()["error_description"] == f"Invalid authorization code: {code}"


def test_unknown_code(browser):
    response = exchange(browser, "ZZZZZZ")
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_grant", "error_description": "Invalid authorization code: ZZZZZZ"}


def test_code_expires_after_ttl(emu, browser, clock):
    fresh = emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)
    stale = emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)
    clock.now += 599
    assert exchange(browser, fresh).status_code == 200
    clock.now += 2
    response = exchange(browser, stale)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_request", "error_description": "Authorization code has expired"}


@pytest.mark.parametrize("sent", [None, CB + "?x=1", "https://sp.example.org/other"])
def test_redirect_uri_must_be_repeated_identically(emu, browser, sent):
    code = emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)
    response = exchange(browser, code, redirect_uri=sent)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_grant", "error_description": "Redirect URI mismatch."}
    # As in ORCID's granter, the code was consumed before the redirect check.
    assert exchange(browser, code).get_json()["error"] == "invalid_grant"


def test_wrong_client_secret_is_401(emu, browser):
    code = emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)
    bad = browser.post("/oauth/token", data={"client_id": MEMBER.client_id, "client_secret": "wrong",
                                             "grant_type": "authorization_code", "code": code, "redirect_uri": CB})
    assert bad.status_code == 401
    assert bad.get_json() == {"error": "invalid_client", "error_description": "Bad client credentials"}
    wrong_basic = base64.b64encode(f"{MEMBER.client_id}:wrong".encode()).decode()
    assert browser.post("/oauth/token", headers={"Authorization": f"Basic {wrong_basic}"},
                        data={"grant_type": "authorization_code", "code": code, "redirect_uri": CB}).status_code == 401
    assert exchange(browser, code).status_code == 200  # a failed client auth does not burn the code


def test_client_credentials_in_a_basic_header_are_accepted_at_token_and_revoke(emu, browser):
    # ORCID-Source orcid-frontend-security.xml / orcid-api-security-context.xml: <sec:http-basic>
    # on /oauth/token and /oauth/revoke, beside the form-parameter filter.
    basic = {"Authorization": "Basic " + base64.b64encode(f"{MEMBER.client_id}:{MEMBER.client_secret}".encode()).decode()}
    code = emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)
    token = browser.post("/oauth/token", headers=basic,
                         data={"grant_type": "authorization_code", "code": code, "redirect_uri": CB})
    assert token.status_code == 200 and token.get_json()["orcid"] == JOSIAH
    access = token.get_json()["access_token"]
    assert browser.post("/oauth/revoke", headers=basic, data={"token": access}).status_code == 200
    assert browser.post("/oauth/userinfo", data={"access_token": access}).status_code == 403


def test_code_of_another_client_is_refused(emu, browser):
    code = emu.issue_code_for(MEMBER.client_id, JOSIAH, "/authenticate", CB)
    response = exchange(browser, code, client=PUBLIC)
    assert response.status_code == 401 and response.get_json()["error"] == "invalid_client"
    assert not emu.tokens(JOSIAH)


def test_token_endpoint_is_post_only(browser):
    assert browser.get("/oauth/token").status_code == 405


def test_refresh_token_grant(emu, browser):
    first = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "/read-limited /activities/update", CB)).get_json()
    form = {"client_id": MEMBER.client_id, "client_secret": MEMBER.client_secret, "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"]}
    subset = browser.post("/oauth/token", data={**form, "scope": "/read-limited", "expires_in": "86400"}).get_json()
    assert subset["scope"] == "/read-limited" and subset["expires_in"] == 86400 and subset["orcid"] == JOSIAH
    assert browser.post("/oauth/token", data={**form, "scope": "/person/update"}).get_json()["error"] == "invalid_scope"
    replaced = browser.post("/oauth/token", data={**form, "revoke_old": "true"}).get_json()
    assert replaced["scope"] == first["scope"] and replaced["access_token"] != first["access_token"]
    active = {t.access_token for t in emu.tokens(JOSIAH)}
    assert first["access_token"] not in active and {subset["access_token"], replaced["access_token"]} <= active
    again = browser.post("/oauth/token", data=form)
    assert again.status_code == 400 and again.get_json()["error"] == "invalid_grant"


def test_client_credentials_read_public(browser):
    body = browser.post("/oauth/token", data={"client_id": PUBLIC.client_id, "client_secret": PUBLIC.client_secret,
                                              "grant_type": "client_credentials", "scope": "/read-public"}).get_json()
    assert body["scope"] == "/read-public" and body["orcid"] is None and body["expires_in"] == 631138518
    assert "name" not in body and "id_token" not in body


def test_concurrent_exchanges_of_one_code_yield_one_token(emu):
    code = emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)
    results = []

    def run():
        results.append(exchange(Client(emu), code).status_code)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) == 1
    assert not emu.tokens(JOSIAH)  # the reuses revoked the one token that was issued


# --- OIDC ----------------------------------------------------------------------------------
def test_id_token_verifies_against_jwks_with_documented_claims(browser, clock):
    clock.now += 0.75
    now = int(clock.now)
    code = login_and_grant(browser, nonce="n-123")
    body = exchange(browser, code).get_json()
    assert set(body) == TOKEN_KEYS | {"id_token"}
    header = jwt.get_unverified_header(body["id_token"])
    assert header["alg"] == "RS256" and header["kid"] == browser.get("/oauth/jwks").get_json()["keys"][0]["kid"]
    claims = jwks_verify(browser, body["id_token"], nonce="n-123")
    assert claims["sub"] == JOSIAH  # bare iD
    assert claims["iss"] == ISSUER and claims["aud"] == MEMBER.client_id
    assert claims["iat"] == now and claims["exp"] - claims["iat"] == 24 * 3600
    assert claims["auth_time"] == now
    assert claims["amr"] == "pwd"  # a string, not a list
    assert uuid.UUID(claims["jti"])
    digest = hashlib.sha256(body["access_token"].encode()).digest()[:16]
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert (claims["given_name"], claims["family_name"], claims["name"]) == ("Josiah", "Carberry", "Josiah Carberry")


def test_amr_is_mfa_for_two_factor_accounts_and_absent_for_public_clients(emu, browser):
    sofia = exchange(browser, emu.issue_code_for(MEMBER.client_id, SOFIA, "openid", CB)).get_json()
    assert jwks_verify(browser, sofia["id_token"])["amr"] == "mfa"
    public = exchange(browser, emu.issue_code_for(PUBLIC.client_id, SOFIA, "openid", CB), client=PUBLIC).get_json()
    assert "amr" not in jwks_verify(browser, public["id_token"], client=PUBLIC)


def test_auth_time_is_the_sign_in_time(browser, clock):
    clock.now -= 300  # sign in five minutes ago
    exchange(browser, login_and_grant(browser))
    signed_in_at = clock.now
    clock.now += 300
    body = exchange(browser, location_params(authorize(browser))["code"][0]).get_json()  # skipped consent
    claims = jwks_verify(browser, body["id_token"])
    assert claims["auth_time"] == int(signed_in_at) and claims["iat"] == int(signed_in_at) + 300


def test_discovery_document(browser):
    assert browser.get("/.well-known/openid-configuration").get_json() == {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/oauth/authorize",
        "token_endpoint": f"{ISSUER}/oauth/token",
        "userinfo_endpoint": f"{ISSUER}/oauth/userinfo",
        "jwks_uri": f"{ISSUER}/oauth/jwks",
        "scopes_supported": ["openid"],
        "response_types_supported": ["code", "id_token", "id_token token"],
        "grant_types_supported": ["authorization_code", "implicit", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "claims_supported": ["family_name", "given_name", "name", "auth_time", "iss", "sub"],
        "claims_parameter_supported": False,
    }


def test_jwks_shape(browser):
    keys = browser.get("/oauth/jwks").get_json()["keys"]
    # ORCID-Source orcid-web/ORCID_AUTH_WITH_OPENID_CONNECT.md: {"kty","e","use","kid","alg":"RS256","n"}
    assert len(keys) == 1 and set(keys[0]) == {"kid", "use", "kty", "e", "n", "alg"}
    assert keys[0]["alg"] == "RS256"
    assert keys[0]["kty"] == "RSA" and keys[0]["use"] == "sig" and keys[0]["e"] == "AQAB"


def test_userinfo_get_and_post(emu, browser):
    token = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)).get_json()["access_token"]
    # ORCID-Source OpenIDConnectUserInfo: id = the registry's base URL + "/" + iD (here the issuer)
    expected = {"id": f"{ISSUER}/{JOSIAH}", "sub": JOSIAH, "name": "Josiah Carberry",
                "family_name": "Carberry", "given_name": "Josiah"}
    assert browser.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"}).get_json() == expected
    assert browser.post("/oauth/userinfo", data={"access_token": token}).get_json() == expected
    assert browser.get("/oauth/userinfo", query_string={"access_token": token}).status_code == 403


def test_userinfo_needs_openid_or_authenticate(emu, browser):
    token = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "/read-limited", CB)).get_json()["access_token"]
    assert browser.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"}).status_code == 403


def test_revoke_endpoint_revokes_the_pair(emu, browser):
    bodies = [exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)).get_json() for _ in range(2)]
    creds = {"client_id": MEMBER.client_id, "client_secret": MEMBER.client_secret}
    assert browser.post("/oauth/revoke", data={**creds, "token": bodies[0]["refresh_token"]}).status_code == 200
    assert browser.post("/oauth/userinfo", data={"access_token": bodies[0]["access_token"]}).status_code == 403
    assert browser.post("/oauth/userinfo", data={"access_token": bodies[1]["access_token"]}).status_code == 200
    assert browser.post("/oauth/revoke", data={"client_id": MEMBER.client_id, "client_secret": "x",
                                               "token": bodies[1]["access_token"]}).status_code == 401
    # Another client cannot revoke it.
    browser.post("/oauth/revoke", data={"client_id": PUBLIC.client_id, "client_secret": PUBLIC.client_secret,
                                        "token": bodies[1]["access_token"]})
    assert browser.post("/oauth/userinfo", data={"access_token": bodies[1]["access_token"]}).status_code == 200


# --- member API stub --------------------------------------------------------------------
def test_record_read_and_errors(emu, browser):
    token = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "/read-limited", CB)).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.orcid+json"}
    record = browser.get(f"/v3.0/{JOSIAH}/record", headers=headers)
    assert record.status_code == 200
    assert record.get_json()["orcid-identifier"] == {"uri": f"https://orcid.org/{JOSIAH}", "path": JOSIAH, "host": "orcid.org"}
    assert browser.get(f"/v3.0/{JOSIAH}/person", headers=headers).get_json()["name"]["family-name"] == {"value": "Carberry"}
    other = browser.get(f"/v3.0/{SOFIA}/record", headers=headers)
    assert other.status_code == 401 and other.get_json()["error-code"] == 9017
    for accept in (None, "*/*", "application/vnd.orcid+xml"):  # ORCID would answer XML
        no_json = {"Authorization": f"Bearer {token}", **({"Accept": accept} if accept else {})}
        assert browser.get(f"/v3.0/{JOSIAH}/record", headers=no_json).status_code == 406
    orcid_json = {"Authorization": f"Bearer {token}", "Accept": "application/orcid+json"}
    assert browser.get(f"/v3.0/{JOSIAH}/record", headers=orcid_json).mimetype == "application/orcid+json"
    # ORCID-Source APIAuthenticationEntryPoint: no token at all is 403 "forbidden"
    no_token = browser.get(f"/v3.0/{JOSIAH}/record", headers={"Accept": "application/json"})
    assert no_token.status_code == 403 and no_token.get_json()["error"] == "forbidden"
    assert browser.get(f"/v3.0/{JOSIAH}/record", headers={**headers, "Authorization": "Bearer " + str(uuid.uuid4())}).status_code == 401


def test_user_revocation_via_python_and_admin_endpoint(emu, browser):
    def fresh(client):
        return exchange(browser, emu.issue_code_for(client.client_id, JOSIAH, "/authenticate", CB), client=client).get_json()["access_token"]

    member_token, public_token = fresh(MEMBER), fresh(PUBLIC)
    headers = {"Accept": "application/json"}
    assert emu.revoke_user_tokens(JOSIAH, MEMBER.client_id) == 1
    assert browser.get(f"/v3.0/{JOSIAH}/record", headers={**headers, "Authorization": f"Bearer {member_token}"}).get_json() == {
        "error": "invalid_token", "error_description": f"Invalid access token: {member_token}"}
    assert browser.get(f"/v3.0/{JOSIAH}/record", headers={**headers, "Authorization": f"Bearer {public_token}"}).status_code == 200
    assert browser.post("/_emulator/revoke", json={"orcid": JOSIAH}).get_json() == {"revoked": 1}
    assert browser.get(f"/v3.0/{JOSIAH}/record", headers={**headers, "Authorization": f"Bearer {public_token}"}).status_code == 401
    assert [t.revoked for t in emu.tokens(JOSIAH, active_only=False)] == ["USER_REVOKED", "USER_REVOKED"]


# --- faults ----------------------------------------------------------------------------------
ID_TOKEN_FAULTS = {
    "bad_signature": jwt.InvalidSignatureError,
    "wrong_aud": jwt.InvalidAudienceError,
    "wrong_iss": jwt.InvalidIssuerError,
    "expired": jwt.ExpiredSignatureError,
    "unknown_kid": LookupError,
    "wrong_nonce": ValueError,
}


@pytest.mark.parametrize("kind", sorted(ID_TOKEN_FAULTS))
def test_id_token_faults_fail_verification(emu, browser, kind):
    emu.faults.add(endpoint="token", kind=kind, times=1)
    bad = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB, nonce="n1")).get_json()
    with pytest.raises(ID_TOKEN_FAULTS[kind]):
        jwks_verify(browser, bad["id_token"], nonce="n1")
    good = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB, nonce="n1")).get_json()
    assert jwks_verify(browser, good["id_token"], nonce="n1")["sub"] == JOSIAH  # times=1: used up


def test_bad_signature_keeps_the_right_kid(emu, browser):
    emu.faults.add(endpoint="token", kind="bad_signature")
    body = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB)).get_json()
    assert jwt.get_unverified_header(body["id_token"])["kid"] == emu.kid


def test_sub_mismatch_and_no_nonce(emu, browser):
    emu.faults.add(endpoint="token", kind="sub_mismatch")
    emu.faults.add(endpoint="*", kind="no_nonce")
    body = exchange(browser, emu.issue_code_for(MEMBER.client_id, JOSIAH, "openid", CB, nonce="n1")).get_json()
    claims = jwks_verify(browser, body["id_token"])  # signature, aud, iss all fine
    assert body["orcid"] == JOSIAH
    assert claims["sub"] != JOSIAH and OrcidId.is_valid(claims["sub"])
    assert "nonce" not in claims


def test_status_fault_then_normal(emu, browser):
    emu.faults.add(endpoint="jwks", kind="status", status=503, times=1)
    failed = browser.get("/oauth/jwks")
    assert failed.status_code == 503 and failed.mimetype == "text/html"
    assert browser.get("/oauth/jwks").status_code == 200
    emu.faults.add(endpoint="token", kind="status", status=500, body='{"error":"server_error"}', content_type="application/json")
    assert exchange(browser, "abcdef").get_json() == {"error": "server_error"}
    assert browser.get("/.well-known/openid-configuration").status_code == 200  # other endpoints untouched


def test_status_fault_on_authorize_page(emu, browser):
    emu.faults.add(endpoint="authorize", kind="status", status=502)
    assert authorize(browser).status_code == 502


def test_malformed_fault(emu, browser):
    emu.faults.add(endpoint="userinfo", kind="malformed")
    response = browser.get("/oauth/userinfo")
    assert response.status_code == 200
    with pytest.raises(ValueError):
        json.loads(response.get_data(as_text=True))


def test_drop_fault_in_process_raises(emu, browser):
    emu.faults.add(endpoint="token", kind="drop", times=1)
    with pytest.raises(DropConnection):
        exchange(browser, "abcdef")
    assert exchange(browser, "abcdef").status_code == 400


def test_fault_rules_are_validated(emu):
    for bad in ({"endpoint": "tokens", "kind": "drop"}, {"endpoint": "token", "kind": "explode"},
                {"endpoint": "jwks", "kind": "wrong_aud"}, {"endpoint": "token", "kind": "status"},
                {"endpoint": "token", "kind": "delay", "secs": 1}, {"endpoint": "token", "kind": "drop", "times": 0}):
        with pytest.raises(ValueError):
            emu.faults.replace([bad])
    emu.faults.add(endpoint="token", kind="drop")
    emu.faults.clear()
    assert len(emu.faults) == 0


def test_admin_fault_endpoints(emu, browser):
    rules = [{"endpoint": "discovery", "kind": "status", "status": 500, "times": 2}]
    assert browser.post("/_emulator/faults", json=rules).status_code == 200
    assert [browser.get("/.well-known/openid-configuration").status_code for _ in range(3)] == [500, 500, 200]
    assert browser.post("/_emulator/faults", json={"rules": [{"endpoint": "x", "kind": "drop"}]}).status_code == 400
    browser.post("/_emulator/faults", json=[{"endpoint": "jwks", "kind": "status", "status": 503}])
    assert browser.get("/oauth/jwks").status_code == 503
    browser.delete("/_emulator/faults")
    assert browser.get("/oauth/jwks").status_code == 200
    assert browser.get("/_emulator/health").get_json()["status"] == "ok"


def test_back_channel_requests_are_recorded_without_values(emu, browser):
    login_and_grant(browser)  # front channel: not recorded
    exchange(browser, "abcdef")
    browser.get("/oauth/jwks")
    recorded = browser.get("/_emulator/requests").get_json()
    assert [(r["endpoint"], r["status"], r["grant_type"]) for r in recorded] == [
        ("token", 400, "authorization_code"), ("jwks", 200, None)]
    assert recorded[0]["keys"] == ["client_id", "client_secret", "code", "grant_type", "redirect_uri"]
    assert "member-secret" not in json.dumps(recorded)
    assert len(emu.requests) == 2


# --- over real HTTP --------------------------------------------------------------------
@pytest.fixture
def server(key):
    app = Emulator(ISSUER, [MEMBER], signing_key=key)
    running = serve_in_thread(app)
    yield app, running
    running.stop()


def test_full_flow_over_http_with_requests(server):
    app, running = server
    session = requests.Session()
    page = session.get(f"{running.url}/oauth/authorize", params={
        "client_id": MEMBER.client_id, "response_type": "code", "scope": "openid /read-limited",
        "redirect_uri": CB, "state": "s", "nonce": "n"})
    soup = BeautifulSoup(page.text, "html.parser")
    form = soup.find("button", string="Sign in").find_parent("form")
    consent = session.post(running.url + form["action"], data={
        "pending": form.find("input", attrs={"name": "pending"})["value"], "username": JOSIAH,
        "password": "orcid-demo", "action": "signin"})
    form = BeautifulSoup(consent.text, "html.parser").find("button", string="Authorize access").find_parent("form")
    granted = session.post(running.url + form["action"], allow_redirects=False, data={
        "pending": form.find("input", attrs={"name": "pending"})["value"], "decision": "authorize"})
    assert granted.status_code == 302
    code = parse_qs(urlsplit(granted.headers["Location"]).query)["code"][0]
    body = requests.post(f"{running.url}/oauth/token", data={
        "client_id": MEMBER.client_id, "client_secret": MEMBER.client_secret, "grant_type": "authorization_code",
        "code": code, "redirect_uri": CB}, headers={"Accept": "application/json"}).json()
    jwks = jwt.PyJWKClient(f"{running.url}/oauth/jwks")
    claims = jwt.decode(body["id_token"], jwks.get_signing_key_from_jwt(body["id_token"]).key, algorithms=["RS256"],
                        audience=MEMBER.client_id, issuer=ISSUER)
    assert claims["sub"] == body["orcid"] == JOSIAH and claims["nonce"] == "n"


def test_drop_fault_closes_the_connection_without_a_response(server):
    app, running = server
    app.faults.add(endpoint="token", kind="drop", times=1)
    with requests.Session() as session:
        with pytest.raises(requests.ConnectionError):
            session.post(f"{running.url}/oauth/token", data={"client_id": MEMBER.client_id}, timeout=5)
        assert session.get(f"{running.url}/oauth/jwks", timeout=5).status_code == 200
    assert [(r.endpoint, r.status) for r in app.requests] == [("token", None), ("jwks", 200)]


def test_delay_fault_slows_then_answers(server):
    app, running = server
    app.faults.add(endpoint="discovery", kind="delay", seconds=0.4, times=1)
    started = time.monotonic()
    assert requests.get(f"{running.url}/.well-known/openid-configuration", timeout=5).json()["issuer"] == ISSUER
    assert time.monotonic() - started >= 0.4
    with pytest.raises(requests.Timeout):
        app.faults.add(endpoint="discovery", kind="delay", seconds=1.0, times=1)
        requests.get(f"{running.url}/.well-known/openid-configuration", timeout=0.3)
    started = time.monotonic()
    requests.get(f"{running.url}/.well-known/openid-configuration", timeout=5)
    assert time.monotonic() - started < 0.9  # the one-shot 1 s delay is used up


def test_serves_requests_concurrently(server):
    app, running = server
    app.faults.add(endpoint="jwks", kind="delay", seconds=2.0, times=1)
    slow = threading.Thread(target=requests.get, args=(f"{running.url}/oauth/jwks",), kwargs={"timeout": 5})
    slow.start()
    time.sleep(0.1)
    started = time.monotonic()
    assert requests.get(f"{running.url}/_emulator/health", timeout=5).status_code == 200
    assert time.monotonic() - started < 1.0  # served while the slow request still waits
    slow.join()


# --- construction ----------------------------------------------------------------------
def test_only_loopback_and_never_an_orcid_issuer(key):
    with pytest.raises(ValueError):
        serve_in_thread(Emulator(ISSUER, [MEMBER], signing_key=key), host="0.0.0.0")
    for issuer in ("https://orcid.org", "https://sandbox.orcid.org/"):
        with pytest.raises(ValueError):
            Emulator(issuer, [MEMBER], signing_key=key)


def test_make_app_from_env(monkeypatch):
    monkeypatch.setenv("ORCID_EMULATOR_ISSUER", "http://127.0.0.1:9999/")
    monkeypatch.setenv("ORCID_EMULATOR_CLIENTS", json.dumps([
        {"client_id": "APP-X", "client_secret": "s", "redirect_uris": [CB], "member": False, "name": "X"}]))
    app = make_app_from_env()
    assert app.issuer == "http://127.0.0.1:9999"
    assert not app.clients["APP-X"].member
    monkeypatch.setenv("ORCID_EMULATOR_CLIENTS", json.dumps([{"client_id": "APP-X"}]))
    with pytest.raises(RuntimeError):
        make_app_from_env()


def test_institutional_connect_url_has_no_state(key):
    client = ClientRegistration("APP-C", "s", [CB], connect_redirect_uri="https://sp.example.org/orcid/connect")
    emu = Emulator(ISSUER, [client], signing_key=key)
    url = emu.institutional_connect_url("APP-C", orcid=JOSIAH)
    assert "state=" not in url and "scope=%2Fread-limited+%2Factivities%2Fupdate" in url
    browser = Client(emu)
    page = browser.get(url[len(ISSUER):])
    consent = sign_in(browser, page)
    granted = submit(browser, consent, "Authorize access")
    assert re.fullmatch(r"https://sp\.example\.org/orcid/connect\?code=[A-Za-z0-9]{6}", granted.headers["Location"])
