"""Real gunicorn proxy instances (the image's gunicorn settings) sharing one PostgreSQL and one
state key, behind the loopback balancer of ``balancer.py``:

* the hop starts on one instance and ORCID's callback lands on the other (journey 1 across
  instances);
* any worker, any instance, any connection: complete logins where every request opens a new
  connection (or the browser keeps one but waits at the IdP longer than gunicorn's keep-alive),
  through one instance with 4 workers and then through both instances round-robin: none
  fails, whether the service wants ORCID (the demo SP) or not (ORCID's own SAML SP, the
  emulator: a plain SAML login).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from balancer import Balancer
from pgschema import private_schema

from satosa_orcid_plugin.devstack.demo import (
    DEMO_ORCID_ID, ChildProcess, DemoStack, PageWalker, _at_connect_notification, _at_sp_result, _title,
)
from satosa_orcid_plugin.devstack.demo_sp import extract_released
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts
from satosa_orcid_plugin.devstack.scripted_browser import ScriptedBrowser, has_button

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WORKERS = (4, 2)  # gunicorn workers of instance 0 and instance 1
KEEPALIVE = 1  # seconds (gunicorn --keep-alive); the image's default is 5
IDP_PAUSE = KEEPALIVE + 0.5  # the user reads the IdP's sign-in page longer than that
BROWSERS = 4  # concurrent logins
LOGIN_DEADLINE = 120.0  # seconds per phase; the test fails rather than run on
BOB_ORCID, CAROL_ORCID = "0009-0003-7578-3214", "0000-0002-1694-233X"  # emulator demo accounts


def proxy_instance(layout: DemoLayout, index: int, port: int, workers: int) -> ChildProcess:
    """gunicorn as the image runs it (``ops/gunicorn_conf.py``), on its own port."""
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:satosa_orcid_plugin.ops.gunicorn_conf",
            "--bind", f"{layout.host}:{port}", "--workers", str(workers), "--keep-alive", str(KEEPALIVE),
            "--certfile", str(layout.tls_cert), "--keyfile", str(layout.tls_key),
            "satosa_orcid_plugin.ops.wsgi:app"]
    return ChildProcess(f"proxy-{index}", port, argv, f"https://{layout.host}:{port}/Saml2IDP/proxy.xml",
                        layout.logs_dir / f"proxy-{index}.log", cwd=layout.proxy_conf_dir)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    layout = DemoLayout(tmp_path_factory.mktemp("scale-out") / "deployment", DemoPorts.free())
    ports = [DemoPorts.free().proxy for _ in WORKERS]
    stack = DemoStack(layout, log=lambda m: None)
    with private_schema() as postgres_url:
        env = stack.env()
        env["SATOSA_ORCID_DATABASE_URL"] = postgres_url
        # PostgreSQL is never migrated implicitly: the operator runs this once per release.
        upgrade = subprocess.run([os.path.join(os.path.dirname(sys.executable), "satosa-orcid"), "db", "upgrade"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert upgrade.returncode == 0, upgrade.stderr
        stack.children = [c for c in stack.children if c.name != "proxy"] + [
            proxy_instance(layout, i, port, workers) for i, (port, workers) in enumerate(zip(ports, WORKERS))]
        stack.env = lambda: env
        balancer = None
        try:
            stack.start()  # checks the layout's ports are free first, so the balancer binds after
            balancer = Balancer(layout.ports.proxy, ports)
            yield layout, balancer
        finally:
            stack.stop()
            if balancer is not None:
                balancer.stop()


def log_offsets(layout: DemoLayout) -> list[int]:
    return [(layout.logs_dir / f"proxy-{i}.log").stat().st_size for i in range(len(WORKERS))]


def log_since(layout: DemoLayout, index: int, offset: int) -> str:
    return (layout.logs_dir / f"proxy-{index}.log").read_bytes()[offset:].decode(errors="replace")


def test_callback_served_by_another_instance_finishes_the_login(cluster):
    layout, balancer = cluster
    offsets, connections_before = log_offsets(layout), list(balancer.connections)
    balancer.route_to(0)
    browser = ScriptedBrowser(verify=str(layout.tls_cert))
    walker = PageWalker(layout, browser, log=lambda m: None)
    r = browser.get(f"{layout.sp_base}/")
    r = browser.follow_link(r, "Log in through the proxy")
    # everything up to ORCID's sign-in page goes through instance 0 ...
    r = walker.walk(r, lambda r: r.url.startswith(layout.emulator_url))
    assert r.url.startswith(layout.emulator_url), r.url
    # ... then the balancer sends every new connection to instance 1
    balancer.route_to(1)
    browser.session.close()
    r = walker.walk(r, _at_sp_result(layout))
    released = extract_released(r.text)
    assert released["attributes"]["eduPersonOrcid"] == [f"https://orcid.org/{DEMO_ORCID_ID}"]
    assert balancer.connections[0] > connections_before[0] and balancer.connections[1] > connections_before[1]
    assert "/orcid/callback" in log_since(layout, 1, offsets[1])
    assert "/orcid/callback" not in log_since(layout, 0, offsets[0])


# --- any worker, any instance, any connection -------------------------------------------
class PatientWalker(PageWalker):
    """A person who reads the IdP's sign-in page for longer than the proxy's keep-alive."""

    def step(self, r):
        if r.url.startswith(self.layout.idp_base) and has_button(r, "Sign in"):
            time.sleep(IDP_PAUSE)
        return super().step(r)


def new_browser(layout: DemoLayout, new_connections: bool) -> ScriptedBrowser:
    """``new_connections``: ``Connection: close`` on every request, so each one opens a new
    connection (the balancer may send each to another instance); otherwise the browser keeps
    its connection, which the proxy closes while the user is at the IdP."""
    browser = ScriptedBrowser(verify=str(layout.tls_cert), timeout=30)
    if new_connections:
        browser.session.headers["Connection"] = "close"
    return browser


def login_at_sp(layout: DemoLayout, user: str, *, choice: str = "connect", orcid_id: str = DEMO_ORCID_ID,
                new_connections: bool = True) -> dict[str, list[str]]:
    """A login at the demo SP (a service that wants ORCID); the attributes it received."""
    browser = new_browser(layout, new_connections)
    walker = PatientWalker(layout, browser, user=user, interstitial_choice=choice, orcid_id=orcid_id,
                           log=lambda m: None)
    r = browser.follow_link(browser.get(f"{layout.sp_base}/"), "Log in through the proxy")
    r = walker.walk(r, _at_sp_result(layout))
    assert _at_sp_result(layout)(r), f"{user}: ended at {r.status_code} {r.url}: {_title(r.text)!r}"
    return extract_released(r.text)["attributes"]


def login_at_orcid_sp(layout: DemoLayout, user: str, *, new_connections: bool = True) -> None:
    """A plain SAML login at ORCID's SAML SP (the emulator; the plugin never hops for it):
    "Sign in with your institution" until ORCID's connect notification."""
    browser = new_browser(layout, new_connections)
    walker = PatientWalker(layout, browser, user=user, orcid_id=CAROL_ORCID, log=lambda m: None)
    r = browser.follow_link(browser.get(f"{layout.emulator_url}/signin"), "Sign in with your institution")
    r = walker.walk(r, _at_connect_notification(layout))
    assert _at_connect_notification(layout)(r), f"{user}: ended at {r.status_code} {r.url}: {_title(r.text)!r}"


