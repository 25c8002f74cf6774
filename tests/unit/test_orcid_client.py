"""The ORCID client against the emulator over real HTTP on loopback; `responses` only for
what the emulator cannot produce."""
from __future__ import annotations

import json
import threading
import time
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
from satosa_orcid_plugin.orcid_client import JWKS_FAILURE_TTL_SECONDS, JWKS_TTL_SECONDS, OrcidClient, TokenState
from satosa_orcid_plugin.orcid_id import OrcidId
from satosa_orcid_plugin.tokens import TokenSet

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


def _tokens(grant):
    return TokenSet(grant.access_token, grant.refresh_token, scope=grant.scope)


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
    assert client.check_token(grant.orcid, _tokens(grant)).revoked


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
    # userinfo answers 403 for a revoked token and for a live one without openid alike
    # (ORCID-Source OpenIDController.getInfoFromToken): rejected, but not "revoked"
    with pytest.raises(OrcidOAuthError) as info:
        client.userinfo(grant.access_token)
    assert info.value.status == 403 and not isinstance(info.value, TokenRevoked)
    assert client.check_token(grant.orcid, _tokens(grant)).revoked


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


# --- check_token: a revocation check that cannot misfire (issue 13) ----------------------------
CONNECT_SCOPES = ["/read-limited", "/activities/update"]  # what Institutional Connect grants


def _grant(client, emulator, scopes, orcid=JOSIAH):
    code = emulator.issue_code_for("APP-TEST", orcid, scopes, REDIRECT, nonce="n" if "openid" in scopes else None)
    return client.exchange_code(code, REDIRECT, nonce="n" if "openid" in scopes else None,
                                require_id_token="openid" in scopes)


def _paths(emulator):
    return [r.path for r in emulator.requests]


def test_a_connect_only_token_is_active_although_userinfo_refuses_it(client, emulator):
    grant = _grant(client, emulator, CONNECT_SCOPES)
    with pytest.raises(OrcidOAuthError) as info:  # what made `links check` misfire
        client.userinfo(grant.access_token)
    assert info.value.status == 403 and not isinstance(info.value, TokenRevoked)
    emulator.requests.clear()
    status = client.check_token(grant.orcid, _tokens(grant))
    assert status.state is TokenState.ACTIVE and not status.revoked
    assert _paths(emulator) == [f"/v3.0/{JOSIAH}/employments"]  # the member read, not userinfo


def test_a_revoked_connect_only_token_is_revoked_after_a_confirming_read(client, emulator):
    grant = _grant(client, emulator, CONNECT_SCOPES)
    emulator.revoke_user_tokens(JOSIAH)
    emulator.requests.clear()
    status = client.check_token(grant.orcid, _tokens(grant))
    assert status.state is TokenState.REVOKED and "401 invalid_token" in status.evidence
    assert _paths(emulator) == [f"/v3.0/{JOSIAH}/employments"] * 2


def test_an_openid_token_asks_userinfo_and_only_the_record_read_says_revoked(client, emulator):
    grant = _grant(client, emulator, ["openid"])
    emulator.requests.clear()
    assert client.check_token(grant.orcid, _tokens(grant)).state is TokenState.ACTIVE
    assert _paths(emulator) == ["/oauth/userinfo"]
    client.revoke(grant.access_token)
    emulator.requests.clear()
    assert client.check_token(grant.orcid, _tokens(grant)).state is TokenState.REVOKED
    assert _paths(emulator) == ["/oauth/userinfo"] + [f"/v3.0/{JOSIAH}/employments"] * 2


FORBIDDEN = json.dumps({"error": "forbidden", "error_description": "Forbidden: The server understood the request but "
                        "refuses to authorize it."})  # ORCID-Source APIAuthenticationEntryPoint
UNLOOKED = json.dumps({"error": "invalid_token", "error_description": "Invalid access token: Unable to obtain "
                       "information from the authorization server: 1b2c"})  # OrcidBearerTokenFilter
