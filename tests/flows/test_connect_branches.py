"""The branches of the Institutional Connect endpoints that test_institutional_connect.py does
not walk: ORCID failing the state-less exchange, forged/expired sign-in markers, openid among
the predefined scopes, every way the state-protected verification can end, an iD that belongs
to someone else, and the pending link's confirmation at the next login (gone, conflicting,
already linked, linked to another iD, unknown handle)."""
from __future__ import annotations

import json
import secrets
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flowkit import html_form_fields, path_and_query
from werkzeug.test import Client

from test_consent_hop import app_with, plugin_config, stored_link, to_orcid
from test_institutional_connect import SOFIA, connect_link, orcid_signin_app, page_of, verify_at_orcid  # noqa: F401

JOSIAH = "0000-0002-1825-0097"
JOSIAH_URI = f"https://orcid.org/{JOSIAH}"
ALICE = "alice@demo.example.org"
MARKER = "__Host-orcid_signin"
PENDING = "__Host-orcid_pending"


# --- helpers ------------------------------------------------------------------------------
def sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive, user="alice"):
    """The researcher signs in to "ORCID" (the demo SP plays ORCID's SP here) through the proxy."""
    start_login(client, demo_sp)
    released = sp_receive(idp_respond(client, user), demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    assert client.get_cookie(MARKER) is not None


def start_connect(client, link):
    """ORCID's state-less redirect reaches the proxy: returns the proxy's state-protected authorize URL."""
    response = client.get(path_and_query(link))
    assert response.status_code == 302, (response.status, response.get_data(as_text=True)[:300])
    authorize = response.headers["Location"]
    assert parse_qs(urlsplit(authorize).query)["state"][0]
    return authorize


def with_query(url, **changes):
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    query = {k: v for k, v in query.items() if v is not None}
    return f"{parts.path}?{urlencode(query)}"


def sealed_marker(demo_layout, user=ALICE, *, age=0, key=None, issuer=None):
    """A sign-in marker as the plugin seals it, ``age`` seconds old, under the proxy's keys or
    ``key``, for ``user`` of the demo IdP (or ``issuer``)."""
    from satosa_orcid_plugin.cookies import CookieSealer

    keys = [key] if key else demo_layout.env()["SATOSA_ORCID_TOKEN_KEYS"].split(",")
    issued = int(time.time()) - age
    payload = json.dumps({"u": user, "i": issuer or demo_layout.idp_entity_id, "t": issued,
                          "n": secrets.token_urlsafe(16)}, separators=(",", ":")).encode()
    return CookieSealer(keys, "institutional sign-in marker")._fernet.encrypt_at_time(payload, issued).decode()


def active_tokens(orcid_emulator, orcid=JOSIAH):
    return orcid_emulator.tokens(orcid=orcid)


def token_requests(orcid_emulator):
    return [r for r in orcid_emulator.requests if r.path == "/oauth/token"]


def hop_link(client, demo_sp, start_login, idp_respond, orcid_consent, sp_receive, user="alice", orcid=JOSIAH):
    """A normal login with the ORCID hop: ``user`` links ``orcid``."""
    start_login(client, demo_sp)
    callback = orcid_consent(to_orcid(client, idp_respond(client, user)), orcid_id=orcid)
    released = sp_receive(client.get(path_and_query(callback)), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [f"https://orcid.org/{orcid}"]


# --- the state-less exchange ------------------------------------------------------------------
@pytest.mark.parametrize("fault", [{"kind": "status", "status": 500}, {"kind": "drop"}, {"kind": "malformed"},
                                   {"kind": "status", "status": 401, "body": '{"error":"invalid_client"}',
                                    "content_type": "application/json"}])
def test_orcid_failing_the_stateless_exchange_ends_on_a_page_and_the_code_is_not_retried(
    satosa_app, connect_link, orcid_emulator, demo_layout, fault,
):
    link = connect_link()
    orcid_emulator.faults.add(endpoint="token", **fault)
    response = satosa_app.get(path_and_query(link))
    assert response.status_code == 400
    page = page_of(response)
    assert "could not be connected" in page.h1.get_text() and page.find(id="reference").get_text()
    assert len(token_requests(orcid_emulator)) == 1  # exchanged at once, never retried
    assert satosa_app.get_cookie(PENDING) is None and stored_link(demo_layout) is None


# --- the sign-in marker ----------------------------------------------------------------------------
@pytest.mark.parametrize("marker", ["valid", "expired", "forged", "garbage"])
def test_only_a_fresh_marker_sealed_by_the_proxy_binds_on_the_spot(
    satosa_app, connect_link, orcid_consent, demo_layout, marker,
):
    from satosa_orcid_plugin.tokens import TokenCipher

    value = {
        "valid": lambda: sealed_marker(demo_layout),
        "expired": lambda: sealed_marker(demo_layout, age=3600),  # marker_ttl is 15 minutes
        "forged": lambda: sealed_marker(demo_layout, key=TokenCipher.generate_key()),
        "garbage": lambda: "not-a-marker",
    }[marker]()
    satosa_app.set_cookie(MARKER, value)
    result = verify_at_orcid(satosa_app, satosa_app.get(path_and_query(connect_link())), orcid_consent)
    assert result.status_code == 200
    title = page_of(result).h1.get_text()
    if marker == "valid":
        assert "connected" in title
        assert str(stored_link(demo_layout).orcid) == JOSIAH
    else:  # treated as no marker at all: nobody is bound, the next login must confirm
        assert "Almost done" in title
        assert stored_link(demo_layout) is None
        assert satosa_app.get_cookie(PENDING) is not None


def test_openid_among_the_predefined_scopes_verifies_with_a_nonce(
    orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, orcid_emulator, orcid_consent,
):
    client = orcid_signin_app
    sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive)
    url = orcid_emulator.institutional_connect_url(demo_layout.orcid_client_id, scopes="openid /read-limited /activities/update")
    link = orcid_consent(url, orcid_id=JOSIAH)
    authorize = start_connect(client, link)
    query = parse_qs(urlsplit(authorize).query)
    assert set(query["scope"][0].split()) == {"openid", "/read-limited", "/activities/update"}
    assert query["nonce"][0]
    result = client.get(path_and_query(orcid_consent(authorize, orcid_id=JOSIAH)))
    assert result.status_code == 200 and "connected" in page_of(result).h1.get_text()
    assert str(stored_link(demo_layout).orcid) == JOSIAH


# --- the state-protected verification ---------------------------------------------------------------
@pytest.mark.parametrize(
    "change, status, title",
    [
        ({"code": None, "error": "access_denied", "error_description": "User denied access"}, 200, "not connected"),
        ({"code": None, "error": "server_error"}, 400, "could not be connected"),
        ({"code": None}, 400, "could not be connected"),
    ],
    ids=["denied", "orcid-error", "no-code"],
)
def test_a_verification_that_does_not_come_back_right_discards_the_pending_link(
    orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
    orcid_emulator, change, status, title,
):
    client = orcid_signin_app
    sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive)
    authorize = start_connect(client, connect_link())
    callback = orcid_consent(authorize, orcid_id=JOSIAH)
    response = client.get(with_query(callback, **change))
    assert response.status_code == status
    page = page_of(response)
    assert title in page.h1.get_text() and page.find(id="reference").get_text()
    assert stored_link(demo_layout) is None
    assert active_tokens(orcid_emulator) == []  # the state-less grant is revoked, the fresh code never used
    assert len(token_requests(orcid_emulator)) == 1
    if status == 400:  # the marker goes too: the next ORCID link needs a new institutional sign-in
        assert any(h.startswith(f"{MARKER}=;") for h in response.headers.getlist("Set-Cookie"))


