"""Metrics, health, audit events and the operations checks (state cookie size, request guard), in-process.

The flow-level tests run SATOSA's real WSGI app built from the real ``proxy_conf/`` (the
module's ``ops_deployment``) with the ORCID emulator on loopback.
"""
from __future__ import annotations

import ast
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import yaml
from opskit import (callback_path, hop, html_form_fields, idp_respond_via, orcid_consent, plugin_config, sp_receive,
                      start_login_via)
from prometheus_client import REGISTRY

from satosa_orcid_plugin import metrics
from satosa_orcid_plugin.audit_log import AUDIT_LOGGER_NAME, audit_line, scrub

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "satosa_orcid_plugin"
BIN = Path(sys.executable).parent
JOSIAH = "0000-0002-1825-0097"


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def audit_records(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == AUDIT_LOGGER_NAME]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- a login through the real app: metrics, audit line, no secrets in any log -------------
def test_a_hop_is_counted_audited_with_the_session_id_and_logs_no_secret(ops_deployment, caplog):
    caplog.set_level("DEBUG", logger="satosa_orcid_plugin")
    started = sample("satosa_orcid_hops_started_total", kind="interstitial")
    completed = sample("satosa_orcid_hops_completed_total", kind="linked_now")
    fast = sample("satosa_orcid_fast_path_releases_total", reason="linked")
    token_calls = sample("satosa_orcid_orcid_request_seconds_count", endpoint="token", method="post", status="200")
    client = ops_deployment.client()
    callback = orcid_consent(ops_deployment.layout, hop(ops_deployment, client, "carol"))
    released = sp_receive(client.get(callback_path(callback)), ops_deployment.sp)
    assert released.attributes["eduPersonOrcid"] == [f"https://orcid.org/{JOSIAH}"]
    assert sample("satosa_orcid_hops_started_total", kind="interstitial") == started + 1
    assert sample("satosa_orcid_hops_completed_total", kind="linked_now") == completed + 1
    assert sample("satosa_orcid_orcid_request_seconds_count", endpoint="token", method="post",
                  status="200") == token_calls + 1

    # exactly one audit line for the link, with SATOSA's session id of this login
    [link] = [e for e in audit_records(caplog) if e["event"] == "link"]
    assert link["type"] == "satosa_orcid.audit"
    assert link["user_key"] == "carol@demo.example.org" and link["orcid"] == JOSIAH
    linked_log = next(r.getMessage() for r in caplog.records if "ORCID iD linked" in r.getMessage())
    assert link["session_id"] and linked_log.startswith(f"[{link['session_id']}]")
    assert link["detail"]["environment"] == "production"

    # no token, code or id_token in any log line of the plugin
    token = ops_deployment.emulator.tokens(orcid=JOSIAH)[-1]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    for record in caplog.records:
        if record.name.startswith("satosa_orcid_plugin"):
            text = record.getMessage()
            for secret in (token.access_token, token.refresh_token, code, ops_deployment.layout.orcid_client_secret):
                assert secret not in text, (record.name, text)
            assert not re.search(r"eyJ[\w-]+\.[\w-]+\.", text)

    # the next login is a fast-path release: counted, and no ORCID call at all
    ops_deployment.emulator.requests.clear()
    flows_login = ops_deployment.client()
    request = start_login_via(flows_login, ops_deployment.sp)
    released = sp_receive(idp_respond_via(flows_login, ops_deployment.idp, request, "carol"), ops_deployment.sp)
    assert released.attributes["eduPersonOrcid"] == [f"https://orcid.org/{JOSIAH}"]
    assert sample("satosa_orcid_fast_path_releases_total", reason="linked") == fast + 1
    assert [r.path for r in ops_deployment.emulator.requests if r.path != "/oauth/jwks"] == []  # (keys: warmed at start)


