"""Journeys 2 and 3: ORCID's institutional sign-in through the proxy, and the state-less
Institutional Connect redirect, bound safely to the right institutional user."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from bs4 import BeautifulSoup
from flowkit import html_form_fields, path_and_query
from werkzeug.test import Client

from test_consent_hop import app_with, stored_link

JOSIAH, SOFIA = "0000-0002-1825-0097", "0000-0001-5109-3700"


@pytest.fixture
def connect_link(demo_layout, orcid_emulator, orcid_consent):
    """What ORCID's "connect your institution" button leads to, after the researcher
    signed in at ORCID as ``orcid`` and granted: the proxy's connect URL with a code."""

    def connect_link(orcid=JOSIAH, action="Authorize access"):
        url = orcid_emulator.institutional_connect_url(demo_layout.orcid_client_id, orcid)
        location = orcid_consent(url, action=action, orcid_id=orcid)
        assert location.startswith(demo_layout.orcid_connect_url), location
        assert "state=" not in location  # ORCID sends no state here
        return location

    return connect_link


@pytest.fixture
def orcid_signin_app(satosa_config, demo_layout):
    """The proxy configured so that the demo SP plays ORCID's SAML SP (journey 2)."""
    return app_with(satosa_config, orcid_requesters=[demo_layout.sp_entity_id])


def page_of(response):
    return BeautifulSoup(response.get_data(as_text=True), "html.parser")


def verify_at_orcid(client, response, orcid_consent, orcid=JOSIAH):
    """The proxy's state-protected re-authorize; ORCID sends the browser back at once."""
    assert response.status_code == 302, (response.status, response.get_data(as_text=True)[:300])
    authorize = response.headers["Location"]
    assert parse_qs(urlsplit(authorize).query)["state"][0]
    return client.get(path_and_query(orcid_consent(authorize, orcid_id=orcid)))


