"""Many callbacks completing at once against PostgreSQL: one link per user, never a 500."""
from __future__ import annotations

import copy
import threading
from datetime import datetime, timezone

import pytest
from flowkit import path_and_query, sp_receive as read_sp
from satosa.proxy_server import make_app
from werkzeug.test import Client

from satosa_orcid_plugin.store import Store
from satosa_orcid_plugin.tokens import TokenCipher
from test_consent_hop import plugin_config, to_orcid

pytestmark = pytest.mark.postgres
ACCOUNTS = {"alice": "0000-0002-1825-0097", "bob": "0000-0001-5109-3700", "carol": "0009-0003-7578-3214"}


@pytest.fixture
def pg_app(satosa_config, postgres_url, demo_layout):
    config = copy.deepcopy(satosa_config)
    plugin_config(config)["store"]["database_url"] = postgres_url
    keys = demo_layout.env()["SATOSA_ORCID_TOKEN_KEYS"].split(",")
    store = Store.from_url(postgres_url, TokenCipher.from_keys(keys))
    store.db.upgrade()
    yield make_app(config), store
    store.db.dispose()


def test_simultaneous_callbacks_for_the_same_and_different_users(
    pg_app, demo_sp, demo_idp, orcid_consent, orcid_emulator,
):
    app, store = pg_app
    from conftest import idp_respond_via, start_login_via

    plan = [("alice", ACCOUNTS["alice"])] * 6 + [(u, i) for u, i in ACCOUNTS.items() if u != "alice"] * 2
    prepared = []
    for user, orcid in plan:  # each browser gets as far as ORCID's redirect back to the proxy
        client = Client(app)
        request = start_login_via(client, demo_sp)
        callback = orcid_consent(to_orcid(client, idp_respond_via(client, demo_idp, request, user)), orcid_id=orcid)
        prepared.append((client, callback, user))

    barrier = threading.Barrier(len(prepared))
    results: list = [None] * len(prepared)

    def finish(i: int) -> None:
        client, callback, user = prepared[i]
        barrier.wait()
        try:
            response = client.get(path_and_query(callback))
            results[i] = (response.status_code, read_sp(response, demo_sp).attributes.get("eduPersonOrcid"))
        except Exception as exc:  # reported below with the others
            results[i] = ("error", repr(exc))

    threads = [threading.Thread(target=finish, args=(i,)) for i in range(len(prepared))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # every browser got its login back with the iD it connected; nothing was lost
    assert results == [(200, [f"https://orcid.org/{orcid}"]) for _, orcid in plan]
    for user, orcid in ACCOUNTS.items():
        link = store.links.get_active(f"{user}@demo.example.org", issuer=demo_idp.entity_id)
        assert link is not None and str(link.orcid) == orcid
    assert store.links.stats(datetime.now(timezone.utc))["linked"] == 3
