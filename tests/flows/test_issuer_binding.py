"""A proxy in front of two IdPs, attacked the way a rogue (or compromised) IdP B would: B
asserts the eduPersonPrincipalName of IdP A's user Alice, who has linked her ORCID iD. B must
not receive Alice's iD: not released, and no hop that could bind anything to Alice.

The demo IdP runs twice with two entity IDs (A: the demo's, scope demo.example.org; B:
``<idp>/b/idp.xml``); the proxy's SAML backend has both in its metadata and a discovery
service picks the IdP, as on a hub. Everything else is the real proxy_conf/.
"""
from __future__ import annotations

import copy
import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from flowkit import idp_request_from_url, idp_respond_via, path_and_query
from prometheus_client import REGISTRY
from satosa.proxy_server import make_app
from werkzeug.test import Client

from satosa_orcid_plugin.devstack.demo_idp import DemoIdP
from satosa_orcid_plugin.devstack.layout import BACKEND_NAME
from satosa_orcid_plugin.orcid_id import OrcidId
from satosa_orcid_plugin.store import Store
from satosa_orcid_plugin.tokens import TokenCipher, TokenSet

ALICE = "alice@demo.example.org"
JOSIAH = "0000-0002-1825-0097"
DISCO = "https://disco.example.org/ds"
DISCO_BINDING = "urn:oasis:names:tc:SAML:profiles:SSO:idp-discovery-protocol"


@pytest.fixture
def two_idps(satosa_config, demo_layout):
    """(SATOSA config of a proxy in front of IdP A and IdP B, IdP A, IdP B); B's metadata lists
    the scope ``b_scope`` (the parametrised test changes it)."""

    def build(b_scope: str = "uni-b.example", **plugin_changes):
        b_metadata = demo_layout.write_idp_metadata("b", b_scope)
        config = copy.deepcopy(satosa_config)
        backend = next(b for b in config["BACKEND_MODULES"] if b["name"] == BACKEND_NAME)["config"]
        backend["disco_srv"] = DISCO
        backend["sp_config"]["metadata"] = {"local": [str(demo_layout.idp_metadata), str(b_metadata)]}
        backend["sp_config"]["service"]["sp"]["endpoints"]["discovery_response"] = [
            [f"{demo_layout.proxy_base}/{BACKEND_NAME}/disco", DISCO_BINDING]]
        next(m for m in config["MICRO_SERVICES"] if m["name"] == "orcid")["config"].update(plugin_changes)
        idp_b = DemoIdP(config=demo_layout.idp_saml_config(name="b", scope=b_scope))
        return Client(make_app(config)), DemoIdP(demo_layout), idp_b

    return build


