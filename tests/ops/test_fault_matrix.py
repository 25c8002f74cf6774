"""Every ORCID failure the emulator (or the network) can produce, under ``on_error: fail``.

For each fault a real login goes through the proxy to ORCID's consent screen; the fault is
armed; the callback then has to end the login towards the SP with a SAML error status, within
the configured timeouts, with the ``ORCID hop failed: <reason>`` log line, the failure counted
in the metrics, nothing stored (no link, no tokens, no audit event but the revocation of a
token ORCID issued with a refused id_token) and no token left live at ORCID. ``on_error:
continue`` is covered by ``tests/flows/test_consent_hop.py``.
"""
from __future__ import annotations

import socket
import time
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pytest
from opskit import callback_path, hop, html_form_fields, orcid_consent
from prometheus_client import REGISTRY

CONNECT_TIMEOUT = 0.5
READ_TIMEOUT = 1.0
# The token POST is never retried on a read timeout, but urllib3 retries a connect failure
# twice (the request never left): 3 connect attempts, 0.4 s back-off, one read.
TIMEOUT_BUDGET = 3 * CONNECT_TIMEOUT + 0.4 + READ_TIMEOUT
MARGIN = 4.0  # SAML signing of the error response, xmlsec1, a loaded CI machine
FAIL = {"on_error": "fail", "orcid": {"timeouts": {"connect": CONNECT_TIMEOUT, "read": READ_TIMEOUT}}}

