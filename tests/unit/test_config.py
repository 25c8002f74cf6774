from __future__ import annotations

import copy

import pytest
from cryptography.fernet import Fernet

from satosa_orcid_plugin.config import Organization, parse_affiliations, parse_config
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
    assert parse_config(cfg(orcid__environment="sandbox")).orcid_requesters == ()  # ORCID publishes no sandbox SP id
    emu = parse_config(cfg(orcid__environment="emulator", orcid__base_url="http://127.0.0.1:8090/", orcid__client_id="demo"))
    assert emu.orcid.base_url == "http://127.0.0.1:8090"
    assert emu.orcid.issuer == "http://127.0.0.1:8090"


def test_string_values_from_env_tags_are_coerced():
    c = parse_config(cfg(orcid__timeouts={"connect": "1.5", "read": "4"}, orcid__prompt_login="true",
                         decline={"not_now": "7d"}, orcid__scopes="openid /read-limited /activities/update"))
    assert c.orcid.timeouts.as_tuple() == (1.5, 4.0)
    assert c.orcid.prompt_login is True
    assert c.decline.not_now_seconds == 7 * 86400
    assert c.orcid.scopes == ("openid", "/read-limited", "/activities/update")


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
        ({"store": {"database_url": "sqlite:///x.db", "token_keys": [KEY], "timeouts": {"login": "soon"}}},
         "store.timeouts.login"),
        ({"store": {"database_url": "sqlite:///x.db", "token_keys": [KEY], "timeouts": {"connect": 1}}},
         "store.timeouts.connect"),
        ({"store": {"database_url": "sqlite:///x.db", "token_keys": [KEY], "timeouts": {"read": 1}}},
         "store.timeouts.read"),
        ({"connect": {"limits": {"client_rate": 0}}}, "connect.limits.client_rate"),
        ({"connect": {"limits": {"total_burst": "lots"}}}, "connect.limits.total_burst"),
        ({"connect": {"limits": {"trusted_proxies": True}}}, "connect.limits.trusted_proxies"),
        ({"connect": {"limits": {"per_ip": 3}}}, "connect.limits.per_ip"),
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


# --- affiliations: ----------------------------------------------------------------------
ORG = {"name": "Boston University", "city": "Boston", "region": "Massachusetts", "country": "US",
       "disambiguated_id": "https://ror.org/05qwgg493", "disambiguation_source": "ROR"}


def test_parse_config_parses_the_affiliations_block_itself():
    """``PluginConfig.affiliations`` is what ``parse_affiliations`` makes of the same YAML,
    None included, so no caller needs to parse the block again."""
    raw = cfg(affiliations={"organization": dict(ORG), "department_attribute": "ou"})
    assert parse_config(raw).affiliations == parse_affiliations(raw["affiliations"])
    assert parse_config(raw).affiliations.department_attribute == "ou"
    assert parse_config(cfg()).affiliations is None
    assert parse_config(cfg(affiliations={"enabled": False, "organization": dict(ORG)})).affiliations is None
    with pytest.raises(ConfigError) as info:
        parse_config(cfg(affiliations={"organization": {**ORG, "country": "XX"}}))
    assert info.value.key == "affiliations.organization.country"


def test_minimal_config_takes_the_documented_defaults():
    s = parse_affiliations({"organization": {"name": "Boston University", "city": "Boston", "country": "us",
                                             "disambiguated_id": "05qwgg493"}})
    assert s.organization == Organization("Boston University", "Boston", "US", "https://ror.org/05qwgg493", "ROR", None)
    assert dict(s.kinds) == {"faculty": "employment", "staff": "employment", "employee": "employment",
                             "student": "education"}
    assert s.affiliation_attributes == ("edupersonaffiliation", "edupersonscopedaffiliation")
    assert s.on_leave == "end_date"
    assert s.external_id_type == "other-id"
    assert s.sync.rate_per_second <= 24 and s.sync.burst <= 40


def test_absent_or_disabled_means_no_affiliations():
    assert parse_affiliations(None) is None
    assert parse_affiliations({"enabled": False}) is None


