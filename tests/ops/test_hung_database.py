"""A PostgreSQL server that hangs (every process stopped with SIGSTOP: the kernel still accepts
connections and acknowledges data, nothing answers) costs a login seconds, like one that
refuses connections: the login completes without the iD within ``store.timeouts``, the SAML
metadata and the liveness endpoint keep answering, and once the server runs again the next
login gets the iD, without a restart. The server is the test's own (``tests/pgcluster.py``).
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
from opskit import callback_path, hop, idp_respond_via, orcid_consent, sp_receive, start_login_via
from pgcluster import throwaway_cluster

JOSIAH = "0000-0002-1825-0097"  # the emulator's default researcher
TIMEOUTS = {"connect": 2, "login": 1}
# One login's worst case: the pooled connection's deadline, then one fresh connection attempt.
BUDGET = TIMEOUTS["login"] + TIMEOUTS["connect"]
MARGIN = 7.0  # SAML signing, xmlsec1, a loaded CI machine; unbounded, these logins took 75 s
CONCURRENT = 3


@pytest.fixture
def cluster():
    with throwaway_cluster() as cluster:
        yield cluster


def test_a_frozen_database_costs_a_login_seconds_and_recovers_without_restart(ops_deployment, cluster):
    store = {"database_url": cluster.url, "auto_upgrade": True, "timeouts": TIMEOUTS}
    deployment = ops_deployment
    client = deployment.client(store=store)  # on_error: continue (the shipped default)
    callback = orcid_consent(deployment.layout, hop(deployment, client, "alice"))
    assert sp_receive(client.get(callback_path(callback)), deployment.sp).attributes["eduPersonOrcid"] == [
        f"https://orcid.org/{JOSIAH}"]

    def login() -> tuple[float, dict[str, list[str]]]:
        browser = deployment.client(store=store)
        request = start_login_via(browser, deployment.sp)
        started = time.monotonic()
        released = sp_receive(idp_respond_via(browser, deployment.idp, request, "alice"), deployment.sp)
        return time.monotonic() - started, released.attributes

    metadata_path = urlsplit(deployment.layout.proxy_idp_entity_id).path
    with cluster.frozen(), ThreadPoolExecutor(CONCURRENT) as pool:
        logins = [pool.submit(login) for _ in range(CONCURRENT)]
        time.sleep(0.2)  # the logins are waiting for the database now
        other = deployment.client(store=store)
        started = time.monotonic()
        assert other.get(metadata_path).status_code == 200
        assert other.get("/orcid/health").status_code == 200
        assert time.monotonic() - started < MARGIN
        results = [future.result(timeout=BUDGET + 60) for future in logins]
    print("frozen logins (s):", [round(e, 2) for e, _ in results])
    for elapsed, attributes in results:
        assert "eduPersonOrcid" not in attributes  # completed, without the iD (on_error: continue)
        assert elapsed < BUDGET + MARGIN, results

    elapsed, attributes = login()  # thawed: same app, same pool
    print("after thaw (s):", round(elapsed, 2))
    assert attributes["eduPersonOrcid"] == [f"https://orcid.org/{JOSIAH}"]
