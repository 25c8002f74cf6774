"""Which user key a login may use (policy.check_user_key), and the IdP scopes it is checked
against as pysaml2 reads them from real metadata (ops.idp_metadata)."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from satosa_orcid_plugin.config import parse_config
from satosa_orcid_plugin.errors import ConfigError
from satosa_orcid_plugin.flow import log_token
from satosa_orcid_plugin.policy import Scope, check_user_key

IDP = "https://idp.uni-a.example/idp/shibboleth"
UNI_A = (Scope("uni-a.example"),)


def config(**changes):
    raw = {
        "orcid": {"client_id": "APP-0000000000000000", "client_secret": "s"},
        "store": {"database_url": "sqlite:///x.db", "token_keys": [Fernet.generate_key().decode()]},
        "user_key_attribute": "edupersonprincipalname",
        **changes,
    }
    return parse_config(raw)


def test_a_bare_off_in_yaml_turns_the_scope_check_off():
    import yaml

    assert config(**yaml.safe_load("scope_check: off")).scope_check == "off"


def test_defaults_bind_keys_to_the_issuer_and_enforce_scopes():
    c = config()
    assert (c.user_key_scope, c.scope_check, c.user_key_scoped, c.default_issuer) == ("issuer", "enforce", True, None)
    assert config(user_key_attribute="subject-id").user_key_scoped
    assert not config(user_key_attribute="uid").user_key_scoped


@pytest.mark.parametrize("changes, key", [
    ({"user_key_scope": "everyone"}, "user_key_scope"),
    ({"scope_check": "maybe"}, "scope_check"),
    ({"default_issuer": "not a uri"}, "default_issuer"),
])
def test_bad_values_name_their_key(changes, key):
    with pytest.raises(ConfigError) as caught:
        config(**changes)
    assert caught.value.key == key


def test_a_key_in_an_allowed_scope_is_bound_to_its_issuer():
    check = check_user_key(config(), "alice@uni-a.example", IDP, UNI_A)
    assert (check.user_key, check.issuer, check.problem) == ("alice@uni-a.example", IDP, None)


def test_scopes_compare_case_insensitively_and_regexps_match_whole_scopes():
    c = config()
    assert check_user_key(c, "alice@Uni-A.Example", IDP, UNI_A).problem is None
    subdomains = (Scope(r"^.+\.uni-a\.example$", regexp=True),)
    assert check_user_key(c, "a@physics.uni-a.example", IDP, subdomains).problem is None
    assert check_user_key(c, "a@physics.uni-a.example.evil.example", IDP, subdomains).problem == "scope_not_allowed"
    # no anchors in the metadata: still a full match, not a search
    loose = (Scope(r"uni-a\.example", regexp=True),)
    assert check_user_key(c, "a@evil-uni-a.example", IDP, loose).problem == "scope_not_allowed"
    # a literal scope is no pattern
    assert check_user_key(c, "a@uni-aXexample", IDP, (Scope("uni-a.example"),)).problem == "scope_not_allowed"


@pytest.mark.parametrize("key, scopes, problem", [
    ("alice@uni-b.example", UNI_A, "scope_not_allowed"),
    ("alice", UNI_A, "unscoped"),
    ("alice@", UNI_A, "unscoped"),
    ("@uni-a.example", UNI_A, "unscoped"),
    ("alice@uni-a.example", None, "scopes_unknown"),
    ("alice@uni-a.example", (), "scope_not_allowed"),  # an IdP whose metadata lists no scope
])
def test_enforce_drops_the_key_warn_keeps_it_off_skips_the_check(key, scopes, problem):
    enforced = check_user_key(config(), key, IDP, scopes)
    assert (enforced.user_key, enforced.issuer, enforced.problem) == (None, IDP, problem)
    warned = check_user_key(config(scope_check="warn"), key, IDP, scopes)
    assert (warned.user_key, warned.problem) == (key, problem)
    off = check_user_key(config(scope_check="off"), key, IDP, scopes)
    assert (off.user_key, off.problem) == (key, None)


def test_no_issuer_no_key_unless_keys_are_global():
    assert check_user_key(config(), "alice@uni-a.example", None, UNI_A).user_key is None
    check = check_user_key(config(user_key_scope="global"), "alice@uni-a.example", None, UNI_A)
    assert (check.user_key, check.issuer) == ("alice@uni-a.example", "")
    assert check_user_key(config(user_key_scope="global"), "alice@uni-a.example", IDP, UNI_A).issuer == ""


def test_unscoped_attributes_are_not_checked():
    check = check_user_key(config(user_key_attribute="uid"), "alice", IDP, None)
    assert (check.user_key, check.issuer, check.problem) == ("alice", IDP, None)


def test_log_token_keeps_identifiers_and_nothing_that_could_forge_a_line():
    assert log_token("https://idp.example/idp@x:1") == "https://idp.example/idp@x:1"
    assert log_token("a\r\nORCID iD linked") == "a??ORCID?iD?linked"
    assert log_token(None) == "-" and log_token("x" * 300).endswith("...")


METADATA = """<?xml version="1.0"?>
<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"
    xmlns:shibmd="urn:mace:shibboleth:metadata:1.0">
  <md:EntityDescriptor entityID="https://idp.uni-a.example/idp/shibboleth">
    <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
      <md:Extensions>
        <shibmd:Scope regexp="false">uni-a.example</shibmd:Scope>
        <shibmd:Scope regexp="true">^.+\\.uni-a\\.example$</shibmd:Scope>
      </md:Extensions>
      <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
          Location="https://idp.uni-a.example/sso"/>
    </md:IDPSSODescriptor>
  </md:EntityDescriptor>
  <md:EntityDescriptor entityID="https://idp.uni-b.example/idp">
    <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
      <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
          Location="https://idp.uni-b.example/sso"/>
    </md:IDPSSODescriptor>
  </md:EntityDescriptor>
