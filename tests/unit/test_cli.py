"""The admin CLI over a real store and the emulator: what an operator types and reads."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from cryptography.fernet import Fernet

from satosa_orcid_plugin.cli import main
from satosa_orcid_plugin.ops.discovery import load_plugin_config
from satosa_orcid_plugin.devstack.emulator import ClientRegistration, Emulator, serve_in_thread
from satosa_orcid_plugin.wiring import login_service

REDIRECT = "https://proxy.example.org/orcid/callback"
ALICE, BOB = "alice@uni.example", "bob@uni.example"
JOSIAH, SOFIA = "0000-0002-1825-0097", "0000-0001-5109-3700"


@pytest.fixture(scope="module")
def emulator():
    emu = Emulator("http://placeholder", [ClientRegistration("APP-CLI", "cli-secret", [REDIRECT])])
    server = serve_in_thread(emu)
    emu.issuer = server.url
    yield emu
    server.stop()


@pytest.fixture
def setup(tmp_path, emulator, database_url, monkeypatch):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("CLI_TEST_SECRET", "cli-secret")
    conf = tmp_path / "orcid.yaml"
    conf.write_text(
        "module: satosa_orcid_plugin.OrcidConnect\nname: orcid\nconfig:\n"
        f"  orcid: {{environment: emulator, base_url: '{emulator.issuer}', client_id: APP-CLI, client_secret: !ENV CLI_TEST_SECRET}}\n"
        "  user_key_attribute: edupersonprincipalname\n"
        f"  store: {{database_url: '{database_url}', token_keys: '{key}'}}\n"
    )
    service = login_service(load_plugin_config(conf))
    service.store.db.upgrade()
    for user, orcid in ((ALICE, JOSIAH), (BOB, SOFIA)):
        code = emulator.issue_code_for("APP-CLI", orcid, ["openid"], REDIRECT, nonce="n")
        service.complete_hop(user_key=user, code=code, redirect_uri=REDIRECT, nonce="n")
    yield conf, service, key
    service.store.db.dispose()


def run(*args, env=None):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    return result


def test_links_list_json_and_show(setup):
    conf, _, _ = setup
    result = run("--config", str(conf), "links", "list", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert {(r["user_key"], r["orcid_uri"]) for r in rows} == {
        (ALICE, f"https://orcid.org/{JOSIAH}"), (BOB, f"https://orcid.org/{SOFIA}")}
    shown = json.loads(run("--config", str(conf), "links", "show", ALICE, "--json").output)
    assert shown["status"] == "active" and shown["audit"][0]["event"] == "link"
    assert "token" not in json.dumps(shown).replace("token_", "")
    # the same link found from the researcher's iD (any form), with the iD's audit trail
    by_orcid = json.loads(run("--config", str(conf), "links", "show", "--orcid",
                              f"https://orcid.org/{SOFIA}", "--json").output)
    assert by_orcid["user_key"] == BOB and by_orcid["audit"][0]["event"] == "link"
    assert {e["orcid"] for e in by_orcid["audit"]} == {SOFIA}
    unknown = run("--config", str(conf), "links", "show", "--orcid", "0000-0003-1415-9269")
    assert unknown.exit_code == 1 and "no link holds the ORCID iD" in unknown.output
    bad = run("--config", str(conf), "links", "show", "--orcid", "0000-0002-1825-0098")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert run("--config", str(conf), "links", "show").exit_code == 2  # neither USER nor --orcid


def test_export_csv_has_no_tokens(setup):
    conf, service, _ = setup
    out = run("--config", str(conf), "links", "export", "--format", "csv").output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(r["orcid"] for r in rows) == sorted([JOSIAH, SOFIA])
    tokens = service.store.links.tokens(ALICE)
    assert tokens.access_token not in out and tokens.refresh_token not in out


def test_unlink_revokes_at_orcid_and_is_audited(setup, emulator):
    conf, service, _ = setup
    tokens = service.store.links.tokens(ALICE)
    result = run("--config", str(conf), "links", "unlink", ALICE)
    assert result.exit_code == 0 and "unlinked" in result.output
    assert service.store.links.get_active(ALICE) is None
    assert not [t for t in emulator.tokens(orcid=JOSIAH) if t.access_token == tokens.access_token]
    assert "unlink" in [e["event"] for e in service.store.db.audit_events(user_key=ALICE)]
    again = run("--config", str(conf), "links", "unlink", ALICE)
    assert again.exit_code == 1 and again.output.strip().startswith("satosa-orcid: no active link")


def test_unlink_while_orcid_is_down_queues_the_revocations(setup, emulator):
    """ORCID not answering the revoke must not leave the tokens live: they wait, encrypted,
    for the next drain, which revokes them."""
    conf, service, _ = setup
    tokens = service.store.links.tokens(BOB)
    emulator.faults.add(endpoint="revoke", kind="status", status=503)
    assert run("--config", str(conf), "links", "unlink", BOB).exit_code == 0
    assert service.store.revocations.waiting() == 2  # the access and the refresh token
    assert [t for t in emulator.tokens(orcid=SOFIA) if t.access_token == tokens.access_token]
    emulator.faults.clear()
    assert service.revoker.drain() == 0  # not due yet: backoff
    assert service.revoker.drain(10, ids=tuple(range(1, 100))) == 2  # the retry, brought forward
    assert not [t for t in emulator.tokens(orcid=SOFIA) if t.access_token == tokens.access_token]
    assert service.store.revocations.waiting() == 0


def test_check_finds_a_revocation_done_at_orcid(setup, emulator):
    conf, service, _ = setup
    emulator.revoke_user_tokens(SOFIA)
    result = run("--config", str(conf), "links", "check", BOB, "--json")
    assert json.loads(result.output) == {BOB: "revoked"}
    assert service.store.links.get_active(BOB) is None
    assert service.store.links.get(BOB).status == "revoked"
    assert json.loads(run("--config", str(conf), "links", "check", ALICE, "--json").output) == {ALICE: "active"}


def test_check_reports_a_connect_only_link_active_and_finds_its_revocation(setup, emulator):
    """Institutional Connect grants /read-limited /activities/update without openid: ORCID's
    userinfo answers 403 for such a token even while it is live (ORCID-Source
    OpenIDController.getInfoFromToken), so the check must not ask userinfo."""
    conf, service, _ = setup
    carol, orcid = "carol@uni.example", "0009-0003-7578-3214"
    code = emulator.issue_code_for("APP-CLI", orcid, ["/read-limited", "/activities/update"], REDIRECT)
    service.store_grant(carol, service.exchange(code, REDIRECT, nonce=None, require_id_token=False))
    result = run("--config", str(conf), "links", "check", carol)
    assert result.exit_code == 0 and result.output == f"{carol}\tactive\n"
    assert service.store.links.get_active(carol) is not None
    emulator.revoke_user_tokens(orcid)
    assert run("--config", str(conf), "links", "check", carol).output == f"{carol}\trevoked\n"
    assert service.store.links.get(carol).status == "revoked"


def test_stats_and_key_rotation(setup):
    conf, service, old_key = setup
    stats = json.loads(run("--config", str(conf), "stats", "--json").output)
    assert stats["linked"] == 2
    new_key = run("keys", "generate").output.strip()
    text = conf.read_text().replace(f"token_keys: '{old_key}'", f"token_keys: '{new_key},{old_key}'")
    conf.write_text(text)
    result = run("--config", str(conf), "keys", "rotate")
    assert result.exit_code == 0 and "re-encrypted 2" in result.output
    # the old key can now go: everything reads with the new key alone
    conf.write_text(text.replace(f"{new_key},{old_key}", new_key))
    from satosa_orcid_plugin.store import Store
    from satosa_orcid_plugin.tokens import TokenCipher

    fresh = Store.from_url(service.store.db.engine.url.render_as_string(hide_password=False), TokenCipher.from_keys([new_key]))
    assert fresh.links.tokens(ALICE) is not None
    fresh.db.dispose()


def test_errors_are_one_line_and_non_zero(tmp_path):
    missing = run("--config", str(tmp_path / "nope.yaml"), "links", "list")
    assert missing.exit_code == 1 and missing.output.count("\n") == 1 and "no such file" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("module: satosa_orcid_plugin.OrcidConnect\nname: orcid\nconfig:\n  orcid: {client_secret: hush}\n")
    result = run("--config", str(bad), "links", "list")
    assert result.exit_code == 1
    assert result.output.strip() == "satosa-orcid: satosa-orcid config: orcid.client_id: is required"
    assert "hush" not in result.output
    usage = run("links", "list", env={"SATOSA_ORCID_DATABASE_URL": ""})
    assert usage.exit_code == 2


def test_check_config_accepts_the_shipped_proxy_conf(proxy_env_for_check):
    result = run("check-config", str(proxy_env_for_check))
    assert result.exit_code == 0, result.output
    assert "OK" in result.output


@pytest.fixture
def proxy_env_for_check(tmp_path, monkeypatch):
    from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

    layout = DemoLayout(tmp_path / "d", DemoPorts.free())
    for k, v in layout.env().items():
        monkeypatch.setenv(k, v)
    return layout.proxy_conf_dir / "proxy_conf.yaml"


def test_check_config_names_every_problem(tmp_path, proxy_env_for_check):
    conf_dir = tmp_path / "conf"
    import shutil

    shutil.copytree(proxy_env_for_check.parent, conf_dir)
    attrs = yaml.safe_load((conf_dir / "internal_attributes.yaml").read_text())
    attrs["attributes"]["edupersonorcid"]["saml"] = ["urn:oid:1.3.6.1.4.1.5923.1.1.1.16"]
    (conf_dir / "internal_attributes.yaml").write_text(yaml.safe_dump(attrs))
    ms = conf_dir / "plugins" / "microservices" / "orcid.yaml"
    ms.write_text(ms.read_text().replace("on_error: continue", "on_error: sometimes"))
    result = run("check-config", str(conf_dir / "proxy_conf.yaml"))
    assert result.exit_code == 1
    assert "MICRO_SERVICES[orcid].config.on_error: must be one of continue, fail" in result.output
    ms.write_text(ms.read_text().replace("on_error: sometimes", "on_error: continue"))
    result = run("check-config", str(conf_dir / "proxy_conf.yaml"))
    assert "edupersonorcid.saml: use the friendly name eduPersonOrcid" in result.output


def test_check_config_wants_orcids_sandbox_sp_named_explicitly(tmp_path, proxy_env_for_check, monkeypatch):
    # ORCID documents no sandbox SAML SP entity ID: no guessed default, check-config says so.
    import shutil

    conf_dir = tmp_path / "conf"
    shutil.copytree(proxy_env_for_check.parent, conf_dir)
    monkeypatch.setenv("ORCID_ENVIRONMENT", "sandbox")
    monkeypatch.setenv("SATOSA_ORCID_EMULATOR_SP", "")
    result = run("check-config", str(conf_dir / "proxy_conf.yaml"))
    assert result.exit_code == 1
    assert "MICRO_SERVICES[orcid].config.orcid_requesters: the environment is sandbox but no sandbox SAML SP" in result.output
    ms = conf_dir / "plugins" / "microservices" / "orcid.yaml"
    text = ms.read_text()
    ms.write_text(text.replace("    - https://orcid.org/saml2/sp/1", "    - https://sp.sandbox.example/orcid-sandbox-sp\n"
                                                                     "    - https://orcid.org/saml2/sp/1", 1))
    assert "orcid_requesters" not in run("check-config", str(conf_dir / "proxy_conf.yaml")).output


def test_console_script_help_works():
    out = subprocess.run([str(Path(sys.executable).parent / "satosa-orcid"), "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for command in ("links", "keys", "db", "check-config", "demo", "emulator", "stats"):
        assert command in out.stdout


def test_check_config_warns_when_orcid_would_get_only_a_transient_nameid(tmp_path, proxy_env_for_check):
    import shutil

    conf_dir = tmp_path / "conf"
    shutil.copytree(proxy_env_for_check.parent, conf_dir)
    fe = conf_dir / "plugins" / "frontends" / "saml2_frontend.yaml"
    text = fe.read_text()
    persistent = "          - urn:oasis:names:tc:SAML:2.0:nameid-format:persistent\n"
    assert persistent in text
    fe.write_text(text.replace(persistent, ""))
    attrs = yaml.safe_load((conf_dir / "internal_attributes.yaml").read_text())
    for a in attrs["attributes"].values():
        a["saml"] = [n for n in a.get("saml", []) if n not in ("eduPersonUniqueId", "subject-id", "pairwise-id")]
    (conf_dir / "internal_attributes.yaml").write_text(yaml.safe_dump(attrs))
    output = run("check-config", str(conf_dir / "proxy_conf.yaml")).output  # warnings go to stderr, shown here
    assert "transient NameID" in output and "https://orcid.org/saml2/sp/1" in output


def test_dont_ask_again_can_be_cleared_by_an_admin(setup):
    conf, service, _ = setup
    service.record_decline("carol@uni.example", "never")
    assert run("--config", str(conf), "decisions", "show", "carol@uni.example").output.strip() == "never"
    assert run("--config", str(conf), "decisions", "clear", "carol@uni.example").exit_code == 0
    assert run("--config", str(conf), "decisions", "show", "carol@uni.example").output.strip() == "none"


# --- issuer-bound user keys ---------------------------------------------------------------
IDP_A, IDP_B = "https://idp.uni-a.example/idp", "https://idp.uni-b.example/idp"


def test_the_same_key_from_two_idps_is_two_users_and_the_cli_asks_which(setup):
    conf, service, _ = setup
    carol = "carol@uni.example"
    from satosa_orcid_plugin.orcid_id import OrcidId

    for issuer, orcid in ((IDP_A, "0000-0003-1415-9269"), (IDP_B, "0000-0002-1694-233X")):
        service.store.links.link(carol, OrcidId.parse(orcid), None, issuer=issuer)
    service.record_decline("dave@uni.example", "never", issuer=IDP_A)

    listed = run("--config", str(conf), "links", "list")
    assert f"{carol}\t{IDP_A}\thttps://orcid.org/0000-0003-1415-9269\tactive" in listed.output
    assert f"{carol}\t{IDP_B}\thttps://orcid.org/0000-0002-1694-233X\tactive" in listed.output
    assert f"{ALICE}\t-\t" in listed.output  # linked without an issuer (setup): shown as "-"
    rows = json.loads(run("--config", str(conf), "links", "list", "--json").output)
    assert {(r["user_key"], r["issuer"]) for r in rows if r["user_key"] == carol} == {(carol, IDP_A), (carol, IDP_B)}
    exported = list(csv.DictReader(io.StringIO(run("--config", str(conf), "links", "export").output)))
    assert {r["issuer"] for r in exported if r["user_key"] == carol} == {IDP_A, IDP_B}

    ambiguous = run("--config", str(conf), "links", "show", carol)
    assert ambiguous.exit_code == 2 and "--issuer" in ambiguous.output and IDP_A in ambiguous.output
    shown = json.loads(run("--config", str(conf), "links", "show", carol, "--issuer", IDP_B, "--json").output)
    assert shown["issuer"] == IDP_B and shown["orcid"] == "0000-0002-1694-233X"
    assert run("--config", str(conf), "links", "unlink", carol).exit_code == 2  # never guesses which one
    unlinked = run("--config", str(conf), "links", "unlink", carol, "--issuer", IDP_B)
    assert unlinked.exit_code == 0 and IDP_B in unlinked.output
    # the other IdP's carol keeps her link, and is now the only one: no --issuer needed
    assert json.loads(run("--config", str(conf), "links", "show", carol, "--json").output)["issuer"] == IDP_A
    assert run("--config", str(conf), "links", "show", carol, "--issuer", "https://other.example/idp").exit_code == 1

    assert run("--config", str(conf), "decisions", "show", "dave@uni.example").output.strip() == "never"
    assert run("--config", str(conf), "decisions", "show", "dave@uni.example", "--issuer", IDP_B).output.strip() == "none"


def test_check_config_reports_how_user_keys_are_bound(tmp_path, proxy_env_for_check):
    import shutil

    result = run("check-config", str(proxy_env_for_check))
    assert "bound to the asserting IdP" in result.output and "scope_check: enforce" in result.output
    conf_dir = tmp_path / "conf"
    shutil.copytree(proxy_env_for_check.parent, conf_dir)
    ms = conf_dir / "plugins" / "microservices" / "orcid.yaml"
    ms.write_text(ms.read_text().replace("  on_error: continue", "  on_error: continue\n  user_key_scope: global\n"
                                                                  "  scope_check: off"))
    result = run("check-config", str(conf_dir / "proxy_conf.yaml"))
    assert result.exit_code == 0, result.output
    assert "user_key_scope: global" in result.output and "scope_check: off" in result.output
    # enforce with a backend that cannot read shibmd:Scope: every lookup would be refused
    ms.write_text(ms.read_text().replace("scope_check: off", "scope_check: enforce"))
    backend = conf_dir / "plugins" / "backends" / "saml2_backend.yaml"
    backend.write_text(backend.read_text().replace("satosa_orcid_plugin.ops.saml2_backend.SAMLBackend",
                                                   "satosa.backends.saml2.SAMLBackend"))
    result = run("check-config", str(conf_dir / "proxy_conf.yaml"))
    assert result.exit_code == 1 and "scope_check: enforce reads the IdPs' shibmd:Scope" in result.output
