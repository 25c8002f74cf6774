"""The image as a user runs it: ``docker run`` with a read-only root, keys from the environment
or from files, this machine's PostgreSQL, and a complete login with the ORCID hop through the
container (the demo's ORCID emulator, IdP and SP run on the host; ``--network host``)."""
from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
from imagekit import (IMAGE, UID, Container, container_env, docker, env_file, free_port, host_services, open_up,
                      private_database, readable_tree, wait_for)

from satosa_orcid_plugin.devstack.demo import scripted_login
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts
from satosa_orcid_plugin.store import HEAD_REVISION, VERSION_TABLE

REPO = Path(__file__).resolve().parents[2]
KEYS = ("SATOSA_STATE_ENCRYPTION_KEY", "SATOSA_ORCID_TOKEN_KEYS")
ORCID = "eduPersonOrcid"


@pytest.fixture(scope="module")
def workdir():
    root = readable_tree("satosa-orcid-image-")
    yield root
    subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture(scope="module")
def layout(workdir):
    layout = DemoLayout(workdir / "deployment", DemoPorts.free())
    open_up(layout.root)
    return layout


@pytest.fixture(scope="module")
def database():
    with private_database() as url:
        yield url


@pytest.fixture(scope="module")
def services(layout):
    with host_services(layout):
        yield


@pytest.fixture(scope="module")
def proxy(layout, database, workdir, services):
    """The proxy as production runs it: read-only root, gunicorn with TLS on the layout's proxy
    port, workers' metrics in a mounted directory, health checked every 2 s (the image's
    HEALTHCHECK command; only the interval is shortened)."""
    metrics = workdir / "metrics"
    metrics.mkdir()
    subprocess.run(["chown", f"{UID}:{UID}", str(metrics)], check=True)
    env = container_env(layout, database, GUNICORN_BIND=f"127.0.0.1:{layout.ports.proxy}", GUNICORN_WORKERS="2",
                        GUNICORN_THREADS="2", GUNICORN_CERTFILE=str(layout.tls_cert), GUNICORN_KEYFILE=str(layout.tls_key))
    envfile = env_file(workdir / "proxy.env", env)
    container = Container(
        "--read-only", "--tmpfs", "/tmp", "-v", f"{layout.root}:{layout.root}:ro",
        "-v", f"{metrics}:/run/satosa-orcid/metrics", "--env-file", str(envfile),
        "--health-interval", "2s", "--health-start-period", "60s",
    )
    container.metrics_dir = metrics
    try:
        container.wait_health("healthy")
        yield container
    finally:
        logs = container.stop()
        print(logs[-6000:])


