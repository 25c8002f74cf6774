"""The ORCID client against the emulator over real HTTP on loopback; `responses` only for
what the emulator cannot produce."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses

from satosa_orcid_plugin.config import OrcidSettings, Timeouts
from satosa_orcid_plugin.devstack.emulator import ClientRegistration, Emulator, serve_in_thread
from satosa_orcid_plugin.errors import (
    InvalidIdToken,
    OrcidOAuthError,
    OrcidProtocolError,
    OrcidUnavailable,
    TokenRevoked,
)
from satosa_orcid_plugin.orcid_client import OrcidClient
from satosa_orcid_plugin.orcid_id import OrcidId

REDIRECT = "https://proxy.example.org/orcid/callback"
JOSIAH = "0000-0002-1825-0097"


@pytest.fixture(scope="module")
def server():
    emulator = Emulator("http://placeholder", [ClientRegistration("APP-TEST", "secret-1", [REDIRECT])])
    running = serve_in_thread(emulator)
    emulator.issuer = running.url
    yield emulator, running
    running.stop()


@pytest.fixture
def emulator(server):
    emulator, _ = server
    emulator.faults.clear()
    emulator.requests.clear()
    return emulator


def settings(url, **kw):
    base = dict(environment="emulator", base_url=url, api_base_url=url, client_id="APP-TEST",
                client_secret="secret-1", scopes=("openid",), timeouts=Timeouts(1.0, 2.0))
    base.update(kw)
    return OrcidSettings(**base)


@pytest.fixture
def client(emulator):
    return OrcidClient(settings(emulator.issuer))


def test_authorize_url_carries_what_orcid_needs(client):
    url = client.authorize_url(redirect_uri=REDIRECT, state="st", nonce="nn", lang="de",
                               prefill={"given_names": "Josiah", "email": "j@example.org"})
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert parts.path == "/oauth/authorize"
    assert q == {"client_id": "APP-TEST", "response_type": "code", "scope": "openid", "redirect_uri": REDIRECT,
                 "state": "st", "nonce": "nn", "lang": "de", "given_names": "Josiah", "email": "j@example.org"}
    assert "%40" in url  # ORCID wants the email URL-encoded


def test_exchange_verifies_id_token_and_returns_the_authenticated_id(client, emulator):
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n-1")
    grant = client.exchange_code(code, REDIRECT, nonce="n-1")
    assert grant.orcid == OrcidId(JOSIAH)
    assert grant.scope == ("openid",)
    assert grant.id_token_claims["sub"] == JOSIAH
    assert grant.access_token not in repr(grant)
    token_calls = [r for r in emulator.requests if r.path == "/oauth/token"]
    assert len(token_calls) == 1


def test_jwks_is_cached_across_exchanges(client, emulator):
    for nonce in ("a", "b", "c"):
        client.exchange_code(emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce=nonce),
                             REDIRECT, nonce=nonce)
    assert len([r for r in emulator.requests if r.path == "/oauth/jwks"]) == 1


def test_reused_code_is_refused_and_never_retried(client, emulator):
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n")
    grant = client.exchange_code(code, REDIRECT, nonce="n")
    with pytest.raises(OrcidOAuthError) as info:
        client.exchange_code(code, REDIRECT, nonce="n")
    assert info.value.error_code == "invalid_grant"
    # ORCID revokes what the first exchange issued
    with pytest.raises(TokenRevoked):
        client.userinfo(grant.access_token)


def test_redirect_uri_must_be_identical(client, emulator):
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n")
    with pytest.raises(OrcidOAuthError) as info:
        client.exchange_code(code, REDIRECT + "/", nonce="n")
    assert info.value.error_code == "invalid_grant"


def test_wrong_client_secret(emulator):
    client = OrcidClient(settings(emulator.issuer, client_secret="wrong"))
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n")
    with pytest.raises(OrcidOAuthError) as info:
        client.exchange_code(code, REDIRECT, nonce="n")
    assert info.value.status == 401


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("bad_signature", "bad signature"),
        ("wrong_aud", "wrong audience"),
        ("wrong_iss", "wrong issuer"),
        ("expired", "expired"),
        ("sub_mismatch", "sub does not match"),
        ("unknown_kid", "unknown signing key"),
        ("wrong_nonce", "nonce mismatch"),
    ],
)
def test_every_bad_id_token_is_rejected(client, emulator, kind, reason):
    emulator.faults.add(endpoint="token", kind=kind)
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n")
    with pytest.raises(InvalidIdToken, match=reason):
        client.exchange_code(code, REDIRECT, nonce="n")


@pytest.mark.parametrize(
    "fault, error",
    [
        ({"kind": "status", "status": 500}, OrcidUnavailable),
        ({"kind": "status", "status": 503}, OrcidUnavailable),
        ({"kind": "malformed"}, OrcidProtocolError),
        ({"kind": "status", "status": 200, "body": "<html>Maintenance</html>", "content_type": "text/html"}, OrcidProtocolError),
        ({"kind": "delay", "seconds": 3}, OrcidUnavailable),
        ({"kind": "drop"}, OrcidUnavailable),
    ],
)
def test_transport_faults_become_plugin_errors_after_one_attempt(client, emulator, fault, error):
    emulator.faults.add(endpoint="token", **fault)
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n")
    with pytest.raises(error):
        client.exchange_code(code, REDIRECT, nonce="n")
    assert len([r for r in emulator.requests if r.path == "/oauth/token"]) <= 1


def test_refused_connection_is_unavailable():
    client = OrcidClient(settings("http://127.0.0.1:9"))
    with pytest.raises(OrcidUnavailable, match="unreachable"):
        client.exchange_code("abc123", REDIRECT, nonce="n")


def test_public_client_scopes_without_openid(emulator):
    client = OrcidClient(settings(emulator.issuer, scopes=("/authenticate",)))
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["/authenticate"], REDIRECT)
    grant = client.exchange_code(code, REDIRECT)
    assert grant.orcid == OrcidId(JOSIAH) and grant.id_token_claims == {}


def test_revoke_then_userinfo_is_rejected(client, emulator):
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n")
    grant = client.exchange_code(code, REDIRECT, nonce="n")
    assert client.userinfo(grant.access_token)["sub"] == JOSIAH
    client.revoke(grant.access_token)
    with pytest.raises(TokenRevoked):
        client.userinfo(grant.access_token)


@responses.activate
def test_token_response_without_orcid_is_a_protocol_error():
    url = "https://orcid.example"
    responses.add(responses.POST, f"{url}/oauth/token", json={"access_token": "x", "token_type": "bearer", "orcid": None})
    client = OrcidClient(settings(url, scopes=("/authenticate",)))
    with pytest.raises(OrcidProtocolError, match="orcid"):
        client.exchange_code("c", REDIRECT)


@responses.activate
def test_token_endpoint_html_401_is_bad_client_credentials():
    url = "https://orcid.example"
    responses.add(responses.POST, f"{url}/oauth/token", body="Bad client credentials", status=401)
    with pytest.raises(OrcidOAuthError) as info:
        OrcidClient(settings(url)).exchange_code("c", REDIRECT)
    assert info.value.error_code == "invalid_client"
