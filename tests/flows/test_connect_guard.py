"""Attacks on ORCID's state-less connect redirect, as an attacker would try them: burning the
institution's ORCID quota with made-up codes, and planting or replaying the sign-in marker."""
from __future__ import annotations

import secrets
import string

import pytest
import sqlalchemy as sa
from flowkit import path_and_query
from werkzeug.test import Client

from test_connect_branches import ALICE, JOSIAH, JOSIAH_URI, MARKER, PENDING, sign_in_to_orcid_through, token_requests
from test_consent_hop import app_with, stored_link
from test_institutional_connect import SOFIA, connect_link, orcid_signin_app, page_of, verify_at_orcid  # noqa: F401

ATTACKER, NEIGHBOUR = "203.0.113.7", "198.51.100.20"
ALPHANUMERIC = string.ascii_letters + string.digits


def connect_as(client, address, query):
    return client.get(f"/orcid/connect?{query}", environ_overrides={"REMOTE_ADDR": address})


def once_rows(demo_layout) -> int:
    engine = sa.create_engine(demo_layout.env()["SATOSA_ORCID_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT count(*) FROM orcid_once WHERE key LIKE 'code:%'")).scalar_one()
    finally:
        engine.dispose()


def test_made_up_codes_from_one_client_cost_at_most_its_burst_and_real_users_still_connect(
    satosa_config, demo_layout, orcid_emulator, connect_link, orcid_consent,
):
    burst = 5
    app = app_with(satosa_config, connect={"limits": {"client_rate": 0.001, "client_burst": burst}})
    statuses = [connect_as(app, ATTACKER, "code=" + "".join(secrets.choice(ALPHANUMERIC) for _ in range(6))).status_code
                for _ in range(200)]
    assert len(token_requests(orcid_emulator)) <= burst  # 0.001/s refills nothing in this test's lifetime
    assert statuses.count(400) <= burst and statuses.count(429) >= 200 - burst
    page = connect_as(app, ATTACKER, "code=abc123")
    assert page.status_code == 429 and page.headers["Retry-After"]
    assert "Too many attempts" in page_of(page).h1.get_text() and page_of(page).find(id="reference").get_text()

    # Codes that cannot be ORCID's never reach ORCID, and cost no token of the bucket.
    for code in ("x" * 300, "abc", "abc 123", "ab%0D%0Acd", "%27%20OR%201%3D1", "abc123%3Cscript%3E", "%C3%A9" * 8):
        response = connect_as(app, NEIGHBOUR, f"code={code}")
        assert response.status_code == 400, code
    assert len(token_requests(orcid_emulator)) <= burst
    assert once_rows(demo_layout) == 0  # codes ORCID refused (and those never sent) leave no single-use row

    # A researcher on another network connects as always.
    result = verify_at_orcid(app, app.get(path_and_query(connect_link()), environ_overrides={"REMOTE_ADDR": NEIGHBOUR}),
                             orcid_consent)
    assert result.status_code == 200 and "Almost done" in page_of(result).h1.get_text()


def test_the_deployment_wide_bucket_caps_codes_from_many_addresses(satosa_config, orcid_emulator):
    app = app_with(satosa_config, connect={"limits": {"total_rate": 0.001, "total_burst": 3}})
    statuses = [connect_as(app, f"192.0.2.{i}", "code=" + "".join(secrets.choice(ALPHANUMERIC) for _ in range(6)))
                .status_code for i in range(1, 21)]
    assert len(token_requests(orcid_emulator)) <= 3 and statuses.count(429) >= 17


def test_forwarded_for_counts_only_when_configured(satosa_config, orcid_emulator):
    """Behind a reverse proxy every client has the proxy's address; the client's own
    X-Forwarded-For entries never pick a fresh bucket unless trusted_proxies says so."""
    app = app_with(satosa_config, connect={"limits": {"client_rate": 0.001, "client_burst": 2}})
    for i in range(6):
        app.get(f"/orcid/connect?code=abc12{i}", environ_overrides={"REMOTE_ADDR": ATTACKER},
                headers={"X-Forwarded-For": f"192.0.2.{i}"})
    assert len(token_requests(orcid_emulator)) <= 2