REVOKED = json.dumps({"error": "invalid_token", "error_description": "Invalid access token: 1b2c"})
SCOPE_9038 = json.dumps({"response-code": 403, "developer-message": "403 Forbidden: insufficient scope", "error-code": 9038})


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 403, "body": FORBIDDEN, "content_type": "application/json"},
        {"kind": "status", "status": 403, "body": SCOPE_9038, "content_type": "application/json"},
        {"kind": "status", "status": 401, "body": UNLOOKED, "content_type": "application/json"},
        {"kind": "status", "status": 401, "body": "<html>401</html>"},
        {"kind": "status", "status": 404},
        {"kind": "status", "status": 500},
        {"kind": "drop"},
        {"kind": "delay", "seconds": 3},
    ],
    ids=["403-forbidden", "403-9038", "401-introspection-failed", "401-html", "404", "500", "drop", "timeout"],
)
def test_anything_but_401_invalid_token_is_unknown_never_revoked(client, emulator, fault):
    grant = _grant(client, emulator, CONNECT_SCOPES)
    emulator.faults.add(endpoint="api", **fault)
    status = client.check_token(grant.orcid, _tokens(grant))
    assert status.state is TokenState.UNKNOWN, status


def test_a_single_401_is_not_enough(client, emulator):
    """ORCID's bearer filter answers the revoked token's 401 when its introspection fails on I/O
    too (OrcidBearerTokenFilter); a live token that gets one such answer stays active."""
    grant = _grant(client, emulator, CONNECT_SCOPES)
    emulator.faults.add(endpoint="api", kind="status", status=401, body=REVOKED, content_type="application/json", times=1)
    assert client.check_token(grant.orcid, _tokens(grant)).state is TokenState.ACTIVE


# --- both generations of ORCID's authorization server (issue 13) ---------------------------------
# Bodies: old generation (before April 2026) from ORCID-Source OrcidAuthorizationCodeTokenGranter
# messages through OAuthErrorUtils (anything unmapped is 500 server_error) and the old
# orcid-api-web/tutorial/api_errors.md; new generation from api_errors.md after commit 75c2d7dc8f
# ("Update api_errors with the auth server updates (#7496)") and OauthGenericCallsController
# (a failure to reach the authorization server is a 401 with OAuthErrorUtils' server_error).
def _oauth_body(error, description):
    return json.dumps({"error": error, "error_description": description})


OLD, NEW = "old", "new"
TOKEN_ERRORS = [
    # generation, status, body, content type, expected class, expected error, expected reason
    (OLD, 500, _oauth_body("server_error", "Redirect URI mismatch."), None, OrcidOAuthError, "invalid_grant", "redirect_uri_mismatch"),
    (OLD, 500, _oauth_body("server_error", "Invalid authorization code: Q7x2Lm"), None, OrcidOAuthError, "invalid_grant", "code_invalid"),
    (OLD, 500, _oauth_body("server_error", "Reused authorization code: Q7x2Lm"), None, OrcidOAuthError, "invalid_grant", "code_reused"),
    (OLD, 500, _oauth_body("server_error", "An authorization code must be supplied."), None, OrcidOAuthError, "invalid_request", "code_missing"),
    (OLD, 400, _oauth_body("invalid_request", "Authorization code has expired"), None, OrcidOAuthError, "invalid_grant", "code_expired"),
    (OLD, 500, _oauth_body("server_error", "Invalid scopes: /webhook available scopes for this code are: [openid]"), None,
     OrcidOAuthError, "invalid_scope", "invalid_scope"),
    (OLD, 500, _oauth_body("server_error", "Client ID mismatch"), None, OrcidOAuthError, "invalid_client", "client_mismatch"),
    (OLD, 401, _oauth_body("invalid_client", "Bad client credentials"), None, OrcidOAuthError, "invalid_client", "bad_client_credentials"),
    (OLD, 400, _oauth_body("invalid_grant", "Reused authorization code: Q7x2Lm"), None, OrcidOAuthError, "invalid_grant", "code_reused"),
    (OLD, 500, _oauth_body("server_error", "Internal Server Error"), None, OrcidUnavailable, "server_error", None),
    (OLD, 500, "<html><body>Oops an error happened!</body></html>", "text/html", OrcidUnavailable, None, None),
    (NEW, 400, _oauth_body("invalid_grant", "One of the provided parameters is invalid, or, the provided token/code is "
                                            "invalid or expired"), None, OrcidOAuthError, "invalid_grant", "invalid_parameters"),
    (NEW, 400, _oauth_body("invalid_grant", "Invalid authorization code: Q7x2Lm"), None, OrcidOAuthError, "invalid_grant", "code_invalid"),
    (NEW, 400, "One of the provided parameters is invalid, or, the provided token/code is invalid or expired", "text/plain",
     OrcidOAuthError, "invalid_grant", "invalid_parameters"),
    (NEW, 400, json.dumps({"error": "invalid_grant"}), None, OrcidOAuthError, "invalid_grant", None),
    (NEW, 401, _oauth_body("invalid_client", "Client authentication failed"), None, OrcidOAuthError, "invalid_client", "bad_client_credentials"),
    (NEW, 401, _oauth_body("server_error", "Connection refused"), None, OrcidUnavailable, "server_error", None),
    (NEW, 503, _oauth_body("temporarily_unavailable", ""), None, OrcidUnavailable, "temporarily_unavailable", None),
    (NEW, 502, "<html>Bad Gateway</html>", "text/html", OrcidUnavailable, None, None),
]


