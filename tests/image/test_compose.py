"""docker/compose.yaml as a user runs it, and nginx (docker/nginx.conf) in front of the proxy.

``docker-compose config`` of every profile; then ``up`` of nginx, proxy, metrics, sync
(profile affiliations, configured as compose.yaml documents: a copy of proxy_conf/ under
docker/config/ with an ``affiliations:`` block) and the ORCID emulator (profile demo). What CI
changes (:func:`ci_variant`, applied to the parsed file, everything else as shipped): every
service uses the host's network (the CI daemon has no bridge), so published ports go and
free ports replace fixed ones, and the host's PostgreSQL stands in for the ``postgres``
service (its image cannot be pulled here). The demo IdP and SP
run on the host. A login goes through nginx with the ORCID hop, the sync worker writes the
employment to the emulator's member API, and a slow-header client is cut off by nginx while
another login goes through.
"""
from __future__ import annotations

import copy
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
import yaml
from imagekit import IMAGE, container_env, env_file, free_port, host_services, open_up, private_database, readable_tree, wait_for, which

from satosa_orcid_plugin.devstack.demo import scripted_login
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker" / "compose.yaml"
PROFILES = ("metrics", "affiliations", "demo")
ORCID_ID = "0000-0002-1825-0097"
# docker/nginx.conf's client_header_timeout: the whole request header within this many seconds
HEADER_TIMEOUT = 10


def compose_cmd(project_dir: Path, *files: Path, project: str, env_path: Path) -> list[str]:
    cmd = [which("docker-compose"), "--project-directory", str(project_dir), "--env-file", str(env_path), "-p", project]
    for f in files:
        cmd += ["-f", str(f)]
    return cmd


