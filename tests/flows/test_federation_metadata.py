"""The shipped proxy_conf/ as a federation registers it: the SAML IdP metadata (as the proxy
serves it, as ``satosa-saml-metadata`` writes it, and as the demo uses it) and per-SP
persistent NameIDs.

What a federation operator (or a Shibboleth SP) checks: shibmd:Scope, mdui:UIInfo, the
organisation and the contacts including the REFEDS security contact, entity categories, the
errorURL, a valid signature by the frontend's key (verified with ``xmlsec1``, as pysaml2 and
Shibboleth do), a ``validUntil`` in the future and the media type.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest

from flowkit import html_form_fields, idp_respond_via, start_login_via
from satosa_orcid_plugin.devstack.demo_sp import DemoSP
from satosa_orcid_plugin.devstack.layout import DEMO_METADATA_ENV

NS = {
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
    "shibmd": "urn:mace:shibboleth:metadata:1.0",
    "mdui": "urn:oasis:names:tc:SAML:metadata:ui",
    "mdattr": "urn:oasis:names:tc:SAML:metadata:attribute",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
}
REMD_CONTACT_TYPE = "{http://refeds.org/metadata}contactType"
REFEDS_SECURITY = "http://refeds.org/metadata/contactType/security"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"
XMLSEC1 = shutil.which("xmlsec1")


def verify_signature(xml: str, cert: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """``xmlsec1 --verify`` of the EntityDescriptor's enveloped signature with ``cert`` only."""
    doc = tmp_path / f"metadata-{abs(hash(xml))}.xml"
    doc.write_text(xml)
    return subprocess.run(
        [XMLSEC1, "--verify", "--pubkey-cert-pem", str(cert),
         "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor", str(doc)],
        capture_output=True, text=True, timeout=60)


