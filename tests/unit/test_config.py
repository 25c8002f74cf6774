from __future__ import annotations

import copy

import pytest
from cryptography.fernet import Fernet

from satosa_orcid_plugin.config import parse_config
from satosa_orcid_plugin.errors import ConfigError

SECRET = "s3cr3t-value-that-must-never-be-echoed"
KEY = Fernet.generate_key().decode()

BASE = {
    "orcid": {"environment": "production", "client_id": "APP-ABCDEFGHIJKLMNOP", "client_secret": SECRET},
    "user_key_attribute": "eduPersonPrincipalName",
    "store": {"database_url": "sqlite:////tmp/x.db", "token_keys": KEY},
}


def cfg(**changes):
    raw = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = raw
        *parents, leaf = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return raw


def test_minimal_config_gets_production_defaults():
    c = parse_config(cfg())
    assert c.orcid.base_url == "https://orcid.org"
    assert c.orcid.scopes == ("openid",)
    assert c.orcid.timeouts.as_tuple() == (3.0, 10.0)
    assert c.on_error == "continue"
    assert c.user_key_attribute == "edupersonprincipalname"
    assert c.mode_for("any-sp") == "ask"
    assert c.interstitial.enabled
    assert c.orcid_requesters == ("https://orcid.org/saml2/sp/1",)


def test_sandbox_and_emulator_endpoints():
    assert parse_config(cfg(orcid__environment="sandbox")).orcid.base_url == "https://sandbox.orcid.org"
    emu = parse_config(cfg(orcid__environment="emulator", orcid__base_url="http://127.0.0.1:8090/", orcid__client_id="demo"))
    assert emu.orcid.base_url == "http://127.0.0.1:8090"
    assert emu.orcid.issuer == "http://127.0.0.1:8090"


def test_string_values_from_env_tags_are_coerced():
    c = parse_config(cfg(orcid__timeouts={"connect": "1.5", "read": "4"}, orcid__prompt_login="true",
                         decline={"not_now": "7d"}, orcid__scopes="openid /read-limited /activities/update"))
    assert c.orcid.timeouts.as_tuple() == (1.5, 4.0)
    assert c.orcid.prompt_login is True
    assert c.decline.not_now_seconds == 7 * 86400
    assert c.orcid.member_scopes


def test_trigger_list_of_requesters():
    c = parse_config(cfg(trigger=["https://sp.example.org/sp"]))
    assert c.mode_for("https://sp.example.org/sp") == "ask" and c.mode_for("https://other/sp") == "never"


def test_policy_per_requester_and_sp_requests():
    c = parse_config(cfg(policy={"default": "never", "requesters": {"https://a/sp": "require", "oidc-rp": "ask"}}))
    assert c.mode_for("https://a/sp") == "require"
    assert c.mode_for("oidc-rp") == "ask"
    assert c.mode_for("https://other/sp") == "never"
    # an SP whose request asks for eduPersonOrcid counts as ask
    assert c.mode_for("https://other/sp", requested=True) == "ask"


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"orcid__client_id": ...}, "orcid.client_id"),
        ({"orcid__client_secret": ...}, "orcid.client_secret"),
        ({"orcid__client_id": "not-an-app-id"}, "orcid.client_id"),
        ({"orcid__environment": "staging"}, "orcid.environment"),
        ({"orcid__environment": "emulator", "orcid__base_url": ...}, "orcid.base_url"),
        ({"orcid__environment": "emulator", "orcid__base_url": "ftp://x"}, "orcid.base_url"),
        ({"orcid__scopes": ["/bogus"]}, "orcid.scopes"),
        ({"orcid__scopes": ["openid", "/authenticate"]}, "orcid.scopes"),
        ({"orcid__timeouts": {"connect": "soon"}}, "orcid.timeouts.connect"),
        ({"orcid__timeouts": {"read": 0}}, "orcid.timeouts.read"),
        ({"orcid__clientid": "typo"}, "orcid.clientid"),
        ({"user_key_attribute": ...}, "user_key_attribute"),
        ({"on_error": "explode"}, "on_error"),
        ({"trigger": "sometimes"}, "trigger"),
        ({"store__database_url": "mysql://x"}, "store.database_url"),
        ({"store__token_keys": ...}, "store.token_keys"),
        ({"store__token_keys": "not-a-fernet-key"}, "store.token_keys"),
        ({"decline": {"not_now": "a while"}}, "decline.not_now"),
        ({"policy": {"default": "sometimes"}}, "policy.default"),
        ({"policy": {"requesters": {"https://a/sp": "maybe"}}}, "policy.requesters.https://a/sp"),
        ({"policy": {"default": "ask"}, "trigger": "always"}, "trigger"),
        ({"interstitial": {"templates_dir": "/nonexistent/dir"}}, "interstitial.templates_dir"),
        ({"connect": {"marker_ttl": "soon"}}, "connect.marker_ttl"),
    ],
)
def test_bad_config_names_the_key_and_never_the_secret(changes, key):
    with pytest.raises(ConfigError) as info:
        parse_config(cfg(**changes))
    message = str(info.value)
    assert message.startswith(f"satosa-orcid config: {key}:")
    assert "\n" not in message
    assert SECRET not in message and KEY not in message


def test_missing_config_block():
    with pytest.raises(ConfigError, match="orcid.client_id"):
        parse_config(None)


def test_repr_redacts_secrets():
    c = parse_config(cfg())
    assert SECRET not in repr(c) and KEY not in repr(c)
    assert SECRET not in repr(c.orcid) and KEY not in repr(c.store)