def test_a_decline_is_counted_and_audited(ops_deployment, caplog):
    caplog.set_level("INFO", logger="satosa_orcid_plugin")
    denied = sample("satosa_orcid_hops_denied_total", choice="never")
    client = ops_deployment.client()
    request = start_login_via(client, ops_deployment.sp)
    page = idp_respond_via(client, ops_deployment.idp, request, "bob").get_data(as_text=True)
    action, fields = html_form_fields(page)
    released = sp_receive(client.post(urlsplit(action).path, data={**fields, "choice": "never"}), ops_deployment.sp)
    assert "eduPersonOrcid" not in released.attributes
    assert sample("satosa_orcid_hops_denied_total", choice="never") == denied + 1
    [decline] = [e for e in audit_records(caplog) if e["event"] == "decline"]
    assert decline["user_key"] == "bob@demo.example.org" and decline["detail"]["decision"] == "never"
    assert decline["session_id"]


# --- audit lines from the store ----------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher

    s = Store.from_url(f"sqlite:///{tmp_path / 'links.sqlite'}", TokenCipher.from_keys([TokenCipher.generate_key()]),
                       instance="test")
    s.db.upgrade()
    yield s
    s.db.dispose()


def tokens(access="at-SECRET-1", refresh="rt-SECRET-2"):
    from datetime import datetime, timezone

    from satosa_orcid_plugin.tokens import TokenSet

    return TokenSet.from_token_response({"access_token": access, "refresh_token": refresh, "expires_in": 3600,
                                         "scope": "openid"}, datetime.now(timezone.utc))


def test_link_conflict_revoke_unlink_each_log_one_json_line_without_tokens(store, caplog):
    from satosa_orcid_plugin.errors import LinkConflict
    from satosa_orcid_plugin.orcid_id import OrcidId

    caplog.set_level("INFO", logger=AUDIT_LOGGER_NAME)
    orcid = OrcidId.parse(JOSIAH)
    store.links.link("alice@example.org", orcid, tokens(), session_id="urn:uuid:s1")
    with pytest.raises(LinkConflict):
        store.links.link("bob@example.org", orcid, tokens("at-SECRET-3", "rt-SECRET-4"), session_id="urn:uuid:s2")
    store.links.revoke("alice@example.org", "invalid_token", session_id="urn:uuid:s3")
    store.links.unlink("alice@example.org", reason="admin")
    store.decisions.record("carol@example.org", "never", None, session_id="urn:uuid:s4")
    events = audit_records(caplog)
    assert [e["event"] for e in events] == ["link", "conflict", "revoke", "unlink", "decline"]
    assert [e["session_id"] for e in events] == ["urn:uuid:s1", "urn:uuid:s2", "urn:uuid:s3", None, "urn:uuid:s4"]
    assert events[1]["user_key"] == "bob@example.org" and events[1]["detail"]["held_by"] == "alice@example.org"
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "SECRET" not in text
    # the database rows and the log lines are the same events
    rows = store.db.audit_events(limit=10)
    assert sorted(e["event"] for e in rows) == sorted(e["event"] for e in events)


def test_an_event_rolled_back_is_never_logged(store, caplog):
    from satosa_orcid_plugin.orcid_id import OrcidId

    caplog.set_level("INFO", logger=AUDIT_LOGGER_NAME)

    def fail(session, row):
        raise RuntimeError("the affiliation outbox could not be written")

    with pytest.raises(RuntimeError):
        store.links.link("alice@example.org", OrcidId.parse(JOSIAH), tokens(), extra=fail)
    assert audit_records(caplog) == []
    assert store.links.get_active("alice@example.org") is None


def test_audit_details_are_scrubbed_at_any_depth():
    detail = {"reason": "x", "access_token": "a", "nested": {"refresh_token": "r", "list": [{"code": "c"}]},
              "client_secret": "s", "id_token": "i", "raw": "eyJhbGciOi.eyJzdWIiOi.c2ln", "put_code": 12, "error_code": 9045}
    line = json.loads(audit_line("x", at=None, user_key=None, orcid=None, session_id=None, instance=None, detail=detail))
    assert line["detail"] == {
        "reason": "x", "access_token": "<redacted>", "nested": {"refresh_token": "<redacted>", "list": [{"code": "<redacted>"}]},
        "client_secret": "<redacted>", "id_token": "<redacted>", "raw": "<redacted>", "put_code": 12, "error_code": 9045,
    }
    assert scrub({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}})  # deep input does not break it


