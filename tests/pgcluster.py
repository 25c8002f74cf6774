"""A throwaway PostgreSQL cluster of a test's own (``initdb`` + ``pg_ctl`` on a free loopback
port), which the test may freeze (SIGSTOP on the postmaster and every backend) and thaw.

Skips when ``initdb`` is missing, fails instead when ``SATOSA_ORCID_REQUIRE_SERVICES=1``.
As root, the cluster runs as the ``postgres`` user (``initdb`` refuses to run as root).
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgschema import REQUIRE_SERVICES_VAR


@dataclass
class Cluster:
    data: Path
    port: int
    as_user: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer, ...)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def signal_all(self, sig: int) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The server hangs (every process stopped; the kernel still accepts and acknowledges)."""
        self.signal_all(signal.SIGSTOP)
        try:
            yield
        finally:
            self.signal_all(signal.SIGCONT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        message = "a throwaway PostgreSQL needs initdb and pg_ctl on PATH (Debian: postgresql)"
        if os.environ.get(REQUIRE_SERVICES_VAR) == "1":
            pytest.fail(f"{message}; {REQUIRE_SERVICES_VAR}=1 forbids skipping")
        pytest.skip(message)
    root = Path(tempfile.mkdtemp(prefix="satosa-orcid-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as postgres
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(root / "data", _free_port(), as_user)
    run = dict(check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([*as_user, initdb, "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-N"], **run)
        subprocess.run([*as_user, pg_ctl, "-D", str(cluster.data), "-l", str(root / "log"), "-w", "-t", "60",
                        "-o", f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       **run)
        yield cluster
    finally:
        if (cluster.data / "postmaster.pid").exists():
            cluster.signal_all(signal.SIGCONT)
            subprocess.run([*as_user, pg_ctl, "-D", str(cluster.data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