@pytest.mark.parametrize(("change", "key", "problem"), [
    ({"organization": {**ORG, "name": ""}}, "affiliations.organization.name", "is required"),
    ({"organization": {**ORG, "city": None}}, "affiliations.organization.city", "is required"),
    ({"organization": {**ORG, "country": "USA"}}, "affiliations.organization.country", "ISO 3166-1"),
    ({"organization": {**ORG, "country": "XX"}}, "affiliations.organization.country", "ISO 3166-1"),
    ({"organization": {**ORG, "disambiguated_id": "https://ror.org/05qwgg494"}},
     "affiliations.organization.disambiguated_id", "checksum"),
    ({"organization": {**ORG, "disambiguation_source": "WIKIDATA"}},
     "affiliations.organization.disambiguation_source", "ROR recommended"),
    ({"organization": {**ORG, "disambiguation_source": "GRID", "disambiguated_id": "05qwgg493"}},
     "affiliations.organization.disambiguated_id", "not a GRID identifier"),
    ({"organization": {**ORG, "colour": "crimson"}}, "affiliations.organization.colour", "unknown key"),
    ({"kinds": {"faculty": "job"}}, "affiliations.kinds.faculty", "employment, education or none"),
    ({"kinds": []}, "affiliations.kinds", "must map"),
    ({"on_leave": "forget"}, "affiliations.on_leave", "end_date, delete"),
    ({"sync": {"rate_per_second": 30}}, "affiliations.sync.rate_per_second", "ORCID's limit"),
    ({"sync": {"burst": 41}}, "affiliations.sync.burst", "ORCID's burst"),
    ({"sync": {"backoff_base": 10, "backoff_max": 5}}, "affiliations.sync.backoff_max", "backoff_base"),
    ({"external_id_type": "Not A Type!"}, "affiliations.external_id_type", "identifier type"),
    ({"department": "ou"}, "affiliations.department", "unknown key"),
])
def test_config_errors_name_the_key_and_never_echo_the_value(change, key, problem):
    raw = {"organization": dict(ORG)}
    raw.update(change)
    with pytest.raises(ConfigError) as info:
        parse_affiliations(raw)
    assert info.value.key == key
    assert problem in info.value.problem
    assert "05qwgg494" not in str(info.value) and "crimson" not in str(info.value)


def test_missing_organization_is_reported():
    with pytest.raises(ConfigError) as info:
        parse_affiliations({"department_attribute": "ou"})
    assert info.value.key == "affiliations.organization.name"


def test_other_disambiguation_sources_are_normalised_as_orcid_stores_them():
    fundref = parse_affiliations({"organization": {**ORG, "disambiguation_source": "fundref",
                                                   "disambiguated_id": "10.13039/100000001"}})
    assert fundref.organization.disambiguated_id == "http://dx.doi.org/10.13039/100000001"
    assert fundref.organization.disambiguation_source == "FUNDREF"
    ringgold = parse_affiliations({"organization": {**ORG, "disambiguation_source": "RINGGOLD", "disambiguated_id": 1846}})
    assert ringgold.organization.disambiguated_id == "1846"


def test_the_proxy_waits_its_login_budget_for_a_busy_database_and_the_cli_its_background_one(tmp_path):
    """SQLite's busy timeout (how long a writer waits for another) follows store.timeouts."""
    from satosa_orcid_plugin.wiring import build_store

    settings = parse_config(cfg(store={"database_url": f"sqlite:///{tmp_path / 'links.db'}", "token_keys": [KEY],
                                       "timeouts": {"login": 1.5, "background": 45}})).store
    for login, expected in ((True, 1500), (False, 45000)):
        store = build_store(settings, login=login)
        try:
            with store.db.engine.connect() as connection:
                assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == expected
        finally:
            store.db.dispose()


def test_connect_limits_default_to_what_real_users_need_and_stay_below_orcids_quota():
    limits = parse_config(cfg()).connect.limits
    assert limits.trusted_proxies == 0  # X-Forwarded-For is the client's own writing unless configured
    assert limits.client_burst >= 10 and limits.total_rate * 2 < 24  # two token calls per connect; ORCID: 24/s
    custom = parse_config(cfg(connect={"limits": {"client_rate": "0.5", "client_burst": 3, "trusted_proxies": 1}}))
    assert (custom.connect.limits.client_rate, custom.connect.limits.client_burst) == (0.5, 3)
    assert custom.connect.limits.trusted_proxies == 1


def test_oidc_claim_type_is_a_string_unless_configured_as_an_array():
    assert parse_config(cfg()).oidc_claim_type == "string"
    assert parse_config(cfg(oidc_claim_type="array")).oidc_claim_type == "array"
    with pytest.raises(ConfigError) as e:
        parse_config(cfg(oidc_claim_type="list"))
    assert e.value.key == "oidc_claim_type"


def test_calls_to_orcid_ignore_the_environment_and_take_a_proxy_only_from_config(monkeypatch):
    from satosa_orcid_plugin.orcid_client import OrcidClient

    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy.invalid:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    plain = OrcidClient(parse_config(cfg()).orcid)
    assert plain.session.trust_env is False and plain.session.proxies == {}
    assert plain.session.merge_environment_settings("https://orcid.org/oauth/token", {}, None, None, None)["proxies"] == {}

    proxied = parse_config(cfg(orcid__proxy="http://user:pw@proxy.example.org:3128", orcid__ca_bundle="/etc/ca.pem"))
    session = OrcidClient(proxied.orcid).session
    assert session.proxies == {"http": "http://user:pw@proxy.example.org:3128",
                               "https": "http://user:pw@proxy.example.org:3128"}
    assert session.verify == "/etc/ca.pem"
    assert "pw@" not in repr(proxied) and "pw@" not in repr(proxied.orcid)


def test_a_proxy_that_is_not_a_url_names_the_key():
    with pytest.raises(ConfigError, match=r"orcid\.proxy") as caught:
        parse_config(cfg(orcid__proxy="proxy.example.org:3128"))
    assert "proxy.example.org" not in str(caught.value)