</md:EntitiesDescriptor>
"""


@pytest.fixture
def metadata(tmp_path):
    from saml2.config import SPConfig
    from saml2.mdstore import MetadataStore

    path = tmp_path / "idps.xml"
    path.write_text(METADATA)
    store = MetadataStore(None, SPConfig())
    store.imp({"local": [str(path)]})
    return store


def test_scopes_come_from_the_metadata_of_the_backend_that_received_the_login(metadata):
    from satosa_orcid_plugin.ops import idp_metadata

    assert idp_metadata.asserting_scopes(IDP) is None  # outside a backend's response: unknown
    with idp_metadata.asserting(metadata):
        scopes = idp_metadata.asserting_scopes(IDP)
        assert set(scopes) == {Scope("uni-a.example"), Scope(r"^.+\.uni-a\.example$", regexp=True)}
        assert idp_metadata.asserting_scopes("https://idp.uni-b.example/idp") == ()
        assert idp_metadata.asserting_scopes("https://unknown.example/idp") is None
    assert check_user_key(config(), "a@chem.uni-a.example", IDP, scopes).problem is None


def test_single_idp_is_named_only_when_the_metadata_has_exactly_one(metadata, tmp_path):
    from saml2.config import SPConfig
    from saml2.mdstore import MetadataStore

    from satosa_orcid_plugin.ops import idp_metadata

    idp_metadata.register("https://proxy-two.example", "Saml2", metadata)
    assert idp_metadata.single_idp("https://proxy-two.example") is None and idp_metadata.known("https://proxy-two.example")
    one = tmp_path / "one.xml"
    one.write_text(METADATA.replace(METADATA[METADATA.index('  <md:EntityDescriptor entityID="https://idp.uni-b'):
                                             METADATA.index("</md:EntitiesDescriptor>")], ""))
    single = MetadataStore(None, SPConfig())
    single.imp({"local": [str(one)]})
    idp_metadata.register("https://proxy-one.example/", "Saml2", single)
    assert idp_metadata.single_idp("https://proxy-one.example") == IDP
    assert idp_metadata.single_idp("https://nobody.example") is None