# --- metrics ------------------------------------------------------------------------------------
def test_record_maps_outcomes_to_counters_and_never_raises():
    before = {k: sample(*k[:1], **dict(k[1:])) for k in [
        ("satosa_orcid_hops_failed_total", ("reason", "orcid_unavailable")),
        ("satosa_orcid_logins_total", ("outcome", "error_orcid_unavailable")),
        ("satosa_orcid_fast_path_releases_total", ("reason", "asserted_by_trusted_idp")),
    ]}
    metrics.record("failed", "orcid_unavailable")
    metrics.record("outcome", "error_orcid_unavailable")
    metrics.record("outcome", "asserted_by_trusted_idp")
    metrics.record("no such event", "x")
    metrics.record("outcome", None)  # type: ignore[arg-type]
    after = {k: sample(*k[:1], **dict(k[1:])) for k in before}
    assert all(after[k] == before[k] + 1 for k in before)
    # label values are sanitised and bounded: never a URL or a user
    metrics.record("failed", "https://evil.example/" + "x" * 500)
    assert sample("satosa_orcid_hops_failed_total", reason="https_evil.example_" + "x" * 29) >= 1
    metrics.observe_orcid_request("token", "POST", None, 0.2)
    assert sample("satosa_orcid_orcid_request_seconds_count", endpoint="token", method="post", status="none") >= 1