def run_logins(logins: list[tuple[str, object]]) -> tuple[int, list[str]]:
    """Run ``(label, zero-argument login)`` pairs on :data:`BROWSERS` concurrent browsers."""
    failures: list[str] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=BROWSERS, thread_name_prefix="login") as pool:
        futures = [(label, pool.submit(login)) for label, login in logins]
        for label, future in futures:
            try:
                future.result(timeout=max(LOGIN_DEADLINE - (time.monotonic() - started), 0.1))
            except Exception as exc:  # noqa: BLE001 - collected, asserted by the caller
                failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
    return len(logins), failures


def eppn(user: str) -> list[str]:
    return [f"{user}@demo.example.org"]


def test_any_worker_any_instance_any_connection(cluster):
    layout, balancer = cluster
    bob_id, carol_id = f"https://orcid.org/{BOB_ORCID}", f"https://orcid.org/{CAROL_ORCID}"

    def hop(user, orcid_id, expected):
        def login():
            attributes = login_at_sp(layout, user, orcid_id=orcid_id)
            assert attributes["eduPersonPrincipalName"] == eppn(user)
            assert attributes.get("eduPersonOrcid") == expected, attributes.get("eduPersonOrcid")
        return login

    def linked(user, expected, new_connections):
        def login():
            attributes = login_at_sp(layout, user, new_connections=new_connections)
            assert attributes["eduPersonPrincipalName"] == eppn(user)
            assert attributes.get("eduPersonOrcid") == expected
        return login

    def plain(user, new_connections=True):
        return lambda: login_at_orcid_sp(layout, user, new_connections=new_connections)

    # Phase 1: one instance, 4 workers. Bob connects his iD (interstitial, ORCID, callback: each
    # request on a new connection), then logs in again and again (the iD from the store), on new
    # connections or on a kept connection that the proxy closes while he is at the IdP; Carol
    # and Bob sign in to ORCID through the proxy (no hop).
    balancer.route_to(0)
    total, failures = run_logins([("bob connects", hop("bob", BOB_ORCID, [bob_id]))])
    logins = [(f"bob #{i}", linked("bob", [bob_id], new_connections=i % 2 == 0)) for i in range(4)]
    logins += [(f"{u} at ORCID's SP #{i}", plain(u, new_connections=i % 2 == 0))
               for i, u in enumerate(["carol", "bob", "carol", "bob"])]
    n, more = run_logins(logins)
    total, failures = total + n, failures + more
    assert not failures, f"{len(failures)} of {total} logins failed with {WORKERS[0]} workers:\n" + "\n".join(failures)

    # Phase 2: both instances, round-robin per connection, no stickiness at all. Carol connects
    # her iD now; the hop's requests alternate between the instances.
    balancer.round_robin()
    before = list(balancer.connections)
    total, failures = run_logins([("carol connects", hop("carol", CAROL_ORCID, [carol_id]))])
    logins = [(f"carol #{i}", linked("carol", [carol_id], new_connections=True)) for i in range(3)]
    logins += [(f"bob #{i}", linked("bob", [bob_id], new_connections=True)) for i in range(3)]
    logins += [(f"{u} at ORCID's SP #{i}", plain(u)) for i, u in enumerate(["carol", "bob", "carol", "bob"])]
    n, more = run_logins(logins)
    total, failures = total + n, failures + more
    assert not failures, f"{len(failures)} of {total} logins failed behind the round-robin balancer:\n" + "\n".join(failures)
    assert all(after > earlier for after, earlier in zip(balancer.connections, before))