def assert_federation_metadata(xml: str, layout, tmp_path: Path, *, valid_hours: float) -> None:
    root = ElementTree.fromstring(xml.encode())
    assert root.tag == f"{{{NS['md']}}}EntityDescriptor"
    assert root.get("entityID") == layout.proxy_idp_entity_id
    env = DEMO_METADATA_ENV

    # validUntil: in the future, and not further than promised
    valid_until = datetime.strptime(root.get("validUntil"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    now = datetime.now(timezone.utc)
    assert now < valid_until <= now + timedelta(hours=valid_hours, minutes=5)

    # signed by the frontend key, RSA-SHA256, and the signature covers the document
    signature = root.find("ds:Signature", NS)
    assert signature is not None
    assert signature.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm") == RSA_SHA256
    assert signature.find("ds:SignedInfo/ds:Reference", NS).get("URI") == f"#{root.get('ID')}"
    ok = verify_signature(xml, layout.keys.frontend.cert_path, tmp_path)
    assert ok.returncode == 0, ok.stderr
    tampered = verify_signature(xml.replace(env["SATOSA_SCOPE"], "evil.example.net"), layout.keys.frontend.cert_path,
                                tmp_path)
    assert tampered.returncode != 0
    wrong_key = verify_signature(xml, layout.keys.backend.cert_path, tmp_path)
    assert wrong_key.returncode != 0

    idp = root.find("md:IDPSSODescriptor", NS)
    assert idp.get("errorURL") == env["SATOSA_ERROR_URL"]
    # shibmd:Scope: the scope of the demo IdP's ePPN and scoped affiliation
    [scope] = idp.findall("md:Extensions/shibmd:Scope", NS)
    assert scope.text == env["SATOSA_SCOPE"] and scope.get("regexp") == "false"
    # mdui:UIInfo
    ui = idp.find("md:Extensions/mdui:UIInfo", NS)
    assert ui.find("mdui:DisplayName", NS).text == env["SATOSA_MDUI_DISPLAY_NAME"]
    assert ui.find("mdui:InformationURL", NS).text == env["SATOSA_MDUI_INFORMATION_URL"]
    assert ui.find("mdui:PrivacyStatementURL", NS).text == env["SATOSA_MDUI_PRIVACY_STATEMENT_URL"]
    # localized mdui elements need xml:lang (Shibboleth SP refuses the whole metadata without it)
    for name in ("DisplayName", "InformationURL", "PrivacyStatementURL"):
        assert ui.find(f"mdui:{name}", NS).get("{http://www.w3.org/XML/1998/namespace}lang") == "en", name
    logo = ui.find("mdui:Logo", NS)
    assert logo.text == env["SATOSA_MDUI_LOGO_URL"]
    assert (logo.get("width"), logo.get("height")) == (env["SATOSA_MDUI_LOGO_WIDTH"], env["SATOSA_MDUI_LOGO_HEIGHT"])

    # organisation and contacts, from the environment
    org = root.find("md:Organization", NS)
    assert org.find("md:OrganizationName", NS).text == env["SATOSA_ORG_NAME"]
    assert org.find("md:OrganizationDisplayName", NS).text == env["SATOSA_ORG_DISPLAY_NAME"]
    assert org.find("md:OrganizationURL", NS).text == env["SATOSA_ORG_URL"]
    contacts = {}
    for person in root.findall("md:ContactPerson", NS):
        kind = person.get(REMD_CONTACT_TYPE) or person.get("contactType")
        contacts[kind] = ([e.text for e in person.findall("md:EmailAddress", NS)], person.get("contactType"))
    assert contacts == {
        "technical": ([f"mailto:{env['SATOSA_CONTACT_TECHNICAL']}"], "technical"),
        "support": ([f"mailto:{env['SATOSA_CONTACT_SUPPORT']}"], "support"),
        REFEDS_SECURITY: ([f"mailto:{env['SATOSA_CONTACT_SECURITY']}"], "other"),
    }
    assert "github.com" not in xml

    # entity categories: R&S support and SIRTFI
    attrs = {a.get("Name"): [v.text for v in a.findall("saml:AttributeValue", NS)]
             for a in root.findall("md:Extensions/mdattr:EntityAttributes/saml:Attribute", NS)}
    assert attrs == {
        "http://macedir.org/entity-category-support": ["http://refeds.org/category/research-and-scholarship"],
        "urn:oasis:names:tc:SAML:attribute:assurance-certification": ["https://refeds.org/sirtfi"],
    }


pytestmark = pytest.mark.skipif(XMLSEC1 is None, reason="xmlsec1 is installed by `make setup`")


@pytest.mark.parametrize("micro_services", [[]], indirect=True, ids=["no-microservices"])
def test_the_proxy_serves_signed_federation_metadata(satosa_app, demo_layout, tmp_path):
    response = satosa_app.get(urlsplit(demo_layout.proxy_idp_entity_id).path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/samlmetadata+xml"
    xml = response.get_data(as_text=True)
    assert_federation_metadata(xml, demo_layout, tmp_path, valid_hours=96)
    assert ElementTree.fromstring(xml.encode()).get("cacheDuration") == "PT6H"


def test_satosa_saml_metadata_writes_the_same_metadata(demo_layout, tmp_path):
    """The documented command: ``satosa-saml-metadata proxy_conf.yaml KEY CERT --valid 168``."""
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, **demo_layout.env()}
    command = Path(sys.executable).parent / "satosa-saml-metadata"
    result = subprocess.run(
        [str(command), "proxy_conf.yaml", str(demo_layout.keys.frontend.key_path),
         str(demo_layout.keys.frontend.cert_path), "--valid", "168", "--dir", str(out)],
        cwd=demo_layout.proxy_conf_dir, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert_federation_metadata((out / "frontend.xml").read_text(), demo_layout, tmp_path, valid_hours=168)
    # the demo's copy (what its SPs load) is made the same way
    assert_federation_metadata(demo_layout.proxy_frontend_metadata.read_text(), demo_layout, tmp_path,
                               valid_hours=168)


def test_optional_metadata_is_left_out_when_its_variable_is_empty(demo_layout, monkeypatch, tmp_path):
    from satosa.metadata_creation.saml_metadata import create_entity_descriptors
    from satosa.satosa_config import SATOSAConfig

    from satosa_orcid_plugin.ops.checks import check_proxy_config

    env = {**demo_layout.env(), "SATOSA_ERROR_URL": "", "SATOSA_ENTITY_CATEGORY_SUPPORT": "",
           "SATOSA_ASSURANCE_CERTIFICATION": "", "SATOSA_CONTACT_SECURITY": "", "SATOSA_MDUI_LOGO_URL": "",
           "SATOSA_SCOPE": "uni.example.org lab.uni.example.org"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(demo_layout.proxy_conf_dir)
    config = SATOSAConfig("proxy_conf.yaml")
    config["MICRO_SERVICES"] = []
    frontends, _ = create_entity_descriptors(config)
    xml = str(frontends["Saml2IDP"][0])
    root = ElementTree.fromstring(xml.encode())
    idp = root.find("md:IDPSSODescriptor", NS)
    assert idp.get("errorURL") is None
    assert [s.text for s in idp.findall("md:Extensions/shibmd:Scope", NS)] == ["uni.example.org", "lab.uni.example.org"]
    assert idp.find("md:Extensions/mdui:UIInfo/mdui:Logo", NS) is None
    assert root.find("md:Extensions/mdattr:EntityAttributes", NS) is None
    assert sorted(p.get("contactType") for p in root.findall("md:ContactPerson", NS)) == ["support", "technical"]

    # check-config: values still at their examples are named; an unset scope too
    problems, warnings = check_proxy_config(demo_layout.proxy_conf_dir / "proxy_conf.yaml")
    assert not problems
    assert any("organization.url: still the example value 'https://www.example.org/'" in w for w in warnings)
    assert any("email_address (technical): still the example value 'mailto:idm@example.org'" in w for w in warnings)
    monkeypatch.setenv("SATOSA_SCOPE", "")
    for key in ("SATOSA_ORG_URL", "SATOSA_MDUI_INFORMATION_URL", "SATOSA_MDUI_PRIVACY_STATEMENT_URL"):
        monkeypatch.setenv(key, "https://www.uni-real.ac.uk/")
    for key in ("SATOSA_ORG_NAME", "SATOSA_ORG_DISPLAY_NAME", "SATOSA_MDUI_DISPLAY_NAME"):
        monkeypatch.setenv(key, "University of Realshire")
    for key in ("SATOSA_CONTACT_TECHNICAL", "SATOSA_CONTACT_SUPPORT"):
        monkeypatch.setenv(key, "idm@uni-real.ac.uk")
    problems, warnings = check_proxy_config(demo_layout.proxy_conf_dir / "proxy_conf.yaml")
    metadata = [w for w in warnings if w.startswith("FRONTEND_MODULES[Saml2IDP].config.idp_config")]
    assert metadata == ["FRONTEND_MODULES[Saml2IDP].config.idp_config.service.idp.scope: no shibmd:Scope "
                        "(SATOSA_SCOPE); Shibboleth SPs drop eduPersonPrincipalName and eduPersonScopedAffiliation "
                        "without it"]


# --- per-SP persistent NameIDs ----------------------------------------------------------
def _proxy(monkeypatch, demo_layout, keep: list[str]):
    """A fresh proxy instance from proxy_conf/ (a new SATOSAConfig and app: a restart)."""
    from satosa.proxy_server import make_app
    from satosa.satosa_config import SATOSAConfig
    from werkzeug.test import Client

    monkeypatch.chdir(demo_layout.proxy_conf_dir)
    config = SATOSAConfig("proxy_conf.yaml")
    config["MICRO_SERVICES"] = [m for m in config["MICRO_SERVICES"] if m["name"] in keep]
    config["LOGGING"] = {"version": 1, "disable_existing_loggers": False}
    return Client(make_app(config))


def _login(app, sp: DemoSP, idp, user: str = "alice"):
    request = start_login_via(app, sp)
    response = idp_respond_via(app, idp, request, user)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    _, fields = html_form_fields(response.get_data(as_text=True))
    return sp.parse_response(fields["SAMLResponse"], {request.sp_request_id: "/"})


def test_each_sp_gets_its_own_stable_persistent_nameid(proxy_env, demo_layout, demo_sp, demo_idp, monkeypatch):
    other_sp = DemoSP(config=demo_layout.emulator_sp_saml_config(), idp_entity_id=demo_layout.proxy_idp_entity_id)
    assert other_sp.entity_id != demo_sp.entity_id

    first = _proxy(monkeypatch, demo_layout, ["pairwise_nameid"])
    a1 = _login(first, demo_sp, demo_idp)
    b1 = _login(first, other_sp, demo_idp)
    assert a1.name_id_format == b1.name_id_format == PERSISTENT
    assert a1.name_id and b1.name_id and a1.name_id != b1.name_id
    assert _login(first, demo_sp, demo_idp, "bob").name_id not in (a1.name_id, b1.name_id)

    # another instance (or the same after a restart) with the same salt: the same values
    second = _proxy(monkeypatch, demo_layout, ["pairwise_nameid"])
    assert _login(second, demo_sp, demo_idp).name_id == a1.name_id
    assert _login(second, other_sp, demo_idp).name_id == b1.name_id

    # without the micro-service the institution's own NameID reaches the SP: not what it got
    passthrough = _proxy(monkeypatch, demo_layout, [])
    assert _login(passthrough, demo_sp, demo_idp).name_id not in (a1.name_id, b1.name_id)

    # an SP listed under passthrough_requesters keeps the institution's NameID
    from satosa.proxy_server import make_app
    from satosa.satosa_config import SATOSAConfig
    from werkzeug.test import Client

    config = SATOSAConfig("proxy_conf.yaml")
    [pairwise] = [m for m in config["MICRO_SERVICES"] if m["name"] == "pairwise_nameid"]
    pairwise["config"]["passthrough_requesters"] = [demo_sp.entity_id]
    config["MICRO_SERVICES"] = [pairwise]
    kept = Client(make_app(config))
    assert _login(kept, demo_sp, demo_idp).name_id == _login(passthrough, demo_sp, demo_idp).name_id
    assert _login(kept, other_sp, demo_idp).name_id == b1.name_id

    # a different salt (another deployment) gives other values
    monkeypatch.setenv("SATOSA_PAIRWISE_SALT", "another-deployment-salt-0123456789")
    assert _login(_proxy(monkeypatch, demo_layout, ["pairwise_nameid"]), demo_sp, demo_idp).name_id != a1.name_id


def test_pairwise_nameid_refuses_a_short_salt():
    from satosa_orcid_plugin.errors import ConfigError
    from satosa_orcid_plugin.ops.pairwise import PairwiseNameID

    with pytest.raises(ConfigError) as info:
        PairwiseNameID({"salt": "short"}, name="pairwise_nameid", base_url="https://proxy.example")
    assert "pairwise_nameid.salt" in str(info.value) and "short" not in str(info.value).split(":", 1)[1]


def test_every_variable_of_proxy_conf_is_documented_exemplified_and_set_by_the_demo(demo_layout):
    """``!ENV X`` anywhere in proxy_conf/: named in proxy_conf.yaml's header, given an example
    in docker/satosa.env.example, and set by the demo (the demo and the tests load the real files)."""
    import re

    conf_dir = demo_layout.proxy_conf_dir
    used = {m.group(1) for path in conf_dir.rglob("*.yaml") for line in path.read_text().splitlines()
            for m in re.finditer(r"!ENV(?:FILE)?\s+([A-Z][A-Z0-9_]+)", line.split(" #", 1)[0])
            if not line.lstrip().startswith("#")}
    assert {"SATOSA_SCOPE", "SATOSA_CONTACT_SECURITY", "SATOSA_PAIRWISE_SALT"} <= used
    header = (conf_dir / "proxy_conf.yaml").read_text().split("\nBASE:", 1)[0]
    documented = set(re.findall(r"^#   ([A-Z][A-Z0-9_]+)", header, re.M))
    documented |= {"SATOSA_FRONTEND_CERT", "SATOSA_BACKEND_CERT"}  # written as SATOSA_FRONTEND_KEY/_CERT
    example = (conf_dir.parent / "docker" / "satosa.env.example").read_text()
    assert sorted(used - documented) == []
    assert sorted(v for v in used - {"SATOSA_ORCID_DATABASE_URL"} if f"\n{v}=" not in example) == []
    assert sorted(used - set(demo_layout.env())) == []
