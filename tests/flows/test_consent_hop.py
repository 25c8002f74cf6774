"""Journey 1 through SATOSA's real WSGI app built from the real proxy_conf/, with the
demo SP and IdP as real pysaml2 objects and the ORCID emulator on loopback."""
from __future__ import annotations

import copy
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from bs4 import BeautifulSoup
from flowkit import html_form_fields, path_and_query
from satosa.proxy_server import make_app
from werkzeug.test import Client

JOSIAH = "https://orcid.org/0000-0002-1825-0097"
ORCID_OID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.16"


def plugin_config(satosa_config) -> dict:
    return next(m for m in satosa_config["MICRO_SERVICES"] if m["name"] == "orcid")["config"]


def app_with(satosa_config, **changes) -> Client:
    """The proxy with the plugin config changed (e.g. on_error=fail)."""
    config = copy.deepcopy(satosa_config)
    plugin_config(config).update(changes)
    return Client(make_app(config))


def to_orcid(client, response) -> str:
    """From the proxy's answer to the IdP response, through the interstitial, to ORCID."""
    assert response.status_code == 200, response.status
    page = response.get_data(as_text=True)
    assert "Connect your ORCID iD" in page
    action, fields = html_form_fields(page)
    answer = client.post(path_and_query(action), data={**fields, "choice": "connect"})
    assert answer.status_code == 302, answer.status
    return answer.headers["Location"]