EMULATOR_FAULTS = [
    ("http_500", {"kind": "status", "status": 500}, "orcid_unavailable"),
    ("http_503", {"kind": "status", "status": 503}, "orcid_unavailable"),
    ("malformed_json", {"kind": "malformed"}, "orcid_bad_response"),
    ("html_page", {"kind": "status", "status": 200, "body": "<html><body>Maintenance</body></html>",
                   "content_type": "text/html"}, "orcid_bad_response"),
    ("read_timeout", {"kind": "delay", "seconds": READ_TIMEOUT + 2}, "orcid_unavailable"),
    ("connection_dropped", {"kind": "drop"}, "orcid_unavailable"),
    ("bad_signature", {"kind": "bad_signature"}, "invalid_id_token"),
    ("wrong_iss", {"kind": "wrong_iss"}, "invalid_id_token"),
    ("wrong_aud", {"kind": "wrong_aud"}, "invalid_id_token"),
    ("expired", {"kind": "expired"}, "invalid_id_token"),
    ("sub_mismatch", {"kind": "sub_mismatch"}, "invalid_id_token"),
    ("unknown_kid", {"kind": "unknown_kid"}, "invalid_id_token"),
]


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port nothing listens on (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    yield port


@contextmanager
def blackhole_port() -> Iterator[int]:
    """A loopback listener whose accept queue is full: new connections get no SYN-ACK, so
    connecting times out (a host that does not answer, without leaving the machine)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except (BlockingIOError, OSError):
            pass
        fillers.append(c)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for c in fillers:
            c.close()
        listener.close()


def failed_count(reason: str) -> float:
    return REGISTRY.get_sample_value("satosa_orcid_hops_failed_total", {"reason": reason}) or 0.0


def run_failing_login(deployment, client, callback: str, reason: str, caplog) -> float:
    """Follow the callback; assert the SP gets a SAML error status; return the seconds it took."""
    before = failed_count(reason)
    code = parse_qs(urlsplit(callback).query)["code"][0]
    caplog.clear()
    started = time.monotonic()
    response = client.get(callback_path(callback))
    elapsed = time.monotonic() - started
    assert response.status_code == 200, (response.status, response.get_data(as_text=True)[:300])
    action, fields = html_form_fields(response.get_data(as_text=True))
    assert action == deployment.layout.sp_acs_url
    with pytest.raises(Exception) as info:  # pysaml2 raises the SAML status of the response
        deployment.sp.parse_response(fields["SAMLResponse"])
    assert type(info.value).__name__.startswith("Status"), info.value
    lines = [r.getMessage() for r in caplog.records if r.name == "satosa_orcid_plugin.microservice"]
    assert any(f"ORCID hop failed: {reason}" in line for line in lines), lines
    assert failed_count(reason) == before + 1
    assert deployment.links() == []
    # A token ORCID issued with an answer the proxy refused (an id_token that does not verify)
    # is revoked at once: that revocation is the only audit event. With this test's short ORCID
    # timeouts a loaded machine can miss the revoke's answer; then the token must be waiting in
    # the store, and the worker's drain (normal timeouts) revokes it. Either way none stays live.
    audited = [r.getMessage() for r in caplog.records if r.name == "satosa_orcid_plugin.audit"]
    assert all('"event":"token_revoked"' in line for line in audited), audited
    # Only this login's token is looked at (by its code): after a read timeout the emulator, like
    # ORCID, still issues a token once its delay is over, which the proxy never sees and so cannot
    # revoke; that token appears while a later test runs.
    drain_queued_revocations(deployment)
    assert [t for t in deployment.emulator.tokens() if t.code == code] == []
    if reason == "invalid_id_token":  # ORCID did issue this login a token: the proxy revoked it
        assert [t.revoked for t in deployment.emulator.tokens(active_only=False) if t.code == code] == ["CLIENT_REVOKED"]
    return elapsed


def drain_queued_revocations(deployment) -> None:
    from satosa_orcid_plugin.config import parse_config
    from satosa_orcid_plugin.services import TokenRevoker
    from satosa_orcid_plugin.wiring import build_client
    from opskit import plugin_config

    store = deployment.store()
    try:
        waiting = store.revocations.waiting()
        if waiting:
            revoker = TokenRevoker(build_client(parse_config(plugin_config(deployment.config))), store)
            assert revoker.drain(waiting, ids=tuple(range(1, 10000))) == waiting
        assert store.revocations.waiting() == 0
    finally:
        store.db.dispose()


@pytest.mark.parametrize("name, fault, reason", EMULATOR_FAULTS, ids=[f[0] for f in EMULATOR_FAULTS])
def test_orcid_fault_fails_the_login_in_time_and_stores_nothing(ops_deployment, caplog, name, fault, reason):
    caplog.set_level("INFO")
    client = ops_deployment.client(**FAIL)
    callback = orcid_consent(ops_deployment.layout, hop(ops_deployment, client))
    ops_deployment.emulator.faults.clear()
    ops_deployment.emulator.faults.add(endpoint="token", **fault)
    try:
        elapsed = run_failing_login(ops_deployment, client, callback, reason, caplog)
    finally:
        ops_deployment.emulator.faults.clear()
    assert elapsed < TIMEOUT_BUDGET + MARGIN, f"{name} took {elapsed:.2f}s"
    if name == "read_timeout":
        assert elapsed >= READ_TIMEOUT  # the read timeout, not the 3 s delay, ended the wait
        assert elapsed < READ_TIMEOUT + MARGIN


@pytest.mark.parametrize("kind", ["connection_refused", "connect_timeout"])
def test_unreachable_orcid_fails_the_login_in_time_and_stores_nothing(ops_deployment, caplog, kind):
    """ORCID's address refuses connections, or never answers the TCP handshake."""
    caplog.set_level("INFO")
    ports = refusing_port() if kind == "connection_refused" else blackhole_port()
    with ports as port:
        dead = f"http://127.0.0.1:{port}"
        client = ops_deployment.client(**{**FAIL, "orcid": {**FAIL["orcid"], "base_url": dead}})
        authorize = hop(ops_deployment, client)
        assert authorize.startswith(f"{dead}/oauth/authorize?")
        # the browser still reaches ORCID (the emulator); only the proxy's back channel is cut
        emulator = urlsplit(ops_deployment.layout.emulator_url)
        callback = orcid_consent(ops_deployment.layout, urlunsplit(urlsplit(authorize)._replace(netloc=emulator.netloc)))
        elapsed = run_failing_login(ops_deployment, client, callback, "orcid_unavailable", caplog)
    if kind == "connect_timeout":
        assert elapsed >= CONNECT_TIMEOUT
    assert elapsed < TIMEOUT_BUDGET + MARGIN, f"{kind} took {elapsed:.2f}s"