@pytest.fixture
def store(demo_layout):
    env = demo_layout.env()
    opened = Store.from_url(env["SATOSA_ORCID_DATABASE_URL"],
                            TokenCipher.from_keys(env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
    yield opened
    opened.db.dispose()


def alice_of_a_has_linked(store, idp_a) -> None:
    from datetime import datetime, timezone

    tokens = TokenSet.from_token_response(
        {"access_token": "alice-token", "expires_in": 631138518, "scope": "openid"}, datetime.now(timezone.utc))
    store.links.link(ALICE, OrcidId.parse(JOSIAH), tokens, issuer=idp_a.entity_id)


def login_at(client, sp, idp, user: str = "alice"):
    """SP -> proxy -> discovery (choose ``idp``) -> ``idp`` answers for ``user`` -> proxy."""
    _, url = sp.authn_request(relay_state="/protected")
    to_disco = client.get(path_and_query(url))
    assert to_disco.status_code in (302, 303) and to_disco.headers["Location"].startswith(DISCO)
    back = parse_qs(urlsplit(to_disco.headers["Location"]).query)["return"][0]
    to_idp = client.get(path_and_query(back) + ("&" if "?" in back else "?") + urlencode({"entityID": idp.entity_id}))
    assert to_idp.status_code in (302, 303), to_idp.status
    request = idp_request_from_url(to_idp.headers["Location"])
    assert urlsplit(request.url).path.startswith(urlsplit(idp.entity_id).path.rsplit("/", 1)[0])
    return idp_respond_via(client, idp, request, user)


def released_to_sp(response, sp) -> dict:
    """What the SP receives when the proxy answers with the SAML POST form (no hop page)."""
    from flowkit import sp_receive

    return sp_receive(response, sp).attributes


def user_key_problems(problem: str, action: str) -> float:
    return REGISTRY.get_sample_value("satosa_orcid_user_key_problems_total",
                                     {"problem": problem, "action": action}) or 0.0


def test_idp_b_asserting_alices_eppn_is_refused_by_the_scope_check(two_idps, demo_sp, store, caplog):
    client, idp_a, idp_b = two_idps()
    alice_of_a_has_linked(store, idp_a)
    caplog.set_level(logging.WARNING, logger="satosa_orcid_plugin")
    before = user_key_problems("scope_not_allowed", "refused")

    attributes = released_to_sp(login_at(client, demo_sp, idp_b), demo_sp)

    assert attributes["eduPersonPrincipalName"] == [ALICE]  # the login itself goes on
    assert "eduPersonOrcid" not in attributes  # no release, and no hop page came in between
    assert user_key_problems("scope_not_allowed", "refused") == before + 1
    line = next(r.getMessage() for r in caplog.records if "scope_not_allowed" in r.getMessage())
    assert idp_b.entity_id in line and "scope demo.example.org" in line and "no ORCID lookup" in line
    # Alice of IdP A is untouched, and still gets her iD
    assert store.links.get_active(ALICE, issuer=idp_a.entity_id).orcid.value == JOSIAH
    assert released_to_sp(login_at(client, demo_sp, idp_a), demo_sp)["eduPersonOrcid"] == [
        f"https://orcid.org/{JOSIAH}"]


def test_idp_b_whose_metadata_claims_alices_scope_still_gets_no_id(two_idps, demo_sp, store):
    """The scope check passes (B's metadata lists demo.example.org too, e.g. a careless
    federation, or scope_check: off): the issuer binding alone keeps Alice's iD from B."""
    for b_scope, changes in (("demo.example.org", {}), ("uni-b.example", {"scope_check": "off"})):
        client, idp_a, idp_b = two_idps(b_scope, interstitial=False, **changes)
        if store.links.get_active(ALICE, issuer=idp_a.entity_id) is None:
            alice_of_a_has_linked(store, idp_a)

        answer = login_at(client, demo_sp, idp_b)

        # B's "alice" is a user of B without a link: the proxy asks ORCID for *her* iD (a fresh
        # state-protected hop), it does not release or bind Alice of A's
        assert answer.status_code == 302, answer.status
        assert "/oauth/authorize" in answer.headers["Location"] and JOSIAH not in answer.headers["Location"]
        assert store.links.get_active(ALICE, issuer=idp_b.entity_id) is None
        assert store.links.get_active(ALICE, issuer=idp_a.entity_id).orcid.value == JOSIAH


def test_scope_check_warn_lets_the_key_through_and_reports_it(two_idps, demo_sp, store, caplog):
    client, idp_a, idp_b = two_idps(scope_check="warn", interstitial=False)
    caplog.set_level(logging.WARNING, logger="satosa_orcid_plugin")
    before = user_key_problems("scope_not_allowed", "warned")

    answer = login_at(client, demo_sp, idp_b)

    assert answer.status_code == 302 and "/oauth/authorize" in answer.headers["Location"]  # looked up: a hop
    assert user_key_problems("scope_not_allowed", "warned") == before + 1
    assert any("accepted (scope_check: warn)" in r.getMessage() and idp_b.entity_id in r.getMessage()
               for r in caplog.records)


def test_the_global_opt_out_shares_keys_across_idps(two_idps, demo_sp, store):
    """user_key_scope: global is what it says: for IdPs that share one namespace, a key is the
    same user whichever IdP asserts it (the scope check still guards scoped keys)."""
    client, idp_a, idp_b = two_idps("demo.example.org", user_key_scope="global")
    store.links.link(ALICE, OrcidId.parse(JOSIAH), None)  # issuer-free

    attributes = released_to_sp(login_at(client, demo_sp, idp_b), demo_sp)

    assert attributes["eduPersonOrcid"] == [f"https://orcid.org/{JOSIAH}"]


def test_a_single_idp_deployment_upgrades_without_configuration(satosa_config, demo_layout, demo_sp, demo_idp):
    """An existing deployment (store at revision 0005 with Alice's link, no issuer anywhere)
    starts the new version: the proxy binds the old links to the one IdP of its SAML backend's
    metadata, and Alice's next login releases her iD as before."""
    import sqlalchemy as sa
    from flowkit import start_login_via

    env = demo_layout.env()
    old = Store.from_url(env["SATOSA_ORCID_DATABASE_URL"], TokenCipher.from_keys(env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
    old.db.upgrade("0005")
    with old.db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO orcid_links (id, user_key, orcid, environment, status, scopes, created_at, updated_at) "
            "VALUES (1, :u, :o, 'production', 'active', 'openid', '2025-01-01 00:00:00', '2025-01-01 00:00:00')"),
            {"u": ALICE, "o": JOSIAH})
    old.db.dispose()

    client = Client(make_app(satosa_config))  # auto_upgrade on SQLite, as the shipped config runs it

    request = start_login_via(client, demo_sp)
    attributes = released_to_sp(idp_respond_via(client, demo_idp, request, "alice"), demo_sp)
    assert attributes["eduPersonOrcid"] == [f"https://orcid.org/{JOSIAH}"]
    upgraded = Store.from_url(env["SATOSA_ORCID_DATABASE_URL"],
                              TokenCipher.from_keys(env["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
    try:
        assert upgraded.db.schema_revision() == "0006"
        assert upgraded.links.get_active(ALICE, issuer=demo_idp.entity_id).orcid.value == JOSIAH
    finally:
        upgraded.db.dispose()
