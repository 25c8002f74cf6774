"""A bounded load test: many concurrent complete logins, each with an ORCID hop.

The proxy runs as the image runs it (``docker/entrypoint.sh``: schema migration, then gunicorn
with several workers, TLS from ``GUNICORN_CMD_ARGS``) against PostgreSQL and the ORCID
emulator, all on loopback. Every virtual researcher is a different institutional user with a
different ORCID account; each one logs in at the SP, meets the interstitial, connects at
ORCID and comes back. Bounded in count (``USERS``) and time (``DEADLINE``); loopback only.

Asserts: zero errors (every login released its own iD to the SP, no 5xx, no traceback in
the proxy's log), every user stored exactly once with the right iD (links and audit rows),
one token per account at ORCID, and the Prometheus counters of all workers add up. The
achieved logins/s is printed in the test summary.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from opskit import OPS_REPORT, html_form_fields, orcid_consent

from satosa_orcid_plugin.devstack.scripted_browser import link_with_id

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

USERS = int(os.environ.get("SATOSA_ORCID_LOAD_USERS", "32"))
CONCURRENCY = 8
WORKERS = 3
DEADLINE = 120.0  # seconds for the whole run; the test fails rather than run on
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SAML_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def orcid_ids(n: int) -> list[str]:
    from satosa_orcid_plugin.orcid_id import check_digit

    out = []
    for i in range(n):
        base = f"000000034{i:06d}"
        digits = base + check_digit(base)
        out.append("-".join(digits[j:j + 4] for j in range(0, 16, 4)))
    return out


@pytest.fixture(scope="module")
def stack(tmp_path_factory, ops_keys, ops_postgres_url):
    """Emulator (in a thread here), proxy (entrypoint -> gunicorn, own process group),
    exporter (``satosa-orcid metrics serve``), all on loopback."""
    from satosa_orcid_plugin.devstack import demo_idp
    from satosa_orcid_plugin.devstack import emulator as emu
    from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

    root = tmp_path_factory.mktemp("load")
    layout = DemoLayout(root / "deployment", DemoPorts.free(), keys_from=ops_keys)
    ids = orcid_ids(USERS)
    users = [f"load{i:03d}" for i in range(USERS)]
    accounts = [emu.DemoAccount(orcid, f"{user}@orcid.example.edu", emu.DEMO_PASSWORD, "Load", user, None)
                for user, orcid in zip(users, ids)]
    emulator = emu.Emulator(layout.emulator_url, clients=[emu.ClientRegistration(**c) for c in layout.emulator_clients()],
                            accounts=accounts)
    server = emu.serve_in_thread(emulator, layout.host, port=layout.ports.emulator)
    metrics_dir = root / "metrics"
    env = {
        "PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(root), "LANG": "C.UTF-8",
        **layout.env(),
        "SATOSA_ORCID_DATABASE_URL": ops_postgres_url,
        "GUNICORN_BIND": f"127.0.0.1:{layout.ports.proxy}",
        "GUNICORN_WORKERS": str(WORKERS), "GUNICORN_THREADS": "4",
        "GUNICORN_CMD_ARGS": f"--certfile {layout.tls_cert} --keyfile {layout.tls_key}",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    metrics_port = free_port()
    logs = {name: open(root / f"{name}.log", "wb") for name in ("proxy", "metrics")}
    procs = {
        "proxy": subprocess.Popen(["sh", str(REPO / "docker" / "entrypoint.sh")], env=env, stdout=logs["proxy"],
                                  stderr=subprocess.STDOUT, start_new_session=True),
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            assert procs["proxy"].poll() is None, (root / "proxy.log").read_text()[-3000:]
            try:
                if requests.get(f"{layout.proxy_base}/orcid/health", verify=str(layout.tls_cert), timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the proxy did not come up"
            time.sleep(0.2)
        procs["metrics"] = subprocess.Popen(
            [str(BIN / "satosa-orcid"), "metrics", "serve", "--port", str(metrics_port), "--no-database"],
            env=env, stdout=logs["metrics"], stderr=subprocess.STDOUT, start_new_session=True)
        with pytest.MonkeyPatch.context() as mp:
            for user in users:  # the demo IdP knows these people for the duration of the test
                mp.setitem(demo_idp._PEOPLE, user, ("Load", user.title(), "Load testing", "Researcher", ("member",)))
            yield {"layout": layout, "users": users, "ids": dict(zip(users, ids)), "emulator": emulator,
                   "root": root, "metrics_url": f"http://127.0.0.1:{metrics_port}/metrics", "env": env}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)  # only the process groups started above
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for f in logs.values():
            f.close()
        server.stop()


_local = threading.local()
# pysaml2 builds its config (attribute maps, metadata) with compile()/exec; doing that in several
# threads at once trips CPython 3.11's python/cpython#106905 ("AST constructor recursion depth
# mismatch"). Build each thread's SP and IdP one at a time.
_parties_lock = threading.Lock()


def saml_parties(layout):
    """A demo SP and IdP per client thread (pysaml2 objects keep per-request state)."""
    if getattr(_local, "parties", None) is None:
        from satosa_orcid_plugin.devstack.demo_idp import DemoIdP
        from satosa_orcid_plugin.devstack.demo_sp import DemoSP

        with _parties_lock:
            _local.parties = (DemoSP(layout), DemoIdP(layout))
    return _local.parties


def one_login(layout, user: str, orcid: str) -> tuple[str, float]:
    """SP -> proxy -> IdP -> proxy (interstitial) -> ORCID consent -> proxy -> SP, over HTTPS."""
    sp, idp = saml_parties(layout)
    started = time.monotonic()
    s = requests.Session()
    tls = {"verify": str(layout.tls_cert), "timeout": 30, "allow_redirects": False}  # per request: REQUESTS_CA_BUNDLE
    _, url = sp.authn_request(relay_state=f"/{user}")
    r = s.get(url, **tls)
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    q = {k: v[0] for k, v in parse_qs(urlsplit(r.headers["Location"]).query).items()}
    destination, fields = idp.respond(q["SAMLRequest"], q.get("RelayState"), SAML_REDIRECT, user,
                                      sigalg=q.get("SigAlg"), signature=q.get("Signature"))
    r = s.post(destination, data=fields, **tls)
    assert r.status_code == 200 and "choice" in r.text, (r.status_code, r.text[:300])
    authorize = link_with_id(r.text, "connect-orcid")  # "Connect" is a link straight to ORCID
    assert authorize, r.text[:300]
    callback = orcid_consent(layout, authorize, orcid_id=orcid)
    r = s.get(callback, **tls)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    action, form = html_form_fields(r.text)
    assert action == layout.sp_acs_url
    released = sp.parse_response(form["SAMLResponse"])
    assert released.attributes.get("eduPersonOrcid") == [f"https://orcid.org/{orcid}"], released.attributes
    assert released.attributes["eduPersonPrincipalName"] == [f"{user}@demo.example.org"]
    return user, time.monotonic() - started


def scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(requests.get(url, timeout=10).text):
        for sample in family.samples:
            key = sample.name + "".join(f"|{k}={v}" for k, v in sorted(sample.labels.items()))
            out[key] = sample.value
    return out


def test_concurrent_logins_with_hops_through_gunicorn_and_postgresql(stack):
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher

    layout, users, ids = stack["layout"], stack["users"], stack["ids"]
    errors: list[str] = []
    durations: list[float] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CONCURRENCY, thread_name_prefix="login") as pool:
        futures = {pool.submit(one_login, layout, user, ids[user]): user for user in users}
        for future, user in futures.items():
            remaining = DEADLINE - (time.monotonic() - started)
            try:
                _, seconds = future.result(timeout=max(remaining, 0.1))
                durations.append(seconds)
            except Exception as exc:  # noqa: BLE001 - collected, asserted below
                errors.append(f"{user}: {type(exc).__name__}: {str(exc)[:300]}")
        for future in futures:
            future.cancel()
    elapsed = time.monotonic() - started
    rate = len(durations) / elapsed
    durations.sort()
    OPS_REPORT.append(
        f"load: {len(durations)}/{USERS} logins with an ORCID hop in {elapsed:.1f}s = {rate:.2f} logins/s "
        f"({CONCURRENCY} concurrent browsers, {WORKERS} gunicorn workers, PostgreSQL; per login median "
        f"{durations[len(durations) // 2] if durations else float('nan'):.2f}s, max {durations[-1] if durations else float('nan'):.2f}s)")
    assert not errors, "\n".join(errors[:10])
    assert elapsed < DEADLINE

    # every user stored exactly once, with their own iD, and audited once
    store = Store.from_url(stack["env"]["SATOSA_ORCID_DATABASE_URL"],
                           TokenCipher.from_keys(stack["env"]["SATOSA_ORCID_TOKEN_KEYS"].split(",")))
    try:
        links = store.links.recent(limit=10 * USERS)
        per_user = Counter(link.user_key for link in links)
        assert len(links) == USERS and set(per_user.values()) == {1}
        for link in links:
            assert link.active and str(link.orcid) == ids[link.user_key.split("@")[0]]
        audit = store.db.audit_events(limit=10 * USERS)
        assert Counter(e["event"] for e in audit)["link"] == USERS
        assert all(e["session_id"] for e in audit if e["event"] == "link")
    finally:
        store.db.dispose()
    # ORCID issued exactly one token per account (no code was ever exchanged twice)
    for user in users:
        assert len(stack["emulator"].tokens(orcid=ids[user])) == 1

    # the proxy's log: no 5xx answered, no traceback
    log = (stack["root"] / "proxy.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert not [line for line in log.splitlines() if '" 5' in line and "HTTP/1.1" in line]

    # every worker counted into the shared multi-process directory; the exporter adds them up
    samples = scrape(stack["metrics_url"])
    assert samples.get("satosa_orcid_hops_started_total|kind=interstitial") == USERS
    assert samples.get("satosa_orcid_hops_completed_total|kind=linked_now") == USERS
    assert samples.get("satosa_orcid_orcid_request_seconds_count|endpoint=token|method=post|status=200") == USERS
    assert not [k for k in samples if k.startswith("satosa_orcid_hops_failed_total")]
