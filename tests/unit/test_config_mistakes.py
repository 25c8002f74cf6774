"""Every configuration mistake a newcomer made (issue: "the first hour") ends in one line that
names it: in ``check-config``, in the admin CLI and when the proxy starts (the image's
gunicorn entry), with a non-zero exit status and never a traceback.

The proxy is started as deployments start it (gunicorn, ``satosa_orcid_plugin.ops.wsgi:app``,
the real ``proxy_conf/`` copied and broken one way per row); all rows start at once.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml
from cryptography.fernet import Fernet

from satosa_orcid_plugin.config import PLUGIN_KEYS
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

PLUGIN_CLASSES = "(the plugin's classes are satosa_orcid_plugin.OrcidConnect and satosa_orcid_plugin.OrcidRequestHint)"
ALLOWED = ", ".join(sorted(PLUGIN_KEYS))  # how a key typo's line lists the keys there are
FRIENDLY = ("INTERNAL_ATTRIBUTES.attributes.edupersonorcid.saml: use the friendly name eduPersonOrcid; "
            "the urn:oid form is silently dropped by SATOSA")


@dataclass
class Mistake:
    id: str
    break_it: Callable[[Path, dict], None]  # (conf_dir, env) -> None, in place
    check_config: str      # the line check-config prints (after "error: ")
    startup: str | None    # the line the proxy prints (after "satosa-orcid: "); None: not a start-up error
    cli: str | None = None  # the line `satosa-orcid --config ... links list` prints


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _ms(conf: Path) -> Path:
    return conf / "plugins" / "microservices" / "orcid.yaml"


def _unset(name: str):
    def apply(conf: Path, env: dict) -> None:
        env.pop(name)
    return apply


def _database(url: str):
    def apply(conf: Path, env: dict) -> None:
        env["SATOSA_ORCID_DATABASE_URL"] = url.format(conf=conf)
    return apply


def _not_a_directory(conf: Path, env: dict) -> None:
    (conf / "a-file").write_text("")
    env["SATOSA_ORCID_DATABASE_URL"] = f"sqlite:///{conf}/a-file/db/links.sqlite"


def _urn_oid(conf: Path, env: dict) -> None:
    _edit(conf / "internal_attributes.yaml", "saml: [eduPersonOrcid]", "saml: ['urn:oid:1.3.6.1.4.1.5923.1.1.1.16']")


STORE = "MICRO_SERVICES[orcid].config.store.database_url"
MISTAKES = [
    Mistake("unset-env", _unset("ORCID_CLIENT_SECRET"),
            "plugins/microservices/orcid.yaml: !ENV ORCID_CLIENT_SECRET: the environment variable "
            "ORCID_CLIENT_SECRET is not set",
            "plugins/microservices/orcid.yaml: !ENV ORCID_CLIENT_SECRET: the environment variable "
            "ORCID_CLIENT_SECRET is not set",
            "satosa-orcid config: {conf}/plugins/microservices/orcid.yaml: !ENV ORCID_CLIENT_SECRET: the "
            "environment variable ORCID_CLIENT_SECRET is not set"),
    Mistake("unset-env-in-proxy-conf", _unset("SATOSA_BASE"),
            "proxy_conf.yaml: !ENV SATOSA_BASE: the environment variable SATOSA_BASE is not set",
            "proxy_conf.yaml: !ENV SATOSA_BASE: the environment variable SATOSA_BASE is not set",
            "satosa-orcid config: {conf}/proxy_conf.yaml: !ENV SATOSA_BASE: the environment variable "
            "SATOSA_BASE is not set"),
    Mistake("database-directory", _not_a_directory,
            f"{STORE}: the SQLite file's directory {{conf}}/a-file/db cannot be created: {{conf}}/a-file is not a directory",
            f"{STORE}: the SQLite file's directory {{conf}}/a-file/db cannot be created: {{conf}}/a-file is not a directory",
            "satosa-orcid config: store.database_url: the SQLite file's directory {conf}/a-file/db cannot be "
            "created: {conf}/a-file is not a directory"),
    # psycopg is installed here; pg8000 (a driver SQLAlchemy knows) is not: the same mistake.
    Mistake("postgres-driver", _database("postgresql+pg8000://satosa@127.0.0.1:5432/orcid"),
            f"{STORE}: the PostgreSQL driver 'pg8000' is not installed (pip install "
            "'satosa-orcid-plugin[postgres]' installs psycopg)",
            f"{STORE}: the PostgreSQL driver 'pg8000' is not installed (pip install "
            "'satosa-orcid-plugin[postgres]' installs psycopg)",
            "satosa-orcid config: store.database_url: the PostgreSQL driver 'pg8000' is not installed (pip "
            "install 'satosa-orcid-plugin[postgres]' installs psycopg)"),
    Mistake("module-path", lambda conf, env: _edit(_ms(conf), "module: satosa_orcid_plugin.OrcidConnect",
                                                   "module: satosa_orcid_plugin.OrcidConect"),
            f"MICRO_SERVICES[orcid].module: cannot import 'satosa_orcid_plugin.OrcidConect' {PLUGIN_CLASSES}",
            f"MICRO_SERVICES[orcid].module: cannot import 'satosa_orcid_plugin.OrcidConect' {PLUGIN_CLASSES}",
            "satosa-orcid config: {conf}/proxy_conf.yaml: MICRO_SERVICES[1].module: 'satosa_orcid_plugin.OrcidConect' "
            "is not the plugin's class (satosa_orcid_plugin.OrcidConnect)"),
    Mistake("key-typo", lambda conf, env: _edit(_ms(conf), "on_error: continue", "on_eror: continue"),
            "MICRO_SERVICES[orcid].config.on_eror: unknown key (allowed: " + ALLOWED + ")",
            "MICRO_SERVICES[orcid].config.on_eror: unknown key (allowed: " + ALLOWED + ")",
            "satosa-orcid config: on_eror: unknown key (allowed: " + ALLOWED + ")"),
    Mistake("friendly-name", _urn_oid, FRIENDLY, FRIENDLY),
]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return DemoLayout(tmp_path_factory.mktemp("layout"), DemoPorts.free())


def _broken(layout: DemoLayout, root: Path, mistake: Mistake) -> tuple[Path, dict]:
    conf = root / mistake.id
    shutil.copytree(layout.proxy_conf_dir, conf)
    env = {**os.environ, **layout.env(), "SATOSA_CONFIG": str(conf / "proxy_conf.yaml")}
    env["SATOSA_ORCID_DATABASE_URL"] = f"sqlite:///{root}/{mistake.id}-links.sqlite"
    mistake.break_it(conf, env)
    return conf, env


def _cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    """The console script's click group in this process (a traceback would fail the test:
    exceptions are not caught), with exactly ``env`` as the environment."""
    from click.testing import CliRunner

    from satosa_orcid_plugin.cli import main

    environ = {k: None for k in os.environ if k not in env}
    environ.update(env)
    result = CliRunner().invoke(main, list(args), env=environ, catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_every_mistake_is_one_line_in_check_config_the_cli_and_at_start_up(layout, tmp_path):
    cases = [(m, *_broken(layout, tmp_path, m)) for m in MISTAKES]
    # The proxies first (they start in parallel and take a few seconds each to fail).
    proxies = {}
    for m, conf, env in cases:
        if m.startup is not None:
            proxies[m.id] = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "python:satosa_orcid_plugin.ops.gunicorn_conf",
                 "--bind", "127.0.0.1:0", "--workers", "1", "satosa_orcid_plugin.ops.wsgi:app"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    failures = []
    for m, conf, env in cases:
        check = _cli(env, "check-config", str(conf / "proxy_conf.yaml"))
        want = "error: " + m.check_config.format(conf=conf)
        if check.returncode != 1 or want not in _lines(check.stderr) or "Traceback" in check.stderr + check.stdout:
            failures.append(f"{m.id}: check-config exit {check.returncode}, wanted {want!r} in\n{check.stderr}")
        if m.cli is not None:
            cli = _cli(env, "--config", str(conf / "proxy_conf.yaml"), "links", "list")
            want = m.cli.format(conf=conf)
            if cli.returncode == 0 or _lines(cli.stderr) != [want] or "Traceback" in cli.stderr:
                failures.append(f"{m.id}: links list exit {cli.returncode}, wanted only {want!r}, got\n{cli.stderr}")
    for m, conf, env in cases:
        if m.startup is None:
            continue
        try:
            output, _ = proxies[m.id].communicate(timeout=120)
        finally:
            proxies[m.id].kill()
        want = "satosa-orcid: " + m.startup.format(conf=conf)
        mine = [line for line in _lines(output) if line.startswith("satosa-orcid")]
        if proxies[m.id].returncode == 0 or mine != [want] or "Traceback" in output:
            failures.append(f"{m.id}: proxy exit {proxies[m.id].returncode}, wanted only {want!r}, got\n{output}")
    assert not failures, "\n\n".join(failures)


def test_a_missing_institution_name_is_a_warning_in_check_config_and_at_start_up(layout, tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    shutil.copytree(layout.proxy_conf_dir, conf)
    _edit(_ms(conf), "    institution: !ENV SATOSA_ORCID_INSTITUTION\n", "")
    env = {**os.environ, **layout.env()}
    check = _cli(env, "check-config", str(conf / "proxy_conf.yaml"))
    assert check.returncode == 0, check.stderr
    assert ('warning: MICRO_SERVICES[orcid].config.interstitial.institution: not set, the page before ORCID names '
            '"Your institution" (set your institution\'s name)') in _lines(check.stderr)
    # start-up: the plugin says it once, in the proxy's log
    from satosa.satosa_config import SATOSAConfig

    from satosa_orcid_plugin.ops.wsgi import create_app

    config = layout.proxy_config()
    for entry in config["MICRO_SERVICES"]:
        if entry["name"] == "orcid":
            entry["config"]["interstitial"].pop("institution")
    from satosa_orcid_plugin import microservice

    # SATOSA's LOGGING (dictConfig) strips the handlers of the plugin's loggers, caplog's too:
    # the micro-service logs to a logger of its own here.
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    probe = logging.Logger("satosa_orcid_plugin.microservice")
    probe.addHandler(handler)
    monkeypatch.setattr(microservice, "log", probe)
    create_app(SATOSAConfig(config))
    assert [r.getMessage() for r in records if "institution" in r.getMessage()] == [
        'satosa-orcid config: interstitial.institution: not set, the page before ORCID names "Your institution" '
        "(set your institution's name)"]


def test_under_satosas_own_entry_the_plugin_logs_its_line_before_satosas_traceback(caplog):
    from satosa_orcid_plugin.errors import ConfigError
    from satosa_orcid_plugin.microservice import OrcidConnect

    raw = {"orcid": {"client_id": "APP-1", "client_secret": "s"}, "user_key_attribute": "uid", "on_eror": "continue",
           "store": {"database_url": "sqlite://", "token_keys": Fernet.generate_key().decode()}}
    with caplog.at_level(logging.ERROR, logger="satosa_orcid_plugin"), pytest.raises(ConfigError):
        OrcidConnect(config=raw, internal_attributes={"attributes": {"edupersonorcid": {}}}, name="orcid",
                     base_url="https://proxy.example.org")
    assert [r.getMessage() for r in caplog.records] == [
        "satosa-orcid config: on_eror: unknown key (allowed: " + ALLOWED + ")"]


def test_the_cli_migrates_a_fresh_sqlite_store_like_the_proxy(tmp_path):
    env = {**os.environ, "SATOSA_ORCID_DATABASE_URL": f"sqlite:///{tmp_path}/new/links.sqlite",
           "SATOSA_ORCID_TOKEN_KEYS": Fernet.generate_key().decode()}
    env.pop("SATOSA_ORCID_CONFIG", None)
    listed = _cli(env, "links", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert yaml.safe_load(listed.stdout) == []


@pytest.mark.postgres
def test_the_cli_names_db_upgrade_for_a_postgresql_schema_left_behind(postgres_url):
    env = {**os.environ, "SATOSA_ORCID_DATABASE_URL": postgres_url, "SATOSA_ORCID_TOKEN_KEYS": Fernet.generate_key().decode()}
    listed = _cli(env, "links", "list")
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert _lines(listed.stderr) == ["satosa-orcid: the database schema is empty, this version needs "
                                     f"{_head()}: run 'satosa-orcid db upgrade'"]
    assert _cli(env, "db", "upgrade").returncode == 0
    assert _cli(env, "links", "list").returncode == 0


def _head() -> str:
    from satosa_orcid_plugin.store import HEAD_REVISION

    return HEAD_REVISION


def test_emulator_clients_mistakes_are_one_line(tmp_path):
    bad = tmp_path / "clients.json"
    bad.write_text('[{"client_id": "APP-1", "client_secret": "s", "redirect_uri": "https://p/orcid/callback"}]')
    for args, want in (
        (["--clients", str(tmp_path / "missing.json")], f"satosa-orcid: --clients {tmp_path}/missing.json: No such file or directory"),
        (["--clients", str(bad)], f"satosa-orcid: --clients {bad}: client #1: unknown field 'redirect_uri' (fields: "
                                  "client_id, client_secret, redirect_uris, connect_redirect_uri, member, name)"),
    ):
        result = _cli(dict(os.environ), "emulator", "--port", "0", *args)
        assert result.returncode == 1 and _lines(result.stderr) == [want], result.stderr


def test_the_emulator_without_clients_serves_a_local_client(tmp_path):
    import socket
    import time

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "satosa_orcid_plugin.cli", "emulator", "--port", str(port),
                             "--proxy-base", "https://proxy.uni.example"],
                            env={k: v for k, v in os.environ.items() if k != "ORCID_EMULATOR_CLIENTS"},
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                assert requests.get(f"{url}/.well-known/openid-configuration", timeout=2).status_code == 200
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        # the local client and its registered redirect URI: ORCID's sign-in page, not an error
        page = requests.get(f"{url}/oauth/authorize", params={
            "client_id": "APP-LOCAL00000000001", "response_type": "code", "scope": "openid",
            "redirect_uri": "https://proxy.uni.example/orcid/callback"}, timeout=5)
        assert page.status_code == 200 and "Sign in" in page.text
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert "registered the local client APP-LOCAL00000000001" in err


def test_demo_connect_journey_says_where_the_orcid_side_starts(tmp_path):
    from satosa_orcid_plugin.devstack.demo import _banner

    layout = DemoLayout(tmp_path / "d", DemoPorts.from_base(18443))
    banner = _banner(layout, "connect")
    assert f"{layout.emulator_url}/signin" in banner.split("Institutional Connect).")[1].split("1.")[0]
    assert "'Sign in with your institution'" in banner
    assert banner != _banner(layout, "login")


def test_a_database_server_that_does_not_answer_is_a_warning_not_an_error(layout, tmp_path):
    import socket

    with socket.socket() as s:  # a port nobody listens on: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "conf"
    shutil.copytree(layout.proxy_conf_dir, conf)
    env = {**os.environ, **layout.env(), "SATOSA_ORCID_DATABASE_URL": f"postgresql+psycopg://satosa@127.0.0.1:{port}/orcid"}
    check = _cli(env, "check-config", str(conf / "proxy_conf.yaml"))
    assert check.returncode == 0, check.stderr
    warning = [line for line in _lines(check.stderr) if "store.database_url" in line]
    assert len(warning) == 1 and warning[0].startswith(
        "warning: MICRO_SERVICES[orcid].config.store.database_url: the database did not answer within 2s "
        "(database error (OperationalError): ")