@pytest.mark.parametrize("state", ["forged-state", None], ids=["wrong-state", "no-state"])
def test_a_verification_callback_with_a_wrong_state_leaves_the_connect_to_the_real_one(
    orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
    orcid_emulator, state,
):
    """A forged verification callback gets a page and consumes nothing: no exchange, the pending
    grant and the marker stay, and the real callback still links the iD."""
    client = orcid_signin_app
    sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive)
    callback = orcid_consent(start_connect(client, connect_link()), orcid_id=JOSIAH)
    response = client.get(with_query(callback, state=state))
    assert response.status_code == 400
    page = page_of(response)
    assert "could not be connected" in page.h1.get_text() and page.find(id="reference").get_text()
    assert len(token_requests(orcid_emulator)) == 1  # only the state-less exchange
    assert not any(h.startswith(f"{MARKER}=;") for h in response.headers.getlist("Set-Cookie"))
    result = client.get(path_and_query(callback))
    assert result.status_code == 200 and "connected" in page_of(result).h1.get_text()
    assert str(stored_link(demo_layout).orcid) == JOSIAH


def test_orcid_failing_the_verification_exchange_discards_the_pending_link(
    orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
    orcid_emulator,
):
    client = orcid_signin_app
    sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive)
    callback = orcid_consent(start_connect(client, connect_link()), orcid_id=JOSIAH)
    orcid_emulator.faults.add(endpoint="token", kind="status", status=503)
    response = client.get(path_and_query(callback))
    assert response.status_code == 400 and "could not be connected" in page_of(response).h1.get_text()
    assert stored_link(demo_layout) is None
    assert active_tokens(orcid_emulator) == []