def test_exporter_bearer_token_and_methods():
    app = metrics.metrics_app(metrics.registry_for_export(), token="s3cret")
    from werkzeug.test import Client

    client = Client(app)
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and "satosa_orcid_" in ok.get_data(as_text=True)
    assert client.post("/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 405
    assert client.get("/other", headers={"Authorization": "Bearer s3cret"}).status_code == 404
    open_app = Client(metrics.metrics_app(metrics.registry_for_export()))
    assert open_app.get("/metrics").status_code == 200


def test_database_collector_reads_links_outbox_and_liveness(store):
    from satosa_orcid_plugin.orcid_id import OrcidId

    store.links.link("alice@example.org", OrcidId.parse(JOSIAH), tokens())
    from satosa_orcid_plugin.services import AdminService

    registry = metrics.registry_for_export(AdminService(store))
    assert registry.get_sample_value("satosa_orcid_database_up") == 1.0
    assert registry.get_sample_value("satosa_orcid_links", {"status": "active"}) == 1.0
    assert registry.get_sample_value("satosa_orcid_outbox_items", {"status": "queued"}) == 0.0
    assert registry.get_sample_value("satosa_orcid_outbox_oldest_waiting_seconds") == 0.0

    class Down:
        @staticmethod
        def health():
            return False

    down = metrics.registry_for_export(Down())
    assert down.get_sample_value("satosa_orcid_database_up") == 0.0
    assert down.get_sample_value("satosa_orcid_links", {"status": "active"}) is None


def test_multiprocess_mode_adds_up_every_worker(tmp_path):
    """Two 'workers' (processes) count into PROMETHEUS_MULTIPROC_DIR; the exporter sums them."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    worker = "from satosa_orcid_plugin import metrics\nfor _ in range(5): metrics.record('outcome', 'linked_now')\n"
    for _ in range(2):
        subprocess.run([sys.executable, "-c", worker], env=env, check=True, timeout=60)
    exporter = textwrap.dedent("""
        from satosa_orcid_plugin import metrics
        r = metrics.registry_for_export()
        print(r.get_sample_value("satosa_orcid_hops_completed_total", {"kind": "linked_now"}))
    """)
    out = subprocess.run([sys.executable, "-c", exporter], env=env, check=True, capture_output=True, text=True, timeout=60)
    assert float(out.stdout.strip()) == 10.0


@pytest.mark.e2e
def test_metrics_serve_command_with_a_token_file(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    port = free_port()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "mp")}
    (tmp_path / "mp").mkdir()
    env.pop("SATOSA_ORCID_DATABASE_URL", None)
    env.pop("SATOSA_ORCID_CONFIG", None)
    proc = subprocess.Popen([str(BIN / "satosa-orcid"), "metrics", "serve", "--port", str(port), "--token-file",
                             str(token_file)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read().decode()
                time.sleep(0.1)
        assert r.status_code == 401
        r = requests.get(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": "Bearer tok-123"}, timeout=5)
        assert r.status_code == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started
        assert proc.wait(timeout=10) == 0


# --- health ---------------------------------------------------------------------------------------
def test_health_endpoint_through_the_app(ops_deployment, monkeypatch):
    from satosa_orcid_plugin.ops import health
    from satosa_orcid_plugin.store import Database

    client = ops_deployment.client()
    # liveness: asks nothing, so neither a refusing nor a hanging database changes it
    for database in (lambda self: True, lambda self: False, lambda self: time.sleep(3) or True):
        monkeypatch.setattr(Database, "health", database)
        started = time.monotonic()
        r = client.get("/orcid/health")
        assert r.status_code == 200 and json.loads(r.get_data()) == {"status": "ok"}
        assert time.monotonic() - started < 1
    assert r.headers["Cache-Control"] == "no-store"
    assert client.head("/orcid/health").status_code == 200
    assert client.post("/orcid/health", data={"a": "b"}).status_code == 405
    # detail: the database state
    monkeypatch.setattr(Database, "health", lambda self: True)
    r = client.get("/orcid/health/detail")
    assert r.status_code == 200 and json.loads(r.get_data()) == {"status": "ok", "database": "ok"}
    assert r.headers["Cache-Control"] == "no-store"
    assert client.head("/orcid/health/detail").status_code == 200
    assert client.post("/orcid/health/detail", data={"a": "b"}).status_code == 405
    monkeypatch.setattr(Database, "health", lambda self: False)
    r = client.get("/orcid/health/detail")
    assert r.status_code == 503 and json.loads(r.get_data()) == {"status": "degraded", "database": "unreachable"}
    # a database that hangs is reported within the check's time bound
    monkeypatch.setattr(Database, "health", lambda self: time.sleep(3) or True)
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.3)
    monkeypatch.setattr(health.database_ok, "__defaults__", (0.3,))
    started = time.monotonic()
    assert client.get("/orcid/health/detail").status_code == 503
    assert time.monotonic() - started < 2
    assert client.get("/orcid/health/elsewhere").status_code != 200


def test_health_endpoint_only_builds_the_endpoint_and_the_constructor_warns(ops_deployment, monkeypatch):
    """Registering /health runs no start-up check; ``OrcidConnect.__init__`` runs the state
    cookie estimate, once per micro-service instance."""
    from satosa_orcid_plugin import microservice
    from satosa_orcid_plugin.ops import cookie_size
    from satosa_orcid_plugin.ops.health import health_endpoint
    from satosa_orcid_plugin.ops.wsgi import create_app

    def no_estimate(*args, **kwargs):
        raise AssertionError("health_endpoint must not run the state cookie estimate")

    monkeypatch.setattr(cookie_size, "estimate_state_cookie", no_estimate)
    calls = []
    endpoint = health_endpoint(lambda: calls.append("db") or True)
    assert calls == []  # building it asks nothing
    assert json.loads(endpoint(type("Ctx", (), {"request_method": "GET", "path": "orcid/health"})()).message) \
        == {"status": "ok"}
    assert calls == []  # liveness asks nothing either
    detail = type("Ctx", (), {"request_method": "GET", "path": "orcid/health/detail"})()
    assert json.loads(endpoint(detail).message)["database"] == "ok"
    assert calls == ["db"]
    monkeypatch.undo()

    warned = []
    monkeypatch.setattr(microservice, "warn_at_startup", lambda name, config: warned.append(name))
    create_app(copy.deepcopy(ops_deployment.config))  # a fresh app: SATOSA builds the micro-services
    assert warned == ["orcid"]


# --- state cookie size, request guard ----------------------------------------------------------------
DEMO_INTERNAL = ["edupersonprincipalname", "edupersonuniqueid", "givenname", "surname", "displayname", "mail",
                 "edupersonaffiliation", "edupersonscopedaffiliation", "ou", "title"]


def test_state_cookie_estimate_matches_a_real_hop(ops_deployment):
    """The estimate, for the demo IdP's attributes, against the real cookie of a real hop."""
    from satosa_orcid_plugin.ops.cookie_size import estimate_state_cookie

    client = ops_deployment.client()
    request = start_login_via(client, ops_deployment.sp)
    response = idp_respond_via(client, ops_deployment.idp, request, "alice")
    assert "choice" in response.get_data(as_text=True)  # at the interstitial: the flow is in the cookie
    [cookie] = [h.strip() for h in response.headers.getlist("Set-Cookie") if h.strip().startswith("SATOSA_STATE=")]
    real = len(cookie)
    counts = {name: (3 if name == "edupersonaffiliation" or name == "edupersonscopedaffiliation" else 1)
              for name in DEMO_INTERNAL}
    estimate = estimate_state_cookie("orcid", attributes=counts)
    print(f"state cookie: real {real} bytes, estimate {estimate} bytes")
    assert 0.85 * real <= estimate <= 1.5 * real, (estimate, real)


def test_state_cookie_warnings_at_start_up_and_in_check_config(ops_deployment, tmp_path, caplog, monkeypatch):
    from click.testing import CliRunner

    from satosa_orcid_plugin import cli
    from satosa_orcid_plugin.ops import cookie_size
    from satosa_orcid_plugin.ops.checks import check_proxy_config
    from satosa_orcid_plugin.config import parse_config

    config = parse_config(plugin_config(ops_deployment.config))
    caplog.set_level("DEBUG", logger="satosa_orcid_plugin.ops.cookie_size")
    size = cookie_size.warn_at_startup("orcid", config)
    assert size and size < cookie_size.STATE_COOKIE_WARN_BYTES
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    monkeypatch.setattr(cookie_size, "STATE_COOKIE_WARN_BYTES", 500)
    cookie_size.warn_at_startup("orcid", config)
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "state cookie" in warning and "4096" in warning
    monkeypatch.undo()

    # check-config: the deployment's own attribute map decides
    layout = ops_deployment.layout
    problems, warnings = check_proxy_config(layout.proxy_conf_dir / "proxy_conf.yaml")
    assert not [w for w in warnings if "state cookie" in w], warnings
    conf_dir = tmp_path / "proxy_conf"
    shutil.copytree(layout.proxy_conf_dir, conf_dir)
    attrs_file = conf_dir / "internal_attributes.yaml"
    attrs = yaml.safe_load(attrs_file.read_text())
    for i in range(60):
        attrs["attributes"][f"entitlement{i}"] = {"saml": [f"urn:example:entitlement:{i}"]}
    attrs_file.write_text(yaml.safe_dump(attrs))
    # the worst case (200 long entitlements, 60 more attributes) is parked in the store: no warning
    problems, warnings = check_proxy_config(conf_dir / "proxy_conf.yaml")
    assert not [w for w in warnings if "state cookie" in w], warnings
    # an operator's sample where another micro-service keeps 4 KB in SATOSA's state: warned, with the size
    sample = tmp_path / "sample.yaml"
    sample.write_text(yaml.safe_dump({"extra_state": {"consent": {"blob": os.urandom(2400).hex()}}}))
    result = CliRunner().invoke(cli.main, ["check-config", str(conf_dir / "proxy_conf.yaml"), "--cookie-sample",
                                           str(sample)])
    [warning] = [line for line in result.output.splitlines() if "state cookie" in line]
    assert warning.startswith("warning: MICRO_SERVICES[orcid]: the SATOSA state cookie") and "bytes" in warning


def test_request_guard_turns_satosa_crashes_into_client_errors(ops_deployment):
    from satosa.proxy_server import make_app
    from werkzeug.test import Client

    guarded = Client(ops_deployment.app(), use_cookies=False)
    plain = Client(make_app(ops_deployment.config), use_cookies=False)
    # SATOSA alone: a POST without Content-Type raises before routing; an empty state cookie is a 500
    with pytest.raises(KeyError):
        plain.open("/orcid/choice", method="POST", data=b"state=x")
    assert plain.get("/orcid/callback", headers={"Cookie": "SATOSA_STATE="}).status_code == 500
    # behind the guard
    assert guarded.open("/orcid/choice", method="POST", data=b"state=x").status_code == 400  # the plugin's page
    assert guarded.get("/orcid/callback", headers={"Cookie": "SATOSA_STATE="}).status_code == 400
    assert guarded.post("/orcid/choice", data=b"\xff\xfe", content_type="application/x-www-form-urlencoded").status_code == 400
    assert guarded.post("/orcid/choice", data=b"{", content_type="application/json").status_code == 400
    assert guarded.post("/orcid/choice", data={"state": "x" * 20000}).status_code == 413
    assert guarded.get("/orcid/callback?" + "a=b&" * 3000).status_code == 414
    bad_length = guarded.open("/orcid/choice", method="POST", headers={"Content-Length": "abc"},
                              content_type="application/x-www-form-urlencoded")
    assert bad_length.status_code == 400
    # SAML responses (not the plugin's endpoints) may be far bigger than the plugin's forms
    big = guarded.post("/Saml2/acs/post", data={"SAMLResponse": "x" * 100_000})
    assert big.status_code != 413


def test_secret_comparisons_are_constant_time_and_redirects_come_from_config():
    """Static checks over the package: no ==/!= between secret-looking values (only the known,
    non-secret comparisons below), and every Redirect of the micro-service goes to ORCID's
    authorize endpoint built from configuration."""
    secret = re.compile(r"state|nonce|token|secret|password|code|signature|marker", re.I)
    allowed = {
        "saved.get('v') == STATE_VERSION",
        "LinkRow.id == TokenRow.link_id",
        "TokenRow.link_id == row.id",
        "TokenRow.key_version != newest",
        "p.partition('=')[0].strip() != self.state_cookie",
    }

    def names(node):
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                yield n.id
            elif isinstance(n, ast.Attribute):
                yield n.attr
            elif isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Constant) and isinstance(n.slice.value, str):
                yield n.slice.value
            elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "get" and n.args
                  and isinstance(n.args[0], ast.Constant) and isinstance(n.args[0].value, str)):
                yield n.args[0].value

    found = set()
    for path in sorted([*PACKAGE.glob("*.py"), *PACKAGE.glob("store/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Constant) for s in sides):
                    continue
                if any(secret.search(n) for s in sides for n in names(s)):
                    found.add(ast.unparse(node))
    assert found <= allowed, found - allowed
    assert (PACKAGE / "flow.py").read_text().count("hmac.compare_digest") >= 2  # the callback's state, the forms'
    source = (PACKAGE / "microservice.py").read_text()
    redirects = [node for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Redirect"]
    assert redirects
    for call in redirects:
        target = call.args[0]
        assert isinstance(target, ast.Call) and getattr(target.func, "attr", None) in ("_hop_url", "hop_url"), \
            ast.unparse(call)


def test_plugin_cookies_are_sealed_httponly_secure_and_narrow():
    from satosa_orcid_plugin.cookies import CookieSealer, set_cookie
    from satosa_orcid_plugin.tokens import TokenCipher

    name, value = set_cookie("orcid_signin", "v", path="/orcid", max_age=900)
    assert name.lower() == "set-cookie"
    assert "HttpOnly" in value and "Secure" in value and "Path=/orcid" in value and "SameSite=Lax" in value
    sealer = CookieSealer([TokenCipher.generate_key()], "institutional sign-in marker")
    sealed = sealer.seal({"u": "alice"})
    assert "alice" not in sealed and sealer.open(sealed, ttl=60) == {"u": "alice"}
    assert sealer.open(sealed[:-2] + "xx", ttl=60) is None


def test_the_state_cookie_of_a_hop_is_measured_only_when_it_could_pass_the_browser_limit():
    from satosa.state import State

    from satosa_orcid_plugin.ops.cookie_size import BROWSER_COOKIE_LIMIT, state_cookie_bytes

    state = State()
    state["SESSION_ID"] = "urn:uuid:0b7c4a1e-9f64-4d6e-9d7e-1c2b3a4d5e6f"
    state["orcid"] = {"v": 2, "k": "hop", "s": "s" * 32, "x": 1, "p": "h" * 32}
    assert state_cookie_bytes(state) is None  # surely small: not measured (no lzma pass per hop)
    state["another_service"] = {"blob": os.urandom(3000).hex()}  # what another micro-service keeps
    size = state_cookie_bytes(state)
    assert size is not None and size > BROWSER_COOKIE_LIMIT
