"""The wheel alone: built without warnings, installed into a fresh virtualenv (its dependencies
from the package index this machine's pip uses, through pip's cache), and then, from that
virtualenv and outside the checkout:

* ``satosa-orcid demo --once`` for both journeys (the demo's proxy_conf/ ships in the wheel);
* ``satosa-orcid init`` against a plain SATOSA configuration (tests/fixtures/plain_satosa, not
  the project's proxy_conf/), then a login through that proxy with the ORCID hop
  (``demo --proxy-conf``: the emulator, the demo IdP and SP around it).

Each step's time goes to stdout and to tests/artifacts/wheel-timings.json.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from test_demo_once import free_port_base  # tests/e2e is on sys.path (pytest's rootdir-less imports)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "plain_satosa"
ARTIFACTS = REPO / "tests" / "artifacts"
TIMINGS: dict[str, float] = {}


def _timed(name: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    TIMINGS[name] = round(time.monotonic() - started, 1)
    print(f"[wheel] {name}: {TIMINGS[name]}s", flush=True)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "wheel-timings.json").write_text(json.dumps(TIMINGS, indent=2))
    return result


def _clean_env(venv: Path) -> dict[str, str]:
    """The environment of a shell in which only the fresh virtualenv is active."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SATOSA_", "ORCID_", "PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    src = build / "src"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("satosa_orcid_plugin", "proxy_conf"):
        # symlinks=True: the demo's proxy_conf is a symbolic link in the package, to ../../proxy_conf
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    result = _timed("pip wheel", [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), str(src)])
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stdout + result.stderr
    assert "would be ignored" not in log and "Warning" not in log, log
    (path,) = out.glob("satosa_orcid_plugin-*.whl")
    return path


def test_the_wheel_carries_the_demos_proxy_conf_unchanged(wheel):
    shipped = "satosa_orcid_plugin/devstack/proxy_conf/"
    with zipfile.ZipFile(wheel) as zf:
        files = {n[len(shipped):]: zf.read(n) for n in zf.namelist() if n.startswith(shipped)}
    canonical = {str(p.relative_to(REPO / "proxy_conf")): p.read_bytes()
                 for p in (REPO / "proxy_conf").rglob("*.yaml")}
    assert files == canonical


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the dependencies from the index pip is configured for here; downloads come from pip's cache
    result = _timed("pip install wheel", [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
                    cwd=tmp_path_factory.getbasetemp())
    assert result.returncode == 0, result.stdout + result.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import satosa_orcid_plugin; print(satosa_orcid_plugin.__file__)"],
                           capture_output=True, text=True, cwd=venv, env=_clean_env(venv), check=True).stdout
    assert where.startswith(str(venv)), where  # the installed wheel, not the checkout
    missing = subprocess.run([str(venv / "bin" / "python"), "-c", "import bs4"], capture_output=True, cwd=venv)
    assert missing.returncode != 0  # the dev extra is not there: the demo must not need it
    return venv


@pytest.mark.parametrize("journey", ["login", "connect"])
def test_demo_once_runs_from_the_wheel_alone(venv, tmp_path, journey):
    result = _timed(f"demo --once --journey {journey}",
                    [str(venv / "bin" / "satosa-orcid"), "demo", "--once", "--journey", journey,
                     "--root", str(tmp_path / "demo"), "--port-base", str(free_port_base())],
                    cwd=tmp_path, env=_clean_env(venv), timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    released = json.loads(result.stdout)["attributes"]
    assert released["eduPersonOrcid"] == ["https://orcid.org/0000-0002-1825-0097"]


def test_init_on_a_plain_satosa_then_a_login_with_the_orcid_hop(venv, tmp_path):
    """The issue's "done when": init against SATOSA's own kind of configuration, then a login."""
    conf = tmp_path / "conf"
    shutil.copytree(FIXTURE, conf)
    env = _clean_env(venv)
    python = str(venv / "bin" / "python")
    # the deployment's own keys (the fixture names pki/frontend.* and pki/backend.*)
    subprocess.run([python, "-c", "import sys, pathlib; from satosa_orcid_plugin.devstack.pki import generate_demo_pki; "
                    "generate_demo_pki(pathlib.Path(sys.argv[1]))", str(conf / "pki")], check=True, env=env)
    port = free_port_base()
    text = (conf / "proxy_conf.yaml").read_text()
    (conf / "proxy_conf.yaml").write_text(text.replace("BASE: https://satosa.example.org",
                                                       f"BASE: https://127.0.0.1:{port}"))
    satosa_orcid = str(venv / "bin" / "satosa-orcid")
    init = _timed("init", [satosa_orcid, "init", "--proxy-conf", "proxy_conf.yaml", "--environment", "emulator",
                           "--orcid-base-url", f"http://127.0.0.1:{port + 1}", "--institution", "Example University"],
                  cwd=conf, env={**env, "ORCID_CLIENT_ID": "APP-DEMO000000000001", "ORCID_CLIENT_SECRET": "set-later"})
    assert init.returncode == 0, init.stdout + init.stderr
    assert f"https://127.0.0.1:{port}/orcid/callback" in init.stdout
    assert "Traceback" not in init.stderr
    again = subprocess.run([satosa_orcid, "init", "--proxy-conf", "proxy_conf.yaml", "--environment", "emulator",
                            "--orcid-base-url", f"http://127.0.0.1:{port + 1}", "--dry-run"],
                           cwd=conf, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout == "", again.stdout  # idempotent
    # the fixture's metadata entries point at ../demo/metadata (written by the demo before the proxy starts)
    login = _timed("demo --proxy-conf --once",
                   [satosa_orcid, "demo", "--proxy-conf", str(conf / "proxy_conf.yaml"), "--root", str(tmp_path / "demo"),
                    "--port-base", str(port), "--once"], cwd=tmp_path, env=env, timeout=300)
    assert login.returncode == 0, login.stderr[-4000:]
    released = json.loads(login.stdout)["attributes"]
    assert released["eduPersonOrcid"] == ["https://orcid.org/0000-0002-1825-0097"]
    assert released["eduPersonPrincipalName"] == ["alice@demo.example.org"]
