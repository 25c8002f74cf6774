"""Shibboleth SP 3 (Debian's ``shibd`` and Apache's ``mod_shib``) as a service behind the proxy.

Apache and ``shibd`` run as processes of this test, on a free loopback port, with their own
configuration in a temporary directory: Shibboleth's stock ``attribute-map.xml`` plus the one
line docs/service-providers.md documents for eduPersonOrcid, the stock
``attribute-policy.xml`` (which drops scoped values whose scope the IdP's metadata does not
list as ``shibmd:Scope``), the proxy's metadata as a local file. A scripted browser opens a
protected page (a CGI behind ``requireSession``); what the service sees is what mod_shib puts
into the CGI's environment and what the Session handler (``showAttributeValues``) lists:
eduPersonOrcid, eppn and the scoped affiliation, on the hop and on the fast path.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest
import requests
from bs4 import BeautifulSoup
from interopkit import ACCOUNTS, APACHE_MODULES, ShibbolethSite, stop_together, unavailable, walk

from satosa_orcid_plugin.devstack.demo import ChildProcess
from satosa_orcid_plugin.devstack.layout import DEMO_SCOPE

pytestmark = [pytest.mark.e2e]

SHIBD = "/usr/sbin/shibd"
APACHE = "/usr/sbin/apache2"
STARTUP_TIMEOUT = 60.0


def _missing_packages() -> list[str]:
    needed = ((SHIBD, "shibboleth-sp-utils"), (f"{APACHE_MODULES}/mod_shib.so", "libapache2-mod-shib"),
              (APACHE, "apache2"))
    return [package for path, package in needed if not Path(path).exists()]


def _wait(what: str, child: ChildProcess, ready, timeout: float = STARTUP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{what} exited with status {child.popen.returncode}:\n{child.log_tail(40)}")
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s:\n{child.log_tail(40)}")


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="module")
def shibboleth(interop):
    missing = _missing_packages()
    if missing:
        unavailable(f"the Shibboleth SP test needs the Debian packages {' '.join(missing)}")
    site: ShibbolethSite = interop.shibboleth
    # Apache's children run as www-data when Apache starts as root: they read the
    # configuration and run the CGI, so the directory is world-readable (the SP's key is not in it)
    directory = Path(tempfile.mkdtemp(prefix="satosa-orcid-shibsp-"))
    directory.chmod(0o755)
    files = site.write_config(directory, idp_metadata=interop.layout.proxy_frontend_metadata,
                              idp_entity_id=interop.layout.proxy_idp_entity_id, root=os.geteuid() == 0)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C"}
    shibd = ChildProcess("shibd", 0, [SHIBD, "-f", "-F", "-c", str(files["shibboleth2.xml"]),
                                      "-p", str(directory / "shibd.pid")], "", directory / "shibd.log")
    apache = ChildProcess("apache2", site.port, [APACHE, "-f", str(files["httpd.conf"]), "-DFOREGROUND"], "",
                          directory / "apache.log")
    try:
        shibd.start(env)
        _wait("shibd", shibd, (directory / "shibd.sock").exists)
        apache.start(env)
        _wait("apache2 with mod_shib", apache, lambda: _answers(f"{site.base}/Shibboleth.sso/Status"))
        yield site, shibd, apache
    finally:
        stop_together([apache, shibd])  # each was started in its own process group; stopped by that group only
        apache.stop()
        shibd.stop()
        shutil.rmtree(directory, ignore_errors=True)


def login(interop, site: ShibbolethSite):
    """Open the protected page; (what the CGI saw, the Session handler's page, the browser)."""
    browser = interop.browser()
    protected = f"{site.base}/secure/whoami"

    def at_service(r) -> bool:
        return r.url == protected and r.headers.get("Content-Type", "").startswith("application/json")

    response = walk(interop.layout, browser, browser.get(protected), at_service, "shibboleth")
    session = browser.get(f"{site.base}/Shibboleth.sso/Session")
    browser.session.close()  # no idle keep-alive connection holds up the proxy's shutdown
    assert session.status_code == 200, session.text[:300]
    return response.json(), BeautifulSoup(session.text, "html.parser").get_text(), browser


def test_shibboleth_sp_sees_eduperson_orcid_eppn_and_scoped_affiliation(interop, shibboleth):
    site, shibd, apache = shibboleth
    user, orcid = ACCOUNTS["shibboleth"]
    expected = f"https://orcid.org/{orcid}"
    for path in ("hop", "fast path"):
        seen, session, browser = login(interop, site)
        went_to_orcid = any(interop.layout.emulator_url in line for line in browser.history)
        assert went_to_orcid is (path == "hop"), (path, browser.history)
        logs = f"shibd:\n{shibd.log_tail(30)}\napache:\n{apache.log_tail(30)}"
        assert seen.get("eduPersonOrcid") == expected, (path, seen, logs)
        assert seen.get("eppn") == f"{user}@{DEMO_SCOPE}", (path, seen, logs)
        assert seen.get("REMOTE_USER") == f"{user}@{DEMO_SCOPE}"
        assert seen.get("Shib_Identity_Provider") == interop.layout.proxy_idp_entity_id
        assert set(seen.get("affiliation", "").split(";")) >= {f"member@{DEMO_SCOPE}", f"student@{DEMO_SCOPE}"}, \
            (path, seen, logs)
        # the Session handler (showAttributeValues="true") lists the same values
        assert f"eduPersonOrcid: {expected}" in session, session
        assert f"eppn: {user}@{DEMO_SCOPE}" in session, session