def test_signin_to_orcid_through_the_proxy_never_hops_and_binds_the_connect_callback(
    orcid_signin_app, satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
    orcid_emulator,
):
    client = orcid_signin_app
    start_login(client, demo_sp)
    response = idp_respond(client, "alice")
    released = sp_receive(response, demo_sp)  # straight back to "ORCID": no interstitial, no hop
    assert "eduPersonOrcid" not in released.attributes
    marker = [h for h in response.headers.getlist("Set-Cookie") if h.startswith("__Host-orcid_signin=")]
    assert marker and "HttpOnly" in marker[0] and "Path=/;" in marker[0] and "Domain" not in marker[0] and "Secure" in marker[0]

    result = verify_at_orcid(client, client.get(path_and_query(connect_link())), orcid_consent)
    assert result.status_code == 200
    page = page_of(result)
    assert page.find(id="orcid-uri").get_text() == f"https://orcid.org/{JOSIAH}"
    assert "connected" in page.h1.get_text()
    assert str(stored_link(demo_layout).orcid) == JOSIAH
    # one token kept for the link; the surplus one from the state-less code is revoked
    assert len(orcid_emulator.tokens(orcid=JOSIAH)) == 1
    # from now on every service behind the proxy gets the iD, with no hop
    start_login(satosa_app, demo_sp)
    released = sp_receive(idp_respond(satosa_app, "alice"), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [f"https://orcid.org/{JOSIAH}"]


def test_without_a_marker_the_link_waits_for_the_next_login_and_its_confirmation(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
):
    result = verify_at_orcid(satosa_app, satosa_app.get(path_and_query(connect_link())), orcid_consent)
    assert result.status_code == 200 and "Almost done" in page_of(result).h1.get_text()
    pending_cookie = [h for h in result.headers.getlist("Set-Cookie") if h.startswith("__Host-orcid_pending=")][0]
    assert "HttpOnly" in pending_cookie and "Secure" in pending_cookie and "SameSite=None" in pending_cookie
    assert stored_link(demo_layout) is None

    start_login(satosa_app, demo_sp)
    confirm = idp_respond(satosa_app, "alice")
    page = page_of(confirm)
    assert page.find(id="orcid-uri").get_text() == f"https://orcid.org/{JOSIAH}"
    action, fields = html_form_fields(confirm.get_data(as_text=True))
    released = sp_receive(satosa_app.post(path_and_query(action), data={**fields, "choice": "yes"}), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [f"https://orcid.org/{JOSIAH}"]
    assert str(stored_link(demo_layout).orcid) == JOSIAH


def test_refusing_the_pending_link_continues_the_login_and_forgets_it(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent, orcid_emulator,
):
    verify_at_orcid(satosa_app, satosa_app.get(path_and_query(connect_link())), orcid_consent)
    start_login(satosa_app, demo_sp)
    action, fields = html_form_fields(idp_respond(satosa_app, "alice").get_data(as_text=True))
    released = sp_receive(satosa_app.post(path_and_query(action), data={**fields, "choice": "no"}), demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    assert stored_link(demo_layout) is None
    assert orcid_emulator.tokens(orcid=JOSIAH) == []  # nothing left behind at ORCID


def test_login_csrf_an_attackers_code_never_binds_the_attackers_id_to_the_victim(
    orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
    orcid_emulator,
):
    # the attacker completes ORCID's connect step with their own account (Sofia) and keeps the link
    attackers_link = connect_link(orcid=SOFIA)
    # the victim (alice) has just signed in to ORCID through the proxy, and follows the link
    victim = orcid_signin_app
    start_login(victim, demo_sp)
    sp_receive(idp_respond(victim, "alice"), demo_sp)
    result = verify_at_orcid(victim, victim.get(path_and_query(attackers_link)), orcid_consent, orcid=JOSIAH)
    assert result.status_code == 400
    page = page_of(result)
    assert "not the one that sent this link" in page.get_text()
    assert page.find(id="reference").get_text()
    assert stored_link(demo_layout) is None
    assert orcid_emulator.tokens(orcid=SOFIA) == []  # the attacker's grant is revoked too


def test_a_connect_link_works_once(satosa_app, connect_link, orcid_emulator):
    link = connect_link()
    first = satosa_app.get(path_and_query(link))
    assert first.status_code == 302
    again = Client(satosa_app.application).get(path_and_query(link))
    assert again.status_code == 400
    assert page_of(again).h1.get_text() == "Your ORCID iD could not be connected"  # a replayed code: same page
    assert page_of(again).find(id="reference").get_text()
    assert len([r for r in orcid_emulator.requests if r.path == "/oauth/token"]) == 1


def test_denied_connect_ends_on_a_clear_page(satosa_app, connect_link, demo_layout):
    link = connect_link(action="Deny access")
    assert "error=access_denied" in link
    response = satosa_app.get(path_and_query(link))
    assert response.status_code == 200 and "not connected" in page_of(response).h1.get_text()
    assert stored_link(demo_layout) is None


def test_expired_code_ends_on_a_clear_page(satosa_app, connect_link, orcid_emulator, demo_layout):
    link = connect_link()
    orcid_emulator.clock = lambda: __import__("time").time() + 3600
    try:
        response = satosa_app.get(path_and_query(link))
    finally:
        import time as _time

        orcid_emulator.clock = _time.time
    assert response.status_code == 400
    assert "could not be connected" in page_of(response).h1.get_text()
    assert stored_link(demo_layout) is None


@pytest.mark.parametrize(
    "query",
    ["", "?code=", "?error=server_error", "?code=" + "x" * 5000, "?code=a&code=b", "?state=s",
     "?code=%00%ff", "?error=access_denied&code=abc"],
)
def test_bad_input_on_connect_is_never_a_500(satosa_app, query, demo_layout):
    response = satosa_app.get(f"/orcid/connect{query}")
    assert response.status_code in (200, 400)
    assert page_of(response).find(id="reference") is not None
    assert "Traceback" not in response.get_data(as_text=True)
    assert stored_link(demo_layout) is None


def test_connect_and_callback_only_answer_get(satosa_app):
    for path in ("/orcid/connect", "/orcid/callback"):
        assert satosa_app.post(path, data={"code": "x"}).status_code == 405
    for path in ("/orcid/choice", "/orcid/confirm"):
        assert satosa_app.get(path).status_code == 405


def test_connect_for_an_id_held_by_another_user_says_so_and_keeps_no_token(
    orcid_signin_app, satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link,
    orcid_consent, orcid_emulator,
):
    from test_consent_hop import to_orcid

    # bob links Josiah's iD through a normal hop first
    start_login(satosa_app, demo_sp)
    satosa_app.get(path_and_query(orcid_consent(to_orcid(satosa_app, idp_respond(satosa_app, "bob")))))
    assert str(stored_link(demo_layout, "bob@demo.example.org").orcid) == JOSIAH
    bobs_tokens = {t.access_token for t in orcid_emulator.tokens(orcid=JOSIAH)}
    # then alice signs in to ORCID through the proxy and connects the same ORCID account
    start_login(orcid_signin_app, demo_sp)
    sp_receive(idp_respond(orcid_signin_app, "alice"), demo_sp)
    result = verify_at_orcid(orcid_signin_app, orcid_signin_app.get(path_and_query(connect_link())), orcid_consent)
    assert result.status_code == 400
    assert "already connected to another account" in page_of(result).get_text()
    assert stored_link(demo_layout) is None
    assert {t.access_token for t in orcid_emulator.tokens(orcid=JOSIAH)} == bobs_tokens  # none of alice's left


def test_an_abandoned_pending_link_is_revoked_when_it_expires(
    satosa_config, demo_layout, connect_link, orcid_emulator,
):
    client = app_with(satosa_config, connect={"pending_ttl": 0})
    first = client.get(path_and_query(connect_link()))  # the browser never comes back from ORCID
    assert first.status_code == 302
    assert len(orcid_emulator.tokens(orcid=JOSIAH)) == 1
    # the next connect (anyone's) reaps it: the abandoned token is revoked at ORCID
    client.get(path_and_query(connect_link(orcid=SOFIA)))
    assert orcid_emulator.tokens(orcid=JOSIAH) == []


def test_a_marker_planted_next_to_the_browsers_own_signin_names_nobody(
    satosa_config, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
):
    """Where SATOSA keeps its state between logins (CONTEXT_STATE_DELETE: false) the marker is
    bound to the SATOSA session that set it: an attacker who copies their own sealed marker
    into the victim's browser (from a sibling domain, or by hand) binds nothing to the attacker."""
    import copy

    from satosa.proxy_server import make_app
    from test_connect_branches import MARKER, sealed_marker

    config = copy.deepcopy(satosa_config)
    config["CONTEXT_STATE_DELETE"] = False
    next(m for m in config["MICRO_SERVICES"] if m["name"] == "orcid")["config"]["orcid_requesters"] = [
        demo_layout.sp_entity_id]
    app = make_app(config)
    # control: in a browser of its own, the marker a session set binds that session's user
    own = Client(app)
    start_login(own, demo_sp)
    sp_receive(idp_respond(own, "carol"), demo_sp)
    done = verify_at_orcid(own, own.get(path_and_query(connect_link(orcid=SOFIA))), orcid_consent, orcid=SOFIA)
    assert "connected" in page_of(done).h1.get_text()
    assert str(stored_link(demo_layout, "carol@demo.example.org").orcid) == SOFIA

    victim = Client(app)
    start_login(victim, demo_sp)
    sp_receive(idp_respond(victim, "alice"), demo_sp)  # the victim signs in to "ORCID" through the proxy
    victim.set_cookie(MARKER, sealed_marker(demo_layout, "bob@demo.example.org"), path="/")  # planted

    result = verify_at_orcid(victim, victim.get(path_and_query(connect_link())), orcid_consent)

    assert result.status_code == 200 and "connected" not in page_of(result).h1.get_text()  # pending, not bound
    assert stored_link(demo_layout, "bob@demo.example.org") is None
    assert stored_link(demo_layout, "alice@demo.example.org") is None
