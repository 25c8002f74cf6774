"""A frozen PostgreSQL under the shipped stack: gunicorn with several workers (the image's
settings), the shipped store timeouts, 12 logins at once. The server is the test's own
(``tests/pgcluster.py``), stopped with SIGSTOP (the kernel still accepts connections and
acknowledges data; nothing answers), which a refused connection never shows:

* each login completes, without the iD, within the store's budget (``store.timeouts``: a
  pooled connection's deadline, then one connection attempt);
* the SAML metadata URL and the liveness probe keep answering meanwhile;
* after SIGCONT the next login gets the iD again, with no restart.

The in-process variant (``tests/ops/test_hung_database.py``) shows the same for one app; this
one shows that gunicorn's workers and threads are not all taken by waiting logins.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from pgcluster import throwaway_cluster
from test_scale_out import IDP_PAUSE, login_at_sp, proxy_instance

from satosa_orcid_plugin.config import StoreTimeouts
from satosa_orcid_plugin.devstack.demo import DEMO_ORCID_ID, DemoStack
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WORKERS = 4
CONCURRENT = 12
# The shipped defaults (proxy_conf's orcid.yaml sets none): one login's worst case is the
# pooled connection's deadline, then one fresh connection attempt.
BUDGET = StoreTimeouts().login + StoreTimeouts().connect
# Signing and checking four SAML messages per login on a loaded 2-core CI machine, and the
# patient user's pause at the IdP; unbounded, these logins waited for the thaw (75 s).
MARGIN = 15.0 + IDP_PAUSE
SLACK = 5.0  # the same logins with the database answering set the pace; a frozen one adds the budget


@pytest.fixture(scope="module")
def frozen_stack(tmp_path_factory):
    with throwaway_cluster() as cluster:
        layout = DemoLayout(tmp_path_factory.mktemp("hung-db") / "deployment", DemoPorts.free())
        stack = DemoStack(layout, log=lambda m: None)
        env = stack.env()
        env["SATOSA_ORCID_DATABASE_URL"] = cluster.url
        upgrade = subprocess.run([os.path.join(os.path.dirname(sys.executable), "satosa-orcid"), "db", "upgrade"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert upgrade.returncode == 0, upgrade.stderr
        stack.children = [c for c in stack.children if c.name != "proxy"] + [
            proxy_instance(layout, 0, layout.ports.proxy, WORKERS)]
        stack.env = lambda: env
        try:
            stack.start()
            yield layout, cluster
        finally:
            stack.stop()


def test_a_frozen_database_under_gunicorn_costs_each_login_seconds_and_recovers_without_restart(frozen_stack):
    layout, cluster = frozen_stack
    orcid = [f"https://orcid.org/{DEMO_ORCID_ID}"]
    assert login_at_sp(layout, "alice").get("eduPersonOrcid") == orcid  # alice is linked now
    probe = requests.Session()
    tls = {"verify": str(layout.tls_cert)}  # per request: REQUESTS_CA_BUNDLE would win over a session's
    metadata = f"{layout.proxy_base}/Saml2IDP/proxy.xml"

    def login(user: str, choice: str = "connect") -> tuple[float, dict]:
        started = time.monotonic()
        attributes = login_at_sp(layout, user, choice=choice)
        return time.monotonic() - started, attributes

    users = ["alice", "bob", "carol"] * (CONCURRENT // 3)  # linked and not linked
    # The same 12 logins with the database answering (bob and carol say "not now" at the
    # interstitial): what signing and a busy machine cost without any database wait.
    with ThreadPoolExecutor(CONCURRENT) as pool:
        normal = [f.result(timeout=300) for f in [pool.submit(login, u, "not_now") for u in users]]
    assert all(a.get("eduPersonOrcid") == (orcid if u == "alice" else None) for u, (_, a) in zip(users, normal))
    baseline = max(elapsed for elapsed, _ in normal)
    with cluster.frozen(), ThreadPoolExecutor(CONCURRENT) as pool:
        logins = [pool.submit(login, user) for user in users]
        time.sleep(IDP_PAUSE + 1)  # the first logins are waiting for the database now
        started = time.monotonic()
        assert probe.get(metadata, timeout=MARGIN, **tls).status_code == 200
        assert probe.get(f"{layout.proxy_base}/orcid/health", timeout=MARGIN, **tls).status_code == 200
        probes = time.monotonic() - started
        results = [future.result(timeout=BUDGET + MARGIN + 120) for future in logins]
    print(f"frozen: probes {probes:.2f} s; logins (s):", sorted(round(e, 2) for e, _ in results),
          f"(the slowest with the database answering: {baseline:.2f} s)")
    assert probes < MARGIN
    for user, (elapsed, attributes) in zip(users, results):
        assert attributes["eduPersonPrincipalName"] == [f"{user}@demo.example.org"]
        assert "eduPersonOrcid" not in attributes  # completed without the iD (on_error: continue)
        assert elapsed < baseline + BUDGET + SLACK, (user, elapsed, baseline)

    # thawed: the same gunicorn workers (no restart) find the database again
    assert probe.get(f"{layout.proxy_base}/orcid/health/detail", timeout=30, **tls).status_code == 200
    elapsed, attributes = login("alice")
    print(f"after thaw: {elapsed:.2f} s")
    assert attributes.get("eduPersonOrcid") == orcid
