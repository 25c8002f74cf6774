"""Helpers of the image tests: docker, a private PostgreSQL database, the demo's IdP, SP and
ORCID emulator on the host, a layout the container can read."""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import requests

IMAGE = os.environ.get("SATOSA_ORCID_IMAGE", "satosa-orcid:local")
POSTGRES_URL = os.environ.get("SATOSA_ORCID_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
UID = "10001"
# variables of DemoLayout.env() the proxy container does not need (the host's paths to
# proxy_conf/ and the demo processes' settings)
HOST_ONLY = {"SATOSA_CONFIG", "SATOSA_ORCID_DEMO_LAYOUT"}


def docker(*args: str, check: bool = True, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, **kw)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} -> {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def private_database() -> Iterator[str]:
    """A database of its own on this machine's PostgreSQL (createdb/dropdb), as a SQLAlchemy URL."""
    url = urlsplit(POSTGRES_URL)
    name = f"satosa_orcid_image_{secrets.token_hex(4)}"
    conn = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    subprocess.run(["createdb", *conn, name], check=True, env=env, timeout=60)
    try:
        yield urlunsplit(url._replace(path=f"/{name}"))
    finally:
        subprocess.run(["dropdb", "--force", *conn, name], env=env, timeout=60, check=False)


def readable_tree(prefix: str) -> Path:
    """A directory the container's user (uid 10001) can read: pytest's own tmp is root-only."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("SATOSA_ORCID_IMAGE_TMP", "/tmp")))
    root.chmod(0o755)
    return root


def open_up(path: Path) -> None:
    """Demo keys are 0600 root: let uid 10001 read them (throw-away test keys)."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            os.chmod(os.path.join(dirpath, name), 0o644)


def container_env(layout, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in layout.env().items() if k not in HOST_ONLY}
    env["SATOSA_ORCID_DATABASE_URL"] = database_url
    env.update(extra)
    return env


def env_file(path: Path, env: dict[str, str]) -> Path:
    lines = []
    for key, value in env.items():
        assert "\n" not in value, key
        lines.append(f"{key}={value}")
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


class Container:
    """``docker run -d`` of the image; ``stop()`` removes it (also from a finally/fixture)."""

    def __init__(self, *args: str, image: str = IMAGE, name: str | None = None) -> None:
        self.name = name or f"satosa-orcid-test-{secrets.token_hex(4)}"
        docker("run", "-d", "--name", self.name, "--network", "host", *args, *([image] if image else []))
        self.logs_text = ""

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def running(self) -> bool:
        return self.inspect()["State"]["Running"]

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return docker("exec", self.name, *args, check=check)

    def wait_health(self, status: str = "healthy", timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            state = self.inspect()["State"]
            if not state["Running"]:
                raise AssertionError(f"{self.name} exited {state['ExitCode']}:\n{self.logs()[-4000:]}")
            last = (state.get("Health") or {}).get("Status")
            if last == status:
                return
            time.sleep(1)
        raise AssertionError(f"{self.name} is {last}, not {status}, after {timeout}s:\n{self.logs()[-4000:]}")

    def wait_url(self, url: str, timeout: float = 120, **kw) -> requests.Response:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise AssertionError(f"{self.name} exited:\n{self.logs()[-4000:]}")
            try:
                return requests.get(url, timeout=5, **kw)
            except requests.RequestException:
                time.sleep(0.5)
        raise AssertionError(f"{url} did not answer in {timeout}s:\n{self.logs()[-4000:]}")

    def stop(self) -> str:
        self.logs_text = self.logs()
        docker("rm", "-f", "-v", self.name, check=False)  # and its anonymous volume
        return self.logs_text


@contextlib.contextmanager
def host_services(layout, names=("emulator", "idp", "sp")) -> Iterator[None]:
    """The demo's ORCID emulator, IdP and SP as real gunicorn processes on the host."""
    from satosa_orcid_plugin.devstack.demo import DemoStack

    stack = DemoStack(layout, log=lambda msg: None)
    stack.children = [c for c in stack.children if c.name in names]
    env = stack.env()
    try:
        for child in stack.children:
            child.start(env)
            stack._wait_ready(child, 60)
        yield
    finally:
        stack.stop()


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what}: not after {timeout}s")


def which(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (.ci/image installs it)"
    return path


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive loopback ports that are free now."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000)
        try:
            socks = []
            for i in range(count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free loopback ports")