def test_a_replayed_verification_callback_is_refused_and_the_link_stands(
    orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
    orcid_emulator,
):
    client = orcid_signin_app
    sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive)
    callback = orcid_consent(start_connect(client, connect_link()), orcid_id=JOSIAH)
    old_state = client.get_cookie("SATOSA_STATE")
    assert "connected" in page_of(client.get(path_and_query(callback))).h1.get_text()
    replay = Client(client.application)
    replay.set_cookie(old_state.key, old_state.value, domain=old_state.domain or "localhost")
    response = replay.get(path_and_query(callback))
    assert response.status_code == 400 and page_of(response).find(id="reference").get_text()
    assert str(stored_link(demo_layout).orcid) == JOSIAH
    assert len(active_tokens(orcid_emulator)) == 1  # the link's token survives
    assert len(token_requests(orcid_emulator)) == 2  # state-less code once, fresh code once


def test_a_pending_link_that_expired_before_the_verification_binds_nothing(
    satosa_config, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link, orcid_consent,
    orcid_emulator,
):
    client = app_with(satosa_config, orcid_requesters=[demo_layout.sp_entity_id], connect={"pending_ttl": 0})
    sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive)
    callback = orcid_consent(start_connect(client, connect_link()), orcid_id=JOSIAH)
    fresh_code = parse_qs(urlsplit(callback).query)["code"][0]
    response = client.get(path_and_query(callback))
    assert response.status_code == 400 and "could not be connected" in page_of(response).h1.get_text()
    assert stored_link(demo_layout) is None
    fresh = [t for t in orcid_emulator.tokens(orcid=JOSIAH, active_only=False) if t.code == fresh_code]
    assert fresh and fresh[0].revoked == "CLIENT_REVOKED"


def test_connect_for_an_id_another_user_holds_is_refused(
    satosa_app, orcid_signin_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, connect_link,
    orcid_consent,
):
    hop_link(satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive, user="bob")
    client = orcid_signin_app
    sign_in_to_orcid_through(client, demo_sp, start_login, idp_respond, sp_receive, user="alice")
    result = verify_at_orcid(client, client.get(path_and_query(connect_link())), orcid_consent)
    assert result.status_code == 400
    assert "could not be connected" in page_of(result).h1.get_text()
    assert stored_link(demo_layout) is None
    assert str(stored_link(demo_layout, "bob@demo.example.org").orcid) == JOSIAH


def test_an_unexpected_failure_is_a_page_with_a_reference_not_a_traceback(satosa_app, connect_link, monkeypatch):
    from satosa_orcid_plugin.services import LoginService

    def broken(self, code, redirect_uri):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(LoginService, "connect_exchange", broken)
    response = satosa_app.get(path_and_query(connect_link()))
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert page_of(response).find(id="reference").get_text()
    assert "Traceback" not in text and "database on fire" not in text


# --- the pending link at the next login -----------------------------------------------------------
@pytest.fixture
def pending_for_next_login(satosa_app, connect_link, orcid_consent):
    """Institutional Connect without a marker: a verified pending link behind a cookie."""

    def pending_for_next_login(client=satosa_app, orcid=JOSIAH):
        result = verify_at_orcid(client, client.get(path_and_query(connect_link(orcid=orcid))), orcid_consent,
                                 orcid=orcid)
        assert "Almost done" in page_of(result).h1.get_text()
        return client.get_cookie(PENDING).value

    return pending_for_next_login


def test_confirm_without_its_login_is_a_clear_page(satosa_app):
    response = satosa_app.post("/orcid/confirm", data={"state": "made-up", "choice": "yes"})
    assert response.status_code == 400
    page = page_of(response)
    assert "expired" in page.h1.get_text() and page.find(id="reference").get_text()


