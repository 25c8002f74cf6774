"""Two real gunicorn proxy instances share one PostgreSQL and one state key: the hop starts
on one instance and ORCID's callback lands on the other (journey 1 across instances)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from balancer import Balancer

from satosa_orcid_plugin.devstack.demo import (
    ChildProcess, DemoStack, PageWalker, _at_sp_result, _gunicorn,
)
from satosa_orcid_plugin.devstack.demo_sp import extract_released
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts
from satosa_orcid_plugin.devstack.scripted_browser import ScriptedBrowser

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


def test_callback_served_by_another_instance_finishes_the_login(tmp_path, postgres_url):
    layout = DemoLayout(tmp_path / "deployment", DemoPorts.free())
    instance_ports = [DemoPorts.free().proxy, DemoPorts.free().proxy]
    stack = DemoStack(layout)
    env = stack.env()
    env["SATOSA_ORCID_DATABASE_URL"] = postgres_url
    # PostgreSQL is never migrated implicitly: the operator runs this once per release.
    upgrade = subprocess.run([os.path.join(os.path.dirname(sys.executable), "satosa-orcid"), "db", "upgrade"],
                             env=env, capture_output=True, text=True, timeout=120)
    assert upgrade.returncode == 0, upgrade.stderr
    proxies = [
        ChildProcess(f"proxy-{i}", port,
                     _gunicorn(f"{layout.host}:{port}", "satosa_orcid_plugin.ops.wsgi:app", "--chdir", str(layout.proxy_conf_dir),
                               "--certfile", str(layout.tls_cert), "--keyfile", str(layout.tls_key), workers=2),
                     f"https://{layout.host}:{port}/Saml2IDP/proxy.xml", layout.logs_dir / f"proxy-{i}.log",
                     cwd=layout.proxy_conf_dir)
        for i, port in enumerate(instance_ports)
    ]
    stack.children = [c for c in stack.children if c.name != "proxy"] + proxies
    stack.env = lambda: env
    balancer = None
    try:
        stack.start()  # checks the layout's ports are free first, so the balancer binds after
        balancer = Balancer(layout.ports.proxy, instance_ports)
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
        assert released["attributes"]["eduPersonOrcid"] == ["https://orcid.org/0000-0002-1825-0097"]
        assert balancer.connections[0] > 0 and balancer.connections[1] > 0
        assert "/orcid/callback" in (layout.logs_dir / "proxy-1.log").read_text()
        assert "/orcid/callback" not in (layout.logs_dir / "proxy-0.log").read_text()
    finally:
        stack.stop()
        if balancer is not None:
            balancer.stop()