# --- the sign-in marker ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["same-browser", "another-browser"])
def test_a_used_marker_binds_nothing_when_presented_again(
    orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent, where,
):
    """Alice's marker, once used, is refused in any browser it is replayed or copied into: the
    second iD is not bound to Alice, it waits for its owner's next login and confirmation."""
    alice = orcid_signin_app
    sign_in_to_orcid_through(alice, demo_sp, start_login, idp_respond, sp_receive)
    marker = alice.get_cookie(MARKER).value
    result = verify_at_orcid(alice, alice.get(path_and_query(connect_link())), orcid_consent)
    assert "connected" in page_of(result).h1.get_text() and str(stored_link(demo_layout).orcid) == JOSIAH
    assert alice.get_cookie(MARKER) is None  # cleared where it was used

    victim = alice if where == "same-browser" else Client(alice.application)
    victim.set_cookie(MARKER, marker)
    result = verify_at_orcid(victim, victim.get(path_and_query(connect_link(SOFIA))), orcid_consent, orcid=SOFIA)
    assert result.status_code == 200 and "Almost done" in page_of(result).h1.get_text()
    assert str(stored_link(demo_layout).orcid) == JOSIAH  # Alice still has her own iD, not the victim's
    assert victim.get_cookie(PENDING) is not None


def test_the_connected_page_names_the_account_and_the_record(
    orcid_signin_app, demo_sp, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
):
    client = orcid_signin_app
    start_login(client, demo_sp)
    response = idp_respond(client, "alice")
    sp_receive(response, demo_sp)
    marker = next(h for h in response.headers.getlist("Set-Cookie") if h.startswith(f"{MARKER}="))
    attributes = [a.strip() for a in marker.split(";")[1:]]
    assert {"Path=/", "Secure", "HttpOnly", "SameSite=Lax"} <= set(attributes)
    assert not [a for a in attributes if a.lower().startswith("domain")]
    page = page_of(verify_at_orcid(client, client.get(path_and_query(connect_link())), orcid_consent))
    assert page.find(id="account").get_text() == ALICE
    assert page.find(id="orcid-name").get_text() == "Josiah Carberry"
    assert page.find(id="orcid-uri").get_text() == JOSIAH_URI


def test_without_secure_cookies_the_names_carry_no_prefix(satosa_config, demo_layout, demo_sp, start_login,
                                                          idp_respond, sp_receive):
    """``cookie_secure: false`` (plain http, where browsers refuse Secure and __Host- cookies)."""
    client = app_with(satosa_config, orcid_requesters=[demo_layout.sp_entity_id], connect={"cookie_secure": False})
    start_login(client, demo_sp)
    response = idp_respond(client, "alice")
    sp_receive(response, demo_sp)
    marker = next(h for h in response.headers.getlist("Set-Cookie") if "_signin=" in h)
    assert marker.startswith("orcid_signin=") and "Secure" not in marker and "Path=/;" in marker


def test_the_pending_handle_ends_with_the_browser_and_the_confirmation_names_the_record(
    satosa_app, demo_sp, start_login, idp_respond, connect_link, orcid_consent,
):
    """A shared browser's next user finds no pending link once the browser was closed; one who
    does sees whose ORCID record it is, and when and from where the connection was started."""
    result = verify_at_orcid(satosa_app, satosa_app.get(path_and_query(connect_link()),
                                                        environ_overrides={"REMOTE_ADDR": "192.0.2.7"}), orcid_consent)
    cookie = next(h for h in result.headers.getlist("Set-Cookie") if h.startswith(f"{PENDING}="))
    attributes = [a.strip() for a in cookie.split(";")[1:]]
    assert {"Path=/", "Secure", "HttpOnly", "SameSite=None"} <= set(attributes)
    assert not [a for a in attributes if a.lower().startswith(("domain", "max-age", "expires"))]  # a session cookie
    start_login(satosa_app, demo_sp)
    page = page_of(idp_respond(satosa_app, "alice"))
    assert page.find(id="orcid-name").get_text() == "Josiah Carberry"
    assert page.find(id="orcid-uri").get_text() == JOSIAH_URI
    assert page.find(id="started").get_text().endswith("UTC")
    assert page.find(id="origin").get_text() == "192.0.2.7"  # the address the connect came from
