"""python3-saml (OneLogin's toolkit, on python-xmlsec) as a strict SP of the proxy.

The SP sends a signed AuthnRequest (HTTP-Redirect) built from the proxy's published IdP
metadata, the browser walks the login (the hop, then the fast path), and python3-saml, in
``strict`` mode, accepts the proxy's response only if the Response and the Assertion are
signed by the proxy's metadata key with SHA-256, the Audience is its entity ID, the
Destination its ACS URL and InResponseTo the ID of the request it sent. The attribute must
arrive as eduPerson defines it: Name ``urn:oid:1.3.6.1.4.1.5923.1.1.1.16``, NameFormat
``uri``, FriendlyName ``eduPersonOrcid``, one value, the iD as an ``https://orcid.org/`` URI.
"""
from __future__ import annotations

import copy
from urllib.parse import urlsplit

import pytest
from interopkit import (
    ACCOUNTS, ORCID_OID, PERSISTENT, REDIRECT_BINDING, URI_FORMAT, require_module, saml_post_to, saml_response_for,
    walk,
)

pytestmark = [pytest.mark.e2e]

SAML_NS = {"saml": "urn:oasis:names:tc:SAML:2.0:assertion"}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


@pytest.fixture(scope="module")
def settings(interop):
    require_module("onelogin.saml2", "python3-saml")
    from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser

    idp = OneLogin_Saml2_IdPMetadataParser.parse(interop.layout.proxy_frontend_metadata.read_text(),
                                                 required_sso_binding=REDIRECT_BINDING)
    settings = OneLogin_Saml2_IdPMetadataParser.merge_settings(interop.python3_saml.sp_settings(), idp)
    # the proxy's metadata does not ask for signed requests (WantAuthnRequestsSigned), which
    # the merge copies; this SP signs them all the same, as its metadata says
    settings["security"]["authnRequestsSigned"] = True
    assert settings["idp"]["entityId"] == interop.layout.proxy_idp_entity_id
    return settings


def request_data(acs_url: str, post: dict | None = None) -> dict:
    """What python3-saml reads from the web framework: the URL the response was posted to."""
    parts = urlsplit(acs_url)
    return {"https": "on" if parts.scheme == "https" else "off", "http_host": parts.netloc,
            "server_port": str(parts.port), "script_name": parts.path, "get_data": {}, "post_data": post or {}}


def login(interop, settings):
    """A login started by python3-saml; (the request's ID, the posted fields, the browser)."""
    from onelogin.saml2.auth import OneLogin_Saml2_Auth

    acs = interop.python3_saml.acs_url
    auth = OneLogin_Saml2_Auth(request_data(acs), settings)
    url = auth.login(return_to="/after-login")
    request_id = auth.get_last_request_id()
    assert "Signature=" in url and "SigAlg=" in url  # authnRequestsSigned
    browser = interop.browser()
    response = walk(interop.layout, browser, browser.get(url), saml_post_to(acs), "python3-saml")
    browser.session.close()  # no idle keep-alive connection holds up the proxy's shutdown
    return request_id, saml_response_for(response, acs), browser


def process(settings, acs_url: str, fields: dict, request_id: str):
    from onelogin.saml2.auth import OneLogin_Saml2_Auth

    auth = OneLogin_Saml2_Auth(request_data(acs_url, fields), settings)
    auth.process_response(request_id=request_id)
    return auth


def orcid_attribute(auth):
    from lxml import etree

    assertion = etree.fromstring(auth.get_last_response_xml().encode())
    return assertion.findall(".//saml:Attribute[@Name='%s']" % ORCID_OID, SAML_NS)


def test_strict_python3_saml_receives_eduperson_orcid_on_the_hop_and_the_fast_path(interop, settings):
    user, orcid = ACCOUNTS["python3-saml"]
    expected = f"https://orcid.org/{orcid}"
    acs = interop.python3_saml.acs_url
    for path in ("hop", "fast path"):
        request_id, fields, browser = login(interop, settings)
        went_to_orcid = any(interop.layout.emulator_url in line for line in browser.history)
        assert went_to_orcid is (path == "hop"), (path, browser.history)
        assert fields.get("RelayState") == "/after-login"

        auth = process(settings, acs, fields, request_id)
        assert auth.get_errors() == [], f"{path}: {auth.get_last_error_reason()}"
        assert auth.is_authenticated()
        assert auth.get_last_assertion_id()
        assert auth.get_nameid_format() == PERSISTENT
        assert auth.get_attribute(ORCID_OID) == [expected]
        assert auth.get_friendlyname_attributes()["eduPersonOrcid"] == [expected]
        assert auth.get_friendlyname_attributes()["eduPersonPrincipalName"] == [f"{user}@demo.example.org"]

        (attribute,) = orcid_attribute(auth)
        assert attribute.get("NameFormat") == URI_FORMAT
        assert attribute.get("FriendlyName") == "eduPersonOrcid"
        values = attribute.findall("saml:AttributeValue", SAML_NS)
        assert [v.text for v in values] == [expected]
        assert values[0].get(XSI_TYPE, "").endswith(":string")


def test_python3_saml_rejects_the_response_for_another_request_audience_destination_or_key(interop, settings):
    """The checks the first test relies on are real: the same (valid) response fails each one."""
    acs = interop.python3_saml.acs_url
    request_id, fields, _ = login(interop, settings)  # fast path (or a hop, when run alone)
    assert process(settings, acs, fields, request_id).get_errors() == []

    def errors(settings_=settings, acs_=acs, request_id_=request_id):
        auth = process(settings_, acs_, fields, request_id_)
        return auth.get_last_error_reason() or ""

    assert "InResponseTo" in errors(request_id_="ONELOGIN_" + "0" * 40)
    other_audience = copy.deepcopy(settings)
    other_audience["sp"]["entityId"] = interop.python3_saml.entity_id + "/other"
    assert "audience" in errors(settings_=other_audience).lower()
    # python3-saml compares the Destination with the URL the response was posted to
    assert "received at" in errors(acs_=acs.replace("/saml/acs", "/saml/other-acs"))
    other_key = copy.deepcopy(settings)
    other_key["idp"]["x509cert"] = interop.python3_saml.keys.cert_path.read_text()
    assert "signature" in errors(settings_=other_key).lower()