def run(cmd: list[str], timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def minimal_project(tmp: Path) -> Path:
    (tmp / "satosa.env").write_text("")
    (tmp / ".env").write_text("POSTGRES_PASSWORD=secret-for-config\n")
    return tmp


@pytest.mark.parametrize("profiles", [(), *[(p,) for p in PROFILES], PROFILES], ids=lambda p: "+".join(p) or "default")
def test_compose_config_of_every_profile(tmp_path, profiles):
    project = minimal_project(tmp_path)
    cmd = compose_cmd(project, COMPOSE, project="satosa-orcid-config", env_path=project / ".env")
    for profile in profiles:
        cmd += ["--profile", profile]
    out = yaml.safe_load(run([*cmd, "config"]).stdout)
    services = out["services"]
    # (docker-compose 1.x prints every service whatever the profiles; each names its own)
    assert {"postgres", "proxy", "nginx"} <= set(services)
    assert {name: services[name].get("profiles") for name in ("sync", "metrics", "emulator") if name in services} == {
        "sync": ["affiliations"], "metrics": ["metrics"], "emulator": ["demo"]}
    for name, service in services.items():
        env = service.get("environment") or {}
        # the password reaches postgres and the services that use the database, nothing else
        has_password = any("secret-for-config" in str(v) for v in env.values())
        assert has_password == (name in {"postgres", "proxy", "sync", "metrics"}), name
    assert "8000" not in str(services["proxy"].get("ports", ""))  # gunicorn is reached through nginx only
    # without the password compose refuses, naming it
    (project / ".env").write_text("")
    refused = run([*cmd, "config"], check=False)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


def affiliations_config(target: Path) -> None:
    """compose.yaml's documented way: a copy of proxy_conf/ with the affiliations block."""
    shutil.copytree(REPO / "proxy_conf", target)
    ms = target / "plugins" / "microservices" / "orcid.yaml"
    text = ms.read_text()
    assert "    scopes: [openid]\n" in text
    text = text.replace("    scopes: [openid]\n", "    scopes: [openid, /read-limited, /activities/update]\n")
    text += (
        "  affiliations:\n"
        "    organization: {name: Boston University, city: Boston, country: US,\n"
        "                   disambiguated_id: 'https://ror.org/05qwgg493', disambiguation_source: ROR}\n"
        "    department_attribute: ou\n"
        "    role_attribute: title\n"
        "    sync: {poll_interval: 1}\n"
    )
    ms.write_text(text)


def nginx_conf(gunicorn_port: int, listen_port: int) -> str:
    """docker/nginx.conf with CI's addresses: the upstream and the listen port, nothing else."""
    text = (REPO / "docker" / "nginx.conf").read_text()
    assert "    server proxy:8000;\n" in text and "    listen 443 ssl;\n" in text
    text = text.replace("    server proxy:8000;\n", f"    server 127.0.0.1:{gunicorn_port};\n")
    return text.replace("    listen 443 ssl;\n", f"    listen 127.0.0.1:{listen_port} ssl;\n")


class Stack:
    pass


def ci_variant(compose: dict, changes: dict[str, dict]) -> dict:
    """compose.yaml for a daemon without a bridge: host networking, no published ports, and
    per service ``changes`` (environment entries added, volumes appended, others replaced)."""
    out = copy.deepcopy(compose)
    for name, service in out["services"].items():
        service = out["services"][name] = copy.deepcopy(service)  # anchors share dicts
        service.pop("ports", None)
        service.pop("expose", None)
        service["network_mode"] = "host"
        for key, value in changes.get(name, {}).items():
            if key == "environment" and value:
                service["environment"] = {**(service.get("environment") or {}), **value}
            elif key == "volumes" and value:
                service["volumes"] = [*(service.get("volumes") or []), *value]
            elif key == "healthcheck" and "test" not in value:
                service["healthcheck"] = {**(service.get("healthcheck") or {}), **value}
            else:
                service[key] = value
    return out


@pytest.fixture(scope="module")
def stack():
    work = readable_tree("satosa-orcid-compose-")
    layout = DemoLayout(work / "deployment", DemoPorts.free())
    open_up(layout.root)
    project_dir = work / "project"
    (project_dir / "config").mkdir(parents=True)
    (project_dir / "tls").mkdir()
    affiliations_config(project_dir / "config" / "proxy_conf")
    shutil.copy(layout.tls_cert, project_dir / "tls" / "cert.pem")
    shutil.copy(layout.tls_key, project_dir / "tls" / "key.pem")
    open_up(project_dir)
    gunicorn_port, metrics_port = free_port(), free_port()
    (project_dir / "nginx.conf").write_text(nginx_conf(gunicorn_port, layout.ports.proxy))
    (project_dir / ".env").write_text("POSTGRES_PASSWORD=unused-the-hosts-postgresql-stands-in\n")
    project = f"satosa-orcid-ci-{secrets.token_hex(3)}"
    with private_database() as database, host_services(layout, names=("idp", "sp")):
        env = container_env(layout, database, SATOSA_CONFIG="/etc/satosa-orcid/proxy_conf/proxy_conf.yaml",
                            GUNICORN_BIND=f"127.0.0.1:{gunicorn_port}", GUNICORN_WORKERS="2", GUNICORN_THREADS="4")
        del env["SATOSA_ORCID_DATABASE_URL"]  # compose builds it (overridden below: the host's PostgreSQL)
        env_file(project_dir / "satosa.env", env).chmod(0o644)
        mount = [f"{layout.root}:{layout.root}:ro"]
        db = {"SATOSA_ORCID_DATABASE_URL": database}
        changes = {
            "postgres": {"image": IMAGE, "entrypoint": ["python", "-c", "import time; time.sleep(10**9)"],
                         "environment": {}, "volumes": [],
                         "healthcheck": {"test": ["CMD", "python", "-c",
                                                  "import socket; socket.create_connection(('127.0.0.1', 5432), 2)"],
                                         "interval": "1s"}},
            "proxy": {"environment": db, "volumes": mount, "healthcheck": {"interval": "2s", "start_period": "60s"}},
            "nginx": {},
            "sync": {"environment": db, "volumes": mount},
            "metrics": {"environment": db, "volumes": mount,
                        "command": ["satosa-orcid", "metrics", "serve", "--host", "127.0.0.1", "--port", str(metrics_port)]},
            "emulator": {"volumes": mount,
                         "command": ["satosa-orcid", "emulator", "--host", "127.0.0.1", "--port",
                                     str(layout.ports.emulator), "--issuer", layout.emulator_url]},
        }
        override_path = project_dir / "compose.yaml"
        override_path.write_text(yaml.safe_dump(ci_variant(yaml.safe_load(COMPOSE.read_text()), changes)))
        cmd = compose_cmd(project_dir, override_path, project=project, env_path=project_dir / ".env")
        for profile in PROFILES:
            cmd += ["--profile", profile]
        s = Stack()
        s.layout, s.database, s.cmd, s.metrics_port = layout, database, cmd, metrics_port
        try:
            run([*cmd, "up", "-d", "--no-build"], timeout=600)
            wait_for(lambda: _get(f"{layout.proxy_base}/orcid/health", layout), 180, "the proxy through nginx")
            wait_for(lambda: _get(f"{layout.emulator_url}/.well-known/openid-configuration", layout), 60, "emulator")
            yield s
        finally:
            logs = run([*cmd, "logs", "--no-color"], check=False, timeout=120)
            print(logs.stdout[-20000:])
            run([*cmd, "down", "-v", "--remove-orphans", "-t", "10"], check=False, timeout=300)
            subprocess.run(["rm", "-rf", str(work)], check=False)


def _get(url: str, layout) -> bool:
    try:
        return requests.get(url, verify=str(layout.tls_cert), timeout=5).status_code == 200
    except requests.RequestException:
        return False


def test_compose_stack_logs_in_through_nginx_and_the_worker_writes_the_affiliation(stack):
    layout = stack.layout
    released = scripted_login(layout, log=lambda msg: None)
    assert released["attributes"]["eduPersonOrcid"] == [f"https://orcid.org/{ORCID_ID}"]
    engine = sa.create_engine(stack.database)

    def written():
        with engine.connect() as conn:
            return conn.execute(sa.text(
                "SELECT kind, status, put_code FROM orcid_affiliations WHERE orcid = :o AND status = 'done'"),
                {"o": ORCID_ID}).all()

    try:
        rows = wait_for(written, 120, "the sync worker's affiliation write")
    finally:
        engine.dispose()
    assert [(r.kind, r.status) for r in rows] == [("employment", "done")] and rows[0].put_code
    # the exporter of the metrics profile counts the hop the proxy's workers made
    text = requests.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).text
    completed = re.findall(r"^satosa_orcid_hops_completed_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert completed and sum(float(v) for v in completed) == 1.0, text[:2000]
    # nginx and gunicorn logged the callback by its path, without the code or the state
    logs = run([*stack.cmd, "logs", "--no-color", "nginx", "proxy"]).stdout
    callback_lines = [line for line in logs.splitlines() if "/orcid/callback" in line]
    assert any(line.startswith("nginx") for line in callback_lines), logs[-3000:]
    assert not [line for line in callback_lines if "?" in line or "code=" in line]


def _slow_header_client(port: int, result: dict) -> None:
    """slowloris: one request header, one byte every half second (the header would take 60 s)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    header = b"GET /orcid/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 80 + b"\r\n\r\n"
    result["length"] = len(header)
    sent = 0
    try:
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=90), server_hostname="x") as s:
            for byte in header:
                s.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.5)
            result["answer"] = s.recv(200)
    except OSError as exc:
        result["cut"] = type(exc).__name__
    result["sent"] = sent


def test_nginx_cuts_off_slow_header_clients_while_logins_go_through(stack):
    layout = stack.layout
    clients = [{} for _ in range(16)]  # more than the proxy's 2 workers x 4 threads
    threads = [threading.Thread(target=_slow_header_client, args=(layout.ports.proxy, r), daemon=True) for r in clients]
    for t in threads:
        t.start()
    time.sleep(2)  # every slow client is connected and trickling
    released = scripted_login(layout, log=lambda msg: None)  # the link exists: no ORCID step
    assert released["attributes"]["eduPersonOrcid"] == [f"https://orcid.org/{ORCID_ID}"]
    for t in threads:
        t.join(timeout=90)
    for r in clients:
        # nginx closed each one long before its header was complete (10 s of 60 s)
        assert "cut" in r and "answer" not in r, r
        assert r["sent"] < r["length"] * 0.5, r
