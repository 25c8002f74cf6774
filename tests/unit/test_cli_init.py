"""``satosa-orcid init`` against a plain SATOSA configuration (tests/fixtures/plain_satosa):
what an identity engineer runs first, and what they find in their files afterwards."""
from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from satosa_orcid_plugin.cli import main
from satosa_orcid_plugin.cli_init import parse_env_file
from satosa_orcid_plugin.devstack.pki import generate_demo_pki

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "plain_satosa"
BASE = "https://proxy.uni.example"


@pytest.fixture
def conf(tmp_path) -> Path:
    target = tmp_path / "satosa"
    shutil.copytree(FIXTURE, target)
    generate_demo_pki(target / "pki")  # frontend.key/.crt and backend.key/.crt, as the fixture names them
    text = (target / "proxy_conf.yaml").read_text()
    (target / "proxy_conf.yaml").write_text(text.replace("BASE: https://satosa.example.org", f"BASE: {BASE}"))
    return target


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _init(conf: Path, *args: str):
    env = {"ORCID_CLIENT_SECRET": "init-test-secret", "ORCID_CLIENT_ID": None}
    return CliRunner().invoke(main, ["init", "--proxy-conf", str(conf / "proxy_conf.yaml"), "--client-id",
                                     "APP-1234567890123456", "--institution", "Example University", *args],
                              env=env, catch_exceptions=False)


def test_dry_run_shows_the_diff_and_writes_nothing(conf):
    before = _snapshot(conf)
    result = _init(conf, "--dry-run")
    assert result.exit_code == 0, result.output
    assert _snapshot(conf) == before
    out = result.stdout
    assert "+++ b/proxy_conf.yaml" in out and "+  - plugins/microservices/orcid.yaml" in out
    assert "+++ b/internal_attributes.yaml" in out and "+    saml: [eduPersonOrcid]" in out
    assert "+SATOSA_ORCID_TOKEN_KEYS=<generated token key>" in out
    assert "init-test-secret" not in out  # secrets are masked in the diff


def test_init_adds_the_plugin_keeps_comments_and_passes_check_config(conf):
    original = (conf / "proxy_conf.yaml").read_text()
    result = _init(conf)
    assert result.exit_code == 0, result.output
    # the URIs to register with ORCID, from the deployment's BASE
    assert f"{BASE}/orcid/callback" in result.stdout and f"{BASE}/orcid/connect" in result.stdout
    assert f"check-config {conf / 'proxy_conf.yaml'}: OK" in result.stdout

    text = (conf / "proxy_conf.yaml").read_text()
    for line in original.splitlines():  # nothing removed or rewritten: comments and quoting stay
        assert line in text
    services = yaml.safe_load(text)["MICRO_SERVICES"]
    assert services == ["plugins/microservices/orcid_hint.yaml", "plugins/microservices/orcid.yaml",
                        "plugins/microservices/filter_attributes.yaml"]  # before the filter

    attrs = yaml.safe_load((conf / "internal_attributes.yaml").read_text())["attributes"]
    assert attrs["edupersonorcid"] == {"saml": ["eduPersonOrcid"], "openid": ["eduperson_orcid"]}

    env_file = conf / "satosa-orcid.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = parse_env_file(env_file.read_text())
    assert env["ORCID_CLIENT_ID"] == "APP-1234567890123456" and env["ORCID_CLIENT_SECRET"] == "init-test-secret"
    from cryptography.fernet import Fernet

    Fernet(env["SATOSA_ORCID_TOKEN_KEYS"].encode())  # a real key
    plugin = (conf / "plugins" / "microservices" / "orcid.yaml").read_text()
    assert "client_secret: !ENV ORCID_CLIENT_SECRET" in plugin and "init-test-secret" not in plugin
    assert env["SATOSA_ORCID_TOKEN_KEYS"] not in plugin


def test_a_second_run_changes_nothing(conf):
    assert _init(conf).exit_code == 0
    before = _snapshot(conf)
    again = _init(conf)
    assert again.exit_code == 0, again.output
    assert "nothing to change" in again.stderr
    assert _snapshot(conf) == before
    assert _init(conf, "--dry-run").stdout == ""


def test_init_names_what_it_cannot_do(conf):
    (conf / "proxy_conf.yaml").write_text((conf / "proxy_conf.yaml").read_text().replace(
        'MICRO_SERVICES:\n  - "plugins/microservices/filter_attributes.yaml"',
        'MICRO_SERVICES: ["plugins/microservices/filter_attributes.yaml"]'))
    result = _init(conf)
    assert result.exit_code == 1
    assert result.stderr.strip() == ("satosa-orcid: proxy_conf.yaml: MICRO_SERVICES is written as a flow list; write "
                                     "it as a block list (one '- item' per line) or add the plugin's entries by hand")
    missing = CliRunner().invoke(main, ["init", "--proxy-conf", str(conf / "nope.yaml")])
    assert missing.exit_code == 1 and missing.stderr.strip() == f"satosa-orcid: --proxy-conf {conf / 'nope.yaml'}: no such file"


@pytest.mark.parametrize("micro_services", ["", "MICRO_SERVICES: []\n"])
def test_init_when_there_are_no_micro_services_yet(conf, micro_services):
    text = (conf / "proxy_conf.yaml").read_text()
    block = '# Filters run last (attribute release policy of this deployment).\nMICRO_SERVICES:\n  - "plugins/microservices/filter_attributes.yaml"\n'
    assert block in text
    (conf / "proxy_conf.yaml").write_text(text.replace(block, micro_services))
    assert _init(conf).exit_code == 0
    services = yaml.safe_load((conf / "proxy_conf.yaml").read_text())["MICRO_SERVICES"]
    assert services == ["plugins/microservices/orcid_hint.yaml", "plugins/microservices/orcid.yaml"]
    before = _snapshot(conf)
    assert _init(conf).exit_code == 0 and _snapshot(conf) == before


def test_demo_around_an_own_proxy_names_a_base_it_cannot_serve(conf, tmp_path):
    from satosa_orcid_plugin.devstack.demo import DemoError, own_proxy_layout
    from satosa_orcid_plugin.devstack.layout import DemoPorts

    with pytest.raises(DemoError) as caught:  # BASE is https://proxy.uni.example, not the demo's loopback port
        own_proxy_layout(conf.parent / "demo", DemoPorts.from_base(18443), conf / "proxy_conf.yaml")
    assert str(caught.value) == ("--proxy-conf: BASE is 'https://proxy.uni.example' but the demo serves the proxy at "
                                 "https://127.0.0.1:18443; set BASE to that (or choose the port with --port-base)")
    with pytest.raises(DemoError, match="give a proxy_conf.yaml"):
        own_proxy_layout(tmp_path / "demo2", DemoPorts.from_base(18443), conf / "internal_attributes.yaml")