def run_once(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return docker("run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", *args, check=False,
                  timeout=timeout)


# --- refusing to start ----------------------------------------------------------------------
@pytest.mark.parametrize("missing", KEYS)
def test_refuses_to_start_without_each_key(layout, database, workdir, missing):
    env = container_env(layout, database)
    del env[missing]
    envfile = env_file(workdir / f"without-{missing}.env", env)
    result = run_once("-v", f"{layout.root}:{layout.root}:ro", "--env-file", str(envfile), IMAGE)
    assert result.returncode == 1
    assert f"refusing to start: {missing} is not set" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, nothing else ran
    assert env[KEYS[0] if missing == KEYS[1] else KEYS[1]] not in result.stdout + result.stderr


def test_starts_with_keys_from_files_and_says_in_one_line_when_metrics_cannot_be_written(layout, database, workdir):
    """Docker/Kubernetes secrets: the keys as files (``*_FILE``). No volume on the metrics
    directory under a read-only root: the proxy serves, and one line says metrics are off."""
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir()
    env = container_env(layout, database, GUNICORN_BIND=f"127.0.0.1:{free_port()}", GUNICORN_WORKERS="1")
    for key in KEYS:
        path = secrets_dir / key.lower()
        path.write_text(env.pop(key) + "\n")
        path.chmod(0o644)
        env[f"{key}_FILE"] = f"/run/secrets/{key.lower()}"
    envfile = env_file(workdir / "files.env", env)
    container = Container("--read-only", "--tmpfs", "/tmp", "-v", f"{layout.root}:{layout.root}:ro",
                          "-v", f"{secrets_dir}:/run/secrets:ro", "--env-file", str(envfile))
    try:
        probe = wait_for(lambda: container.exec("satosa-orcid", "health", check=False).returncode == 0 or None
                         if container.running() else pytest.fail(container.logs()), 90, "health")
        assert probe
        logs = container.logs()
        off = [line for line in logs.splitlines() if "metrics off" in line]
        assert len(off) == 1, logs
        assert "PROMETHEUS_MULTIPROC_DIR=/run/satosa-orcid/metrics is not writable" in off[0]
    finally:
        container.stop()


# --- the running proxy ----------------------------------------------------------------------
def test_runs_as_uid_10001_with_a_read_only_root(proxy):
    info = proxy.inspect()
    assert info["Config"]["User"] == f"{UID}:{UID}"
    assert info["HostConfig"]["ReadonlyRootfs"] is True
    assert proxy.exec("id", "-u").stdout.strip() == UID
    # gunicorn's master and workers too
    ps = proxy.exec("sh", "-c", "for p in /proc/[0-9]*; do awk '/^Uid:/{print $2}' $p/status; done").stdout.split()
    assert ps and set(ps) == {UID}
    write = proxy.exec("sh", "-c", "touch /etc/satosa/x || touch /usr/local/x", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_migrated_this_machines_postgresql(proxy, database):
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == HEAD_REVISION
    finally:
        engine.dispose()


def test_healthy_over_tls(proxy, layout):
    """gunicorn has a certificate: the HEALTHCHECK (``satosa-orcid health``) probes https."""
    assert proxy.inspect()["State"]["Health"]["Status"] == "healthy"
    probe = proxy.exec("satosa-orcid", "health")
    assert probe.stdout.strip() == "healthy"
    r = requests.get(f"{layout.proxy_base}/orcid/health", verify=str(layout.tls_cert), timeout=10)
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_login_with_the_orcid_hop_through_the_container(proxy, layout, database, workdir):
    released = scripted_login(layout, log=lambda msg: None)
    assert released["attributes"][ORCID] == ["https://orcid.org/0000-0002-1825-0097"]
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT user_key, orcid FROM orcid_links")).all()
    finally:
        engine.dispose()
    assert len(rows) == 1 and rows[0].orcid == "0000-0002-1825-0097" and "alice@demo.example.org" in rows[0].user_key
    # the exporter (its own container, reading the workers' directory) counts the hop
    port = free_port()
    exporter = Container("--read-only", "--tmpfs", "/tmp", "-v", f"{proxy.metrics_dir}:/run/satosa-orcid/metrics:ro",
                         "-e", f"{'SATOSA_STATE_ENCRYPTION_KEY'}=unused", "-e", "SATOSA_ORCID_TOKEN_KEYS=unused",
                         "-e", "PROMETHEUS_MULTIPROC_DIR=/run/satosa-orcid/metrics", IMAGE, "satosa-orcid", "metrics",
                         "serve", "--no-database", "--host", "127.0.0.1", "--port", str(port), image="")
    try:
        text = exporter.wait_url(f"http://127.0.0.1:{port}/metrics").text
    finally:
        exporter.stop()
    completed = re.findall(r"^satosa_orcid_hops_completed_total(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    assert completed and sum(float(v) for v in completed) == 1.0, text[:3000]
    log = proxy.logs()
    assert "/orcid/callback" in log and "code=" not in log and "state=" not in log  # path-only access log


def test_image_labels_name_the_version_and_commit():
    labels = docker("image", "inspect", "-f", "{{json .Config.Labels}}", IMAGE).stdout
    import json

    labels = json.loads(labels)
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert labels["org.opencontainers.image.version"] == cfg["metadata"]["version"]
    assert re.fullmatch(r"[0-9a-f]{40}", labels["org.opencontainers.image.revision"])


def test_demo_once_runs_in_the_image():
    """The demo's scripted browser needs only the runtime dependencies (no BeautifulSoup)."""
    from imagekit import free_port_run

    base = free_port_run(4)
    result = docker("run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--entrypoint", "satosa-orcid",
                    IMAGE, "demo", "--once", "--root", "/tmp/demo", "--port-base", str(base), check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert '"eduPersonOrcid": ["https://orcid.org/0000-0002-1825-0097"]' in result.stdout