def stored_link(demo_layout, user="alice@demo.example.org"):
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher

    env = demo_layout.env()
    store = Store.from_url(env["SATOSA_ORCID_DATABASE_URL"], TokenCipher.from_keys(env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
    try:
        return store.links.get_active(user, issuer=demo_layout.idp_entity_id)
    finally:
        store.db.dispose()


@pytest.fixture
def hop(satosa_app, demo_sp, start_login, idp_respond):
    """Run a login up to the ORCID authorize URL; returns it."""

    def hop(client=satosa_app, user="alice"):
        start_login(client, demo_sp)
        return to_orcid(client, idp_respond(client, user))

    return hop


def test_first_login_hops_once_and_the_sp_receives_the_verified_id(
    satosa_app, demo_sp, demo_layout, hop, orcid_consent, follow_callback, sp_receive, orcid_emulator,
    start_login, idp_respond,
):
    authorize = hop()
    query = parse_qs(urlsplit(authorize).query)
    assert query["redirect_uri"] == [demo_layout.orcid_callback_url]
    assert query["state"][0] and query["nonce"][0] and query["scope"] == ["openid"]
    released = sp_receive(follow_callback(satosa_app, orcid_consent(authorize)), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [JOSIAH]
    assert released.attribute_names["eduPersonOrcid"] == ORCID_OID
    assert released.attributes["eduPersonPrincipalName"] == ["alice@demo.example.org"]
    assert str(stored_link(demo_layout).orcid) == "0000-0002-1825-0097"

    # the next login releases the stored iD with no ORCID round trip at all
    orcid_emulator.requests.clear()
    start_login(satosa_app, demo_sp)
    released = sp_receive(idp_respond(satosa_app, "alice"), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [JOSIAH]
    assert orcid_emulator.requests == []


def test_deny_at_orcid_continues_without_the_attribute_and_is_remembered(
    satosa_app, demo_sp, demo_layout, hop, orcid_consent, follow_callback, sp_receive, start_login, idp_respond,
):
    released = sp_receive(follow_callback(satosa_app, orcid_consent(hop(), action="Deny access")), demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    assert released.attributes["eduPersonPrincipalName"] == ["alice@demo.example.org"]
    assert stored_link(demo_layout) is None
    # "not now": the next login goes straight through, without the interstitial
    start_login(satosa_app, demo_sp)
    released = sp_receive(idp_respond(satosa_app, "alice"), demo_sp)
    assert "eduPersonOrcid" not in released.attributes


@pytest.mark.parametrize("choice", ["not_now", "never"])
def test_interstitial_not_now_and_never_skip_orcid(
    satosa_app, demo_sp, start_login, idp_respond, sp_receive, choice, orcid_emulator,
):
    start_login(satosa_app, demo_sp)
    page = idp_respond(satosa_app, "alice").get_data(as_text=True)
    action, fields = html_form_fields(page)
    released = sp_receive(satosa_app.post(path_and_query(action), data={**fields, "choice": choice}), demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    start_login(satosa_app, demo_sp)
    released = sp_receive(idp_respond(satosa_app, "alice"), demo_sp)  # not asked again
    assert "eduPersonOrcid" not in released.attributes
    assert orcid_emulator.requests == []


def test_interstitial_speaks_the_browsers_language_and_passes_it_to_orcid(
    satosa_app, demo_sp, start_login, demo_idp,
):
    request = start_login(satosa_app, demo_sp)
    destination, fields = demo_idp.respond(request.saml_request, request.relay_state, request.binding, "alice",
                                           sigalg=request.sigalg, signature=request.signature)
    response = satosa_app.post(urlsplit(destination).path, data=fields, headers={"Accept-Language": "de-DE,de;q=0.9"})
    page = response.get_data(as_text=True)
    soup = BeautifulSoup(page, "html.parser")
    assert soup.html["lang"] == "de"
    assert "ORCID iD verbinden" in page
    # who asks (the SP's mdui:DisplayName, via the orcid_hint request micro-service) and who collects
    assert "Demo Research Portal" in page and "Demo University" in page
    for button in soup.find_all("button"):
        assert button.get_text(strip=True)  # every button has a visible label
    assert "http" not in "".join(str(t) for t in soup.find_all(["link", "script", "img"]))  # no external assets
    action, fields = html_form_fields(page)
    authorize = satosa_app.post(path_and_query(action), data={**fields, "choice": "connect"}).headers["Location"]
    assert parse_qs(urlsplit(authorize).query)["lang"] == ["de"]


def test_a_tampered_state_leaves_the_sign_in_to_the_real_callback(
    satosa_app, demo_sp, demo_layout, hop, orcid_consent, follow_callback, sp_receive,
):
    """A callback whose state is not this browser's (forged, or from another tab) is refused
    with a page and consumes nothing: the sign-in in progress still finishes with the real one."""
    callback = orcid_consent(hop())
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = satosa_app.get(f"{parts.path}?{urlencode({**query, 'state': query['state'][:-2] + 'xx'})}")
    assert forged.status_code == 400
    page = BeautifulSoup(forged.get_data(as_text=True), "html.parser")
    assert "not for this sign-in" in page.h1.get_text() and page.find(id="reference").get_text()
    assert stored_link(demo_layout) is None
    released = sp_receive(satosa_app.get(f"{parts.path}?{urlencode(query)}"), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [JOSIAH]


def test_a_tampered_state_does_not_fail_the_login_under_on_error_fail(
    satosa_config, demo_sp, demo_layout, orcid_consent, start_login, idp_respond, sp_receive,
):
    client = app_with(satosa_config, on_error="fail")
    start_login(client, demo_sp)
    callback = orcid_consent(to_orcid(client, idp_respond(client, "alice")))
    response = client.get(path_and_query(callback).replace("state=", "state=x"))
    assert response.status_code == 400 and "SAMLResponse" not in response.get_data(as_text=True)
    assert stored_link(demo_layout) is None
    assert sp_receive(client.get(path_and_query(callback)), demo_sp).attributes["eduPersonOrcid"] == [JOSIAH]


def test_replayed_callback_is_refused_and_the_tokens_survive(
    satosa_app, demo_sp, demo_layout, hop, orcid_consent, follow_callback, sp_receive, orcid_emulator,
):
    authorize = hop()
    callback = orcid_consent(authorize)
    old_cookie = satosa_app.get_cookie("SATOSA_STATE")
    assert old_cookie is not None
    assert sp_receive(follow_callback(satosa_app, callback), demo_sp).attributes["eduPersonOrcid"] == [JOSIAH]
    # an attacker (or a back button) presents the same callback with the old state cookie
    attacker = Client(satosa_app.application)
    attacker.set_cookie(old_cookie.key, old_cookie.value, domain=old_cookie.domain or "localhost")
    response = attacker.get(path_and_query(callback))
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "already used" in page and BeautifulSoup(page, "html.parser").find(id="reference").get_text()
    # the code was not presented twice, so ORCID did not revoke the tokens
    assert len([r for r in orcid_emulator.requests if r.path == "/oauth/token"]) == 1
    assert orcid_emulator.tokens(orcid="0000-0002-1825-0097")  # still active
    assert str(stored_link(demo_layout).orcid) == "0000-0002-1825-0097"


def test_callback_without_a_state_cookie_gets_a_page_with_a_reference(
    satosa_app, hop, orcid_consent, demo_layout,
):
    callback = orcid_consent(hop())
    stranger = Client(satosa_app.application)
    response = stranger.get(path_and_query(callback))
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert "expired" in soup.h1.get_text()
    assert len(soup.find(id="reference").get_text()) == 36
    assert stored_link(demo_layout) is None


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_callback_answers_only_get(satosa_app, method):
    # (SATOSA itself fails on a body-less POST without Content-Type before routing; send one)
    response = satosa_app.open("/orcid/callback?code=abc&state=x", method=method, data={"a": "b"})
    assert response.status_code == 405 and response.headers["Allow"] == "GET"


@pytest.mark.parametrize(
    "fault, reason",
    [
        ({"kind": "status", "status": 500}, "orcid_unavailable"),
        ({"kind": "status", "status": 503}, "orcid_unavailable"),
        ({"kind": "malformed"}, "orcid_bad_response"),
        ({"kind": "status", "status": 200, "body": "<html>down</html>", "content_type": "text/html"}, "orcid_bad_response"),
        ({"kind": "drop"}, "orcid_unavailable"),
        ({"kind": "delay", "seconds": 12}, "orcid_unavailable"),
        ({"kind": "bad_signature"}, "invalid_id_token"),
        ({"kind": "wrong_aud"}, "invalid_id_token"),
        ({"kind": "wrong_iss"}, "invalid_id_token"),
        ({"kind": "expired"}, "invalid_id_token"),
        ({"kind": "sub_mismatch"}, "invalid_id_token"),
        ({"kind": "unknown_kid"}, "invalid_id_token"),
        ({"kind": "wrong_nonce"}, "invalid_id_token"),
    ],
)
def test_each_orcid_fault_continues_the_login_without_storing_anything(
    satosa_app, demo_sp, demo_layout, hop, orcid_consent, follow_callback, sp_receive, orcid_emulator, caplog,
    fault, reason,
):
    callback = orcid_consent(hop())
    orcid_emulator.faults.add(endpoint="token", **fault)
    released = sp_receive(follow_callback(satosa_app, callback), demo_sp)
    assert "eduPersonOrcid" not in released.attributes
    assert released.attributes["eduPersonPrincipalName"] == ["alice@demo.example.org"]
    assert stored_link(demo_layout) is None
    assert any(f"ORCID hop failed: {reason}" in r.getMessage() for r in caplog.records)


def test_an_upstream_eduPersonOrcid_is_not_released_unless_that_idp_is_trusted(
    satosa_app, demo_sp, start_login, idp_respond, monkeypatch, sp_receive,
):
    from satosa_orcid_plugin.devstack import demo_idp as idp_module

    real = idp_module.demo_user_attributes
    # the institutional IdP asserts an iD nobody verified: it must not reach the SP
    monkeypatch.setattr(idp_module, "demo_user_attributes",
                        lambda user: {**real(user), "eduPersonOrcid": ["https://orcid.org/0000-0001-5109-3700"]})
    start_login(satosa_app, demo_sp)
    page = idp_respond(satosa_app, "alice").get_data(as_text=True)
    assert "Connect your ORCID iD" in page  # not linked: it asks instead of trusting the IdP
    action, fields = html_form_fields(page)
    released = sp_receive(satosa_app.post(path_and_query(action), data={**fields, "choice": "not_now"}), demo_sp)
    assert "eduPersonOrcid" not in released.attributes


def test_member_integration_writes_employment_after_the_hop_through_the_worker(
    satosa_config, demo_sp, demo_layout, orcid_consent, start_login, idp_respond, orcid_emulator, sp_receive,
):
    from satosa_orcid_plugin.ops.discovery import load_plugin_config  # noqa: F401 (documents the entry point)
    from satosa_orcid_plugin.config import parse_config
    from satosa_orcid_plugin.wiring import sync_worker

    config = copy.deepcopy(satosa_config)
    raw = plugin_config(config)
    raw["orcid"]["scopes"] = ["openid", "/read-limited", "/activities/update"]
    raw["affiliations"] = {
        "organization": {"name": "Boston University", "city": "Boston", "country": "US",
                         "disambiguated_id": "https://ror.org/05qwgg493", "disambiguation_source": "ROR"},
        "department_attribute": "ou", "role_attribute": "title",
    }
    client = Client(make_app(config))
    start_login(client, demo_sp)
    authorize = to_orcid(client, idp_respond(client, "alice"))
    assert parse_qs(urlsplit(authorize).query)["scope"] == ["openid /read-limited /activities/update"]
    response = client.get(path_and_query(orcid_consent(authorize)))
    assert sp_receive(response, demo_sp).attributes["eduPersonOrcid"] == [JOSIAH]
    # nothing was written to ORCID during the login
    assert orcid_emulator.member_api.items_of("0000-0002-1825-0097") == []

    settings = parse_config(raw)
    worker = sync_worker(settings)
    report = worker.run_once()
    items = orcid_emulator.member_api.items_of("0000-0002-1825-0097", "employment")
    assert len(items) == 1, report
    body = items[0].body
    assert body["organization"]["disambiguated-organization"]["disambiguated-organization-identifier"] == \
        "https://ror.org/05qwgg493"
    assert body["department-name"] == "Department of Physics" and body["role-title"] == "Research Fellow"
    # a second worker run writes nothing more
    sync_worker(settings).run_once()
    assert len(orcid_emulator.member_api.items_of("0000-0002-1825-0097", "employment")) == 1
    worker.outbox.db.dispose()


def test_no_token_code_or_secret_in_the_database_file_or_our_logs(
    satosa_app, demo_sp, demo_layout, hop, orcid_consent, follow_callback, sp_receive, orcid_emulator, caplog,
):
    import logging

    caplog.set_level(logging.DEBUG, logger="satosa_orcid_plugin")
    callback = orcid_consent(hop())
    code = parse_qs(urlsplit(callback).query)["code"][0]
    sp_receive(follow_callback(satosa_app, callback), demo_sp)
    token = orcid_emulator.tokens(orcid="0000-0002-1825-0097")[0]
    secrets_ = [token.access_token, token.refresh_token, demo_layout.orcid_client_secret]
    db_file = demo_layout.env()["SATOSA_ORCID_DATABASE_URL"].removeprefix("sqlite:///")
    from pathlib import Path

    files = [Path(db_file), Path(db_file + "-wal"), Path(db_file + "-shm")]
    raw = b"".join(p.read_bytes() for p in files if p.is_file())
    assert len(raw) > 10000
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("satosa_orcid_plugin"))
    assert ours  # we did log the flow
    for value in secrets_:
        assert value.encode() not in raw
        assert value not in ours
    assert f"code={code}" not in ours and f"'{code}'" not in ours


@pytest.mark.parametrize("policy", ["refuse", "move"])
def test_an_id_already_linked_to_another_user(
    satosa_config, demo_sp, demo_layout, orcid_consent, start_login, idp_respond, sp_receive, policy,
):
    client = app_with(satosa_config, on_conflict=policy)
    for user in ("alice", "bob"):  # both connect the same ORCID account
        c = Client(client.application)
        start_login(c, demo_sp)
        released = sp_receive(c.get(path_and_query(orcid_consent(to_orcid(c, idp_respond(c, user))))), demo_sp)
    bob = stored_link(demo_layout, "bob@demo.example.org")
    alice = stored_link(demo_layout, "alice@demo.example.org")
    if policy == "refuse":
        assert "eduPersonOrcid" not in released.attributes  # bob's login goes on without it
        assert bob is None and str(alice.orcid) == "0000-0002-1825-0097"
    else:
        assert released.attributes["eduPersonOrcid"] == [JOSIAH]
        assert alice is None and str(bob.orcid) == "0000-0002-1825-0097"


# --- attacks on the forms, the callback and the logs (each must fail to do harm) ---------------------
def decision_of(demo_layout, user="alice@demo.example.org"):
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher

    env = demo_layout.env()
    store = Store.from_url(env["SATOSA_ORCID_DATABASE_URL"], TokenCipher.from_keys(env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
    try:
        return store.decisions.get(user, __import__("datetime").datetime.now(__import__("datetime").timezone.utc),
                                   issuer=demo_layout.idp_entity_id)
    finally:
        store.db.dispose()


def test_the_oauth_state_from_orcids_url_cannot_answer_the_interstitial(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, sp_receive,
):
    """The state travels in ORCID's authorize URL (browser history, ORCID's logs): whoever read
    it cannot use it to say "never" for the researcher. The form's own token can."""
    start_login(satosa_app, demo_sp)
    action, fields = html_form_fields(idp_respond(satosa_app, "alice").get_data(as_text=True))
    authorize = satosa_app.post(path_and_query(action), data={**fields, "choice": "connect"}).headers["Location"]
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    assert state != fields["state"]
    forged = satosa_app.post(path_and_query(action), data={"state": state, "choice": "never"})
    assert forged.status_code == 400 and decision_of(demo_layout) is None
    released = sp_receive(satosa_app.post(path_and_query(action), data={**fields, "choice": "not_now"}), demo_sp)
    assert "eduPersonOrcid" not in released.attributes and decision_of(demo_layout) == "not_now"


@pytest.mark.parametrize("headers, allowed", [
    ({"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example"}, False),
    ({"Sec-Fetch-Site": "same-site"}, False),               # a sibling host is not this proxy
    ({"Origin": "https://attacker.example"}, False),        # a browser without Fetch Metadata
    ({"Sec-Fetch-Site": "same-origin", "Origin": "null"}, True),  # Referrer-Policy: no-referrer
    ({}, True),                                              # neither header: the token decides
], ids=["cross-site", "same-site", "foreign-origin", "same-origin", "no-headers"])
def test_forms_accept_posts_from_their_own_page_only(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond, headers, allowed,
):
    start_login(satosa_app, demo_sp)
    action, fields = html_form_fields(idp_respond(satosa_app, "alice").get_data(as_text=True))
    response = satosa_app.post(path_and_query(action), data={**fields, "choice": "never"}, headers=headers)
    if allowed:
        assert response.status_code == 200 and decision_of(demo_layout) == "never"
    else:
        assert response.status_code == 403 and decision_of(demo_layout) is None
        assert "Request not allowed" in BeautifulSoup(response.get_data(as_text=True), "html.parser").h1.get_text()


def test_plugin_pages_send_no_referrer_and_post_only_to_the_proxy_and_orcid(
    satosa_app, demo_sp, demo_layout, start_login, idp_respond,
):
    start_login(satosa_app, demo_sp)
    page = idp_respond(satosa_app, "alice")
    assert page.headers["Referrer-Policy"] == "no-referrer"
    csp = dict(part.strip().split(" ", 1) for part in page.headers["Content-Security-Policy"].split(";"))
    assert csp["form-action"].split() == ["'self'", demo_layout.emulator_url.rstrip("/")]


@pytest.mark.parametrize("where", ["callback", "connect"])
@pytest.mark.parametrize("param", ["state", "code", "error", "error_description"])
def test_request_values_cannot_forge_log_lines(
    satosa_app, demo_sp, start_login, idp_respond, orcid_emulator, caplog, where, param,
):
    """CR/LF in any parameter the plugin reads never reaches a log line as a line break."""
    import logging

    injected = "x\r\n[2026-01-01 00:00:00] INFO ORCID iD linked\u2028forged"
    query = {"state": "s", "code": "c", "error": "invalid_request", "error_description": "d"}
    query[param] = injected
    if where == "callback":
        start_login(satosa_app, demo_sp)
        state = parse_qs(urlsplit(to_orcid(satosa_app, idp_respond(satosa_app, "alice"))).query)["state"][0]
        query["state"] = injected if param == "state" else state
    with caplog.at_level(logging.DEBUG):
        response = satosa_app.get(f"/orcid/{where}?{urlencode(query)}")
    assert response.status_code < 500
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("satosa_orcid_plugin")]
    assert ours, "the plugin logged nothing for this request"
    assert not any(c in line for line in ours for c in ("\r", "\n", "\u2028"))


@pytest.mark.parametrize("on_error", ["continue", "fail"])
def test_orcid_refusing_the_request_in_the_fragment_gets_a_page_and_a_clean_way_back(
    satosa_config, demo_sp, demo_layout, start_login, idp_respond, sp_receive, orcid_emulator, on_error,
):
    """ORCID answers invalid_scope / unsupported_response_type in the URL fragment, so the
    browser comes back to the callback with nothing the proxy can read. The researcher is told
    what happened, and the page's button ends the login cleanly at the service (without the iD,
    or with an error under on_error: fail); the bare request alone ends nothing."""
    client = app_with(satosa_config, on_error=on_error)
    start_login(client, demo_sp)
    to_orcid(client, idp_respond(client, "alice"))
    page = client.get("/orcid/callback")  # what the browser requests for .../callback#error=invalid_scope
    assert page.status_code == 400
    soup = BeautifulSoup(page.get_data(as_text=True), "html.parser")
    assert "ORCID did not accept the request" in soup.h1.get_text() and soup.find(id="reference").get_text()
    assert "SAMLResponse" not in page.get_data(as_text=True)
    action, fields = html_form_fields(page.get_data(as_text=True))
    response = client.post(path_and_query(action), data={**fields, "choice": "skip"})
    if on_error == "continue":
        assert "eduPersonOrcid" not in sp_receive(response, demo_sp).attributes
    else:
        action, fields = html_form_fields(response.get_data(as_text=True))
        assert action == demo_layout.sp_acs_url
        with pytest.raises(Exception) as info:  # pysaml2 raises the SAML status as an exception
            demo_sp.parse_response(fields["SAMLResponse"])
        assert type(info.value).__name__.startswith("Status")
    assert stored_link(demo_layout) is None
