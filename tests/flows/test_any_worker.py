"""The backend's InResponseTo check holds across workers (``ops/saml2_backend.py``).

Two SATOSA apps built from the same ``proxy_conf/`` in one process stand for two workers (or
instances): each keeps its own backend object, as separate processes do. A small WSGI
dispatcher sends each request of one browser (a werkzeug Client, cookies kept) to the next
app in turn, so the IdP's answer always reaches the app that did not send the request.
"""
from __future__ import annotations

import itertools
from urllib.parse import urlsplit

import pytest
from werkzeug.test import Client

from satosa_orcid_plugin.devstack.demo_idp import demo_user_attributes

WITHOUT_ORCID = pytest.mark.parametrize("micro_services", [[]], indirect=True, ids=["no-microservices"])
STOCK_BACKEND = "satosa.backends.saml2.SAMLBackend"


def round_robin(*apps):
    turn = itertools.cycle(apps)

    def dispatch(environ, start_response):
        return next(turn)(environ, start_response)

    return dispatch


def workers(config, n: int = 2, *, module: str | None = None, allow_unsolicited: bool | None = None):
    """``n`` SATOSA apps of ``config`` behind one round-robin dispatcher (a fresh browser)."""
    import copy

    from satosa.proxy_server import make_app

    config = copy.deepcopy(config)  # make_app keeps references into it
    backend = config["BACKEND_MODULES"][0]
    if module is not None:
        backend["module"] = module
    if allow_unsolicited is not None:
        backend["config"]["sp_config"]["service"]["sp"]["allow_unsolicited"] = allow_unsolicited
    apps = [make_app(copy.deepcopy(config)) for _ in range(n)]
    return lambda: Client(round_robin(*apps))


def refused(response) -> bool:
    """The proxy gave the SP no successful SAML response (an error page or AuthnFailed)."""
    import base64

    from flowkit import html_form_fields

    page = response.get_data(as_text=True)
    if "SAMLResponse" not in page:
        return True
    xml = base64.b64decode(html_form_fields(page)[1]["SAMLResponse"]).decode()
    return "urn:oasis:names:tc:SAML:2.0:status:Success" not in xml


def test_the_shipped_backend_keeps_the_check(satosa_config):
    backend, = satosa_config["BACKEND_MODULES"]
    assert backend["module"] == "satosa_orcid_plugin.ops.saml2_backend.SAMLBackend"
    assert backend["config"]["sp_config"]["service"]["sp"]["allow_unsolicited"] is False


@WITHOUT_ORCID
def test_the_idp_answer_may_reach_another_worker(satosa_config, demo_sp, start_login, idp_respond, sp_receive):
    browser = workers(satosa_config)
    for user in ("alice", "bob", "carol"):
        client = browser()
        start_login(client, demo_sp)  # request 1: worker 0
        released = sp_receive(idp_respond(client, user), demo_sp)  # request 2: worker 1
        assert released.attributes == demo_user_attributes(user)


@WITHOUT_ORCID
def test_the_stock_backend_loses_the_request_on_another_worker(satosa_config, demo_sp, start_login, idp_respond):
    """Why the shipped config does not use satosa.backends.saml2.SAMLBackend: its outstanding
    request ids live in one worker's memory."""
    client = workers(satosa_config, module=STOCK_BACKEND)()
    start_login(client, demo_sp)
    assert refused(idp_respond(client, "alice"))


@WITHOUT_ORCID
def test_a_response_to_another_browsers_request_is_refused(satosa_config, demo_sp, demo_idp, start_login_via_any):
    """An attacker holding a valid response issued for someone else's request posts it with
    their own cookie and RelayState: the InResponseTo check refuses it. Without that check
    (``allow_unsolicited: true``, as in SATOSA's example config) the RelayState check alone
    lets it through, which is the trade-off the shipped config avoids."""
    from flowkit import idp_respond_via

    for allow_unsolicited, expect_refused in ((None, True), (True, False)):
        browser = workers(satosa_config, allow_unsolicited=allow_unsolicited)
        victim, attacker = browser(), browser()
        victims_request = start_login_via_any(victim, demo_sp)
        attackers_request = start_login_via_any(attacker, demo_sp)
        destination, fields = demo_idp.respond(
            victims_request.saml_request, victims_request.relay_state, victims_request.binding, "alice",
            sigalg=victims_request.sigalg, signature=victims_request.signature)
        fields["RelayState"] = attackers_request.relay_state
        answer = attacker.post(urlsplit(destination).path, data=fields)
        assert refused(answer) is expect_refused, (allow_unsolicited, answer.status)
        # the victim's own login is unaffected
        if expect_refused:
            assert not refused(idp_respond_via(victim, demo_idp, victims_request, "alice"))


@WITHOUT_ORCID
def test_an_unsolicited_response_is_refused(satosa_config, demo_sp, demo_idp, demo_layout, start_login_via_any):
    """An IdP-initiated response (no InResponseTo) with a live cookie and its RelayState."""
    import base64

    from saml2.authn_context import PASSWORDPROTECTEDTRANSPORT

    client = workers(satosa_config)()
    request = start_login_via_any(client, demo_sp)
    response = demo_idp.server.create_authn_response(
        identity=demo_user_attributes("alice"), userid="alice", in_response_to=None,
        destination=demo_layout.proxy_acs_url, sp_entity_id=demo_layout.proxy_sp_entity_id,
        name_id=None, authn={"class_ref": PASSWORDPROTECTEDTRANSPORT, "authn_auth": demo_idp.entity_id},
        sign_assertion=True, sign_response=True)
    answer = client.post(urlsplit(demo_layout.proxy_acs_url).path, data={
        "SAMLResponse": base64.b64encode(str(response).encode()).decode(), "RelayState": request.relay_state})
    assert refused(answer)


def test_the_request_id_view_is_empty_outside_a_request():
    from satosa_orcid_plugin.ops.saml2_backend import STATE_FIELD, StateBoundRequestIds

    ids = StateBoundRequestIds()
    assert len(ids) == 0 and "id-1" not in ids
    with pytest.raises(RuntimeError):
        ids["id-1"] = "id-1"
    slot: dict = {}
    with ids.bound(slot):
        ids["id-1"] = "id-1"
        assert "id-1" in ids and ids["id-1"] == "id-1" and list(ids) == ["id-1"] and "id-2" not in ids
    assert slot == {STATE_FIELD: "id-1"} and len(ids) == 0
    with ids.bound(slot):
        del ids["id-1"]  # single use
        assert "id-1" not in ids
    assert slot == {}


@pytest.fixture
def start_login_via_any():
    from flowkit import start_login_via

    return start_login_via