@pytest.mark.parametrize("generation, status, body, content_type, cls, error, reason", TOKEN_ERRORS,
                         ids=[f"{g}-{s}-{r or (e or 'none')}-{i}" for i, (g, s, _, _, _, e, r) in enumerate(TOKEN_ERRORS)])
def test_token_errors_of_both_generations(client, emulator, generation, status, body, content_type, cls, error, reason):
    emulator.faults.add(endpoint="token", kind="status", status=status, body=body,
                        content_type=content_type or "application/json;charset=UTF-8")
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="n")
    with pytest.raises(cls) as info:
        client.exchange_code(code, REDIRECT, nonce="n")
    assert type(info.value) is cls and info.value.status == status and info.value.error_code == error
    assert getattr(info.value, "reason", None) == reason
    assert not isinstance(info.value, TokenRevoked)
    assert len([r for r in emulator.requests if r.path == "/oauth/token"]) == 1  # never retried


@pytest.mark.parametrize(
    "status, body, content_type, cls",
    [
        (401, _oauth_body("invalid_client", "Bad client credentials"), "application/json", OrcidOAuthError),
        (400, _oauth_body("invalid_request", "Please provide the token to be param"), "application/json", OrcidOAuthError),
        (401, _oauth_body("server_error", "Read timed out"), "application/json", OrcidUnavailable),
        (500, "<html>Internal Server Error</html>", "text/html", OrcidUnavailable),
        (503, "", "text/plain", OrcidUnavailable),
    ],
)
def test_revoke_errors_say_refused_or_unavailable(client, emulator, status, body, content_type, cls):
    emulator.faults.add(endpoint="revoke", kind="status", status=status, body=body, content_type=content_type)
    with pytest.raises(cls) as info:
        client.revoke("a-token")
    assert type(info.value) is cls and info.value.status == status
    assert len([r for r in emulator.requests if r.path == "/oauth/revoke"]) == 1


# --- JWKS under stress (issue 11): single-flight, bounded waits, failures remembered briefly -------
FAST = Timeouts(0.5, 1.0)  # budget per callback: 1.5 s
MARGIN = 2.5  # generous: threads, a loaded machine; the old serial behaviour took 2 s *per caller*


def _jwks_calls(emulator):
    return len([r for r in emulator.requests if r.path == "/oauth/jwks"])


