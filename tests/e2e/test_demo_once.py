"""``satosa-orcid demo --once`` as real processes on loopback.

The demo starts the ORCID emulator, the demo IdP, the demo SP and the proxy (gunicorn, two
workers, HTTPS) as subprocesses, logs in once with a scripted browser through the real HTTP
endpoints and prints what the SP received.
"""
from __future__ import annotations

import json
import random
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

DEMO = [sys.executable, "-m", "satosa_orcid_plugin.devstack.demo"]


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(count: int = 4) -> int:
    """A port N such that N .. N+count-1 are all free on 127.0.0.1 right now."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise RuntimeError("no run of free loopback ports found")


def test_demo_once_releases_the_orcid_id_to_the_sp(tmp_path):
    base = free_port_base()
    done = subprocess.run(
        [*DEMO, "--once", "--root", str(tmp_path / "demo"), "--port-base", str(base)],
        capture_output=True, text=True, timeout=300,
    )
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((tmp_path / "demo" / "logs").glob("*.log"))
    ) if (tmp_path / "demo" / "logs").exists() else ""
    assert done.returncode == 0, f"exit {done.returncode}\nstderr:\n{done.stderr[-4000:]}\n{logs}"
    out = json.loads(done.stdout)  # stdout is the JSON and nothing else
    assert set(out) == {"attributes"}
    attributes = out["attributes"]
    assert attributes["eduPersonOrcid"] == ["https://orcid.org/0000-0002-1825-0097"]
    assert attributes["eduPersonPrincipalName"] == ["alice@demo.example.org"]
    # every process the demo started is gone: its ports are free again
    assert all(_bindable(base + i) for i in range(4)), "a demo process is still listening"
    # The access logs carry paths only, as the image's: the login passed an ORCID
    # authorization code and OAuth state through query strings, and none reached a log.
    proxy_log = (tmp_path / "demo" / "logs" / "proxy.log").read_text()
    assert "/orcid/callback" in proxy_log
    for name in ("emulator", "idp", "sp", "proxy"):
        text = (tmp_path / "demo" / "logs" / f"{name}.log").read_text()
        requests_logged = [line for line in text.splitlines() if '"GET /' in line or '"POST /' in line]
        assert requests_logged, f"{name}.log has no access log lines"
        assert not [line for line in requests_logged if "?" in line], f"{name}.log logs a query string"


def test_demo_names_the_port_that_is_taken(tmp_path):
    base = free_port_base()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", base + 2))  # the IdP's port
        blocker.listen()
        done = subprocess.run(
            [*DEMO, "--once", "--root", str(tmp_path / "demo"), "--port-base", str(base)],
            capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 2
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert f"port {base + 2} (idp)" in errors[0] and "already in use" in errors[0]


def test_demo_once_institutional_connect_journey(tmp_path):
    """ORCID's Institutional Connect first: institutional sign-in at ORCID (the emulator's SAML
    SP) through the proxy, which sets the sign-in marker, so ORCID's state-less redirect to
    /orcid/connect binds the iD on the spot; the login that follows needs no ORCID step."""
    base = free_port_base()
    done = subprocess.run(
        [*DEMO, "--once", "--journey", "connect", "--root", str(tmp_path / "demo"), "--port-base", str(base)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, f"exit {done.returncode}\nstderr:\n{done.stderr[-4000:]}"
    assert json.loads(done.stdout)["attributes"]["eduPersonOrcid"] == ["https://orcid.org/0000-0002-1825-0097"]
    err = done.stderr
    assert f"POST http://127.0.0.1:{base + 1}/Shibboleth.sso/SAML2/POST -> 200" in err  # SAML through the proxy
    assert "'Your ORCID iD is connected · Demo University'" in err  # bound at once: the marker named the user
    assert "confirm the pending link" not in err
    login = err[err.index("Login at the demo SP"):]
    assert f"127.0.0.1:{base + 1}" not in login  # the login after it never visits ORCID