def test_a_pending_link_gone_by_the_time_it_is_confirmed_continues_without_the_id(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, pending_for_next_login,
):
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher

    handle = pending_for_next_login()
    start_login(satosa_app, demo_sp)
    confirm = idp_respond(satosa_app, "alice")
    action, fields = html_form_fields(confirm.get_data(as_text=True))
    env = demo_layout.env()
    store = Store.from_url(env["SATOSA_ORCID_DATABASE_URL"], TokenCipher.from_keys(env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
    try:
        store.pending.delete(handle)  # expired, or taken in another tab
    finally:
        store.db.dispose()
    answer = satosa_app.post(path_and_query(action), data={**fields, "choice": "yes"})
    released = sp_receive(answer, demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    assert stored_link(demo_layout) is None
    assert any(h.startswith(f"{PENDING}=;") for h in answer.headers.getlist("Set-Cookie"))


def test_confirming_an_id_someone_else_linked_meanwhile_continues_without_it(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, orcid_consent, pending_for_next_login,
):
    pending_for_next_login()
    start_login(satosa_app, demo_sp)
    action, fields = html_form_fields(idp_respond(satosa_app, "alice").get_data(as_text=True))
    hop_link(Client(satosa_app.application), demo_sp, start_login, idp_respond, orcid_consent, sp_receive, user="bob")
    released = sp_receive(satosa_app.post(path_and_query(action), data={**fields, "choice": "yes"}), demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    assert stored_link(demo_layout) is None
    assert str(stored_link(demo_layout, "bob@demo.example.org").orcid) == JOSIAH


def test_a_pending_link_for_the_id_the_user_already_has_is_dropped_without_asking(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, orcid_consent, orcid_emulator,
    pending_for_next_login,
):
    hop_link(satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive)
    pending_for_next_login()
    assert len(active_tokens(orcid_emulator)) == 2  # the link's and the pending one's
    start_login(satosa_app, demo_sp)
    released = sp_receive(idp_respond(satosa_app, "alice"), demo_sp)  # no confirmation page
    assert released.attributes["eduPersonOrcid"] == [JOSIAH_URI]
    assert len(active_tokens(orcid_emulator)) == 1  # the surplus pending grant is revoked


def test_a_pending_link_to_another_id_is_confirmed_before_it_replaces_the_users_link(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive, orcid_consent, pending_for_next_login,
):
    hop_link(satosa_app, demo_sp, start_login, idp_respond, orcid_consent, sp_receive, orcid=SOFIA)
    pending_for_next_login(orcid=JOSIAH)
    start_login(satosa_app, demo_sp)
    confirm = idp_respond(satosa_app, "alice")
    assert page_of(confirm).find(id="orcid-uri").get_text() == JOSIAH_URI  # asked, not silently switched
    action, fields = html_form_fields(confirm.get_data(as_text=True))
    released = sp_receive(satosa_app.post(path_and_query(action), data={**fields, "choice": "yes"}), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [JOSIAH_URI]
    assert str(stored_link(demo_layout).orcid) == JOSIAH


def test_an_unknown_pending_cookie_is_ignored(satosa_app, demo_sp, start_login, idp_respond):
    satosa_app.set_cookie(PENDING, "no-such-handle")
    start_login(satosa_app, demo_sp)
    response = idp_respond(satosa_app, "alice")
    assert response.status_code == 200
    assert "Connect your ORCID iD" in response.get_data(as_text=True)  # the normal interstitial


def test_the_shipped_config_names_orcids_saml_sps_and_the_emulators(satosa_config, demo_layout):
    requesters = plugin_config(satosa_config)["orcid_requesters"]
    assert requesters[:1] == ["https://orcid.org/saml2/sp/1"]  # no guessed sandbox SP
    assert requesters[1] == demo_layout.emulator_sp_entity_id == f"{demo_layout.emulator_url}/saml2/sp/1"


def test_deployments_without_the_emulator_can_leave_its_variable_empty(demo_layout):
    from satosa_orcid_plugin.config import parse_config
    from satosa_orcid_plugin.devstack.layout import load_proxy_config

    env = {**demo_layout.env(), "SATOSA_ORCID_EMULATOR_SP": ""}
    raw = next(m for m in load_proxy_config(demo_layout.proxy_conf_dir, env)["MICRO_SERVICES"] if m["name"] == "orcid")
    assert parse_config(raw["config"]).orcid_requesters == ("https://orcid.org/saml2/sp/1",)