def _concurrent_exchanges(client, emulator, n):
    """n callbacks at once, each exchanging its own code; returns [(seconds, outcome)]."""
    codes = [emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce=f"n{i}") for i in range(n)]
    results = [None] * n
    barrier = threading.Barrier(n)

    def callback(i):
        barrier.wait()
        started = time.monotonic()
        try:
            client.exchange_code(codes[i], REDIRECT, nonce=f"n{i}")
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - the outcome is the assertion
            outcome = exc
        results[i] = (time.monotonic() - started, outcome)

    threads = [threading.Thread(target=callback, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_slow_jwks_on_a_fresh_client_bounds_every_callback(emulator):
    client = OrcidClient(settings(emulator.issuer, timeouts=FAST))
    emulator.faults.add(endpoint="jwks", kind="delay", seconds=4)
    results = _concurrent_exchanges(client, emulator, 4)
    assert all(isinstance(outcome, OrcidUnavailable) for _, outcome in results), results
    assert max(seconds for seconds, _ in results) < client.key_wait_budget + MARGIN, results
    assert _jwks_calls(emulator) == 1  # one fetch for all, and no retry
    # the failure is remembered briefly: the next callback fails at once, without asking ORCID
    started = time.monotonic()
    with pytest.raises(OrcidUnavailable, match="key set"):
        client.exchange_code(emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="m"),
                             REDIRECT, nonce="m")
    assert time.monotonic() - started < 1.0 and _jwks_calls(emulator) == 1


@pytest.mark.parametrize("fault", [{"kind": "status", "status": 503}, {"kind": "drop"}])
def test_failing_jwks_is_asked_once_for_all_waiting_callbacks(emulator, fault):
    client = OrcidClient(settings(emulator.issuer, timeouts=FAST))
    emulator.faults.add(endpoint="jwks", **fault)
    results = _concurrent_exchanges(client, emulator, 4)
    assert all(isinstance(outcome, OrcidUnavailable) for _, outcome in results), results
    assert max(seconds for seconds, _ in results) < client.key_wait_budget + MARGIN
    assert _jwks_calls(emulator) == 1


def test_a_jwks_within_the_timeouts_serves_every_waiting_callback_from_one_fetch(emulator):
    client = OrcidClient(settings(emulator.issuer, timeouts=FAST))
    emulator.faults.add(endpoint="jwks", kind="delay", seconds=0.3)
    results = _concurrent_exchanges(client, emulator, 4)
    assert [outcome for _, outcome in results] == ["ok"] * 4
    assert _jwks_calls(emulator) == 1


def test_a_remembered_failure_expires(emulator):
    now = [1_000_000.0]
    client = OrcidClient(settings(emulator.issuer, timeouts=FAST), clock=lambda: now[0])
    emulator.faults.add(endpoint="jwks", kind="status", status=503, times=1)
    code = emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="a")
    with pytest.raises(OrcidUnavailable):
        client.exchange_code(code, REDIRECT, nonce="a")
    now[0] += JWKS_FAILURE_TTL_SECONDS + 1
    client.exchange_code(emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="b"), REDIRECT, nonce="b")
    assert _jwks_calls(emulator) == 2


def test_a_known_key_set_serves_while_its_refresh_is_slow(emulator):
    now = [1_000_000.0]
    client = OrcidClient(settings(emulator.issuer, timeouts=FAST), clock=lambda: now[0])
    client.exchange_code(emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="a"), REDIRECT, nonce="a")
    now[0] += JWKS_TTL_SECONDS + 1  # stale: refreshed in the background
    emulator.faults.add(endpoint="jwks", kind="delay", seconds=3)
    started = time.monotonic()
    client.exchange_code(emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="b"), REDIRECT, nonce="b")
    assert time.monotonic() - started < 1.0  # did not wait for the 3 s key set
    deadline = time.monotonic() + 10
    while _jwks_calls(emulator) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _jwks_calls(emulator) == 2


def test_prefetch_warms_the_key_set_and_never_fails(emulator):
    client = OrcidClient(settings(emulator.issuer, timeouts=FAST))
    client.prefetch_keys()
    deadline = time.monotonic() + 10
    while _jwks_calls(emulator) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.exchange_code(emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="a"), REDIRECT, nonce="a")
    assert _jwks_calls(emulator) == 1
    OrcidClient(settings("http://127.0.0.1:9", timeouts=FAST)).prefetch_keys()  # ORCID down: no error


def test_a_failed_warm_up_is_not_remembered_and_the_first_callback_fetches_the_keys(emulator):
    emulator.faults.add(endpoint="jwks", kind="status", status=503, times=1)
    client = OrcidClient(settings(emulator.issuer, timeouts=FAST))
    client.prefetch_keys()  # a worker starting while ORCID's key set fails
    deadline = time.monotonic() + 10
    while not [r for r in emulator.requests if r.path == "/oauth/jwks" and r.status == 503]:
        assert time.monotonic() < deadline, "the warm-up never asked ORCID"
        time.sleep(0.05)
    time.sleep(0.2)  # the warm-up has taken in the 503
    grant = client.exchange_code(emulator.issue_code_for("APP-TEST", JOSIAH, ["openid"], REDIRECT, nonce="a"),
                                 REDIRECT, nonce="a")
    assert str(grant.orcid) == JOSIAH and _jwks_calls(emulator) == 2
