"""The proxy as foreign service software sees it: the demo deployment as real processes on
loopback (``DemoStack``: gunicorn proxy from the real ``proxy_conf/``, ORCID emulator, demo
IdP; no demo SP), plus what each foreign client needs registered *before* the proxy starts (the
SAML frontend loads the SPs' metadata once): python3-saml's and Shibboleth's SP metadata in
the trusted-SPs directory, an extra OIDC client for Authlib.

Foreign software that is missing (python3-saml, Authlib, Shibboleth's ``shibd``/``mod_shib``,
Apache) skips its tests naming what to install (``make interop-deps``), unless
``SATOSA_ORCID_REQUIRE_FOREIGN=1`` or ``SATOSA_ORCID_REQUIRE_SERVICES=1`` (``.ci/run``): then
they fail.

One login costs about a second on a loaded 2-core machine (a hop: interstitial, ORCID sign-in
and consent, callback); starting the processes costs most of the ~25-40 s of the session.
Each client gets its own demo user and ORCID account, so one test's link never decides
another's path: its first login hops, its second takes the fast path (the link store).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from satosa_orcid_plugin.devstack.demo import DemoStack, PageWalker
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts
from satosa_orcid_plugin.devstack.pki import KeyPair, write_key_pair
from satosa_orcid_plugin.devstack.scripted_browser import ScriptedBrowser, parse_forms

REQUIRE_VARS = ("SATOSA_ORCID_REQUIRE_FOREIGN", "SATOSA_ORCID_REQUIRE_SERVICES")
HOST = "127.0.0.1"

# eduPersonOrcid as the eduPerson schema (201602) names it on the SAML wire
ORCID_OID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.16"
EPPN_OID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.6"
SCOPED_AFFILIATION_OID = "urn:oid:1.3.6.1.4.1.5923.1.1.1.9"
URI_FORMAT = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri"
POST_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
REDIRECT_BINDING = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
PERSISTENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"

# demo IdP user -> ORCID emulator account: one pair per foreign client (no shared links)
ACCOUNTS = {
    "python3-saml": ("alice", "0000-0002-1825-0097"),
    "shibboleth": ("bob", "0009-0003-7578-3214"),
    "authlib": ("carol", "0000-0002-1694-233X"),
}
AUTHLIB_CLIENT_ID = "authlib-rp"


def unavailable(reason: str) -> None:
    """Skip, or fail when foreign clients are required (CI)."""
    required = [v for v in REQUIRE_VARS if os.environ.get(v) == "1"]
    if required:
        pytest.fail(f"{reason}; {required[0]}=1 forbids skipping the foreign-client tests (run `make interop-deps`)",
                    pytrace=False)
    pytest.skip(f"{reason} (run `make interop-deps`)")


def require_module(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        unavailable(f"{package} is not installed")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def walk(layout: DemoLayout, browser: ScriptedBrowser, response, done: Callable, client: str):
    """Act on every page like a person (IdP sign-in, the plugin's interstitial, ORCID's sign-in
    and consent, SAML HTTP-POST pages) until ``done(response)``; fail naming where it ended."""
    user, orcid_id = ACCOUNTS[client]
    walker = PageWalker(layout, browser, user=user, orcid_id=orcid_id, log=lambda m: None)
    response = walker.walk(response, done)
    assert done(response), f"{client}: ended at {response.status_code} {response.url}: {response.text[:400]}"
    return response


def saml_post_to(acs_url: str) -> Callable:
    """``done`` for :func:`walk`: a page that HTTP-POSTs a SAMLResponse to ``acs_url``."""
    def done(r) -> bool:
        return any(f.action == acs_url and "SAMLResponse" in f.fields for f in parse_forms(r.text, r.url))
    return done


def saml_response_for(r, acs_url: str) -> dict[str, str]:
    form = next(f for f in parse_forms(r.text, r.url) if f.action == acs_url and "SAMLResponse" in f.fields)
    return dict(form.fields)


# --- python3-saml -------------------------------------------------------------------------
@dataclass(frozen=True)
class Python3SamlSP:
    base: str  # http://127.0.0.1:<port> (nothing listens: the test reads the HTTP-POST form)
    keys: KeyPair

    @property
    def entity_id(self) -> str:
        return f"{self.base}/saml/metadata"

    @property
    def acs_url(self) -> str:
        return f"{self.base}/saml/acs"

    def sp_settings(self) -> dict:
        """The SP half of python3-saml's settings: strict, signed requests, signed everything
        wanted back, SHA-256, and eduPersonOrcid requested in its metadata."""
        return {
            "strict": True,
            "debug": False,
            "sp": {
                "entityId": self.entity_id,
                "assertionConsumerService": {"url": self.acs_url, "binding": POST_BINDING},
                "NameIDFormat": PERSISTENT,
                "x509cert": self.keys.cert_path.read_text(),
                "privateKey": self.keys.key_path.read_text(),
                "attributeConsumingService": {
                    "serviceName": "python3-saml interop SP",
                    "requestedAttributes": [
                        {"name": ORCID_OID, "nameFormat": URI_FORMAT, "friendlyName": "eduPersonOrcid",
                         "isRequired": False},
                        {"name": EPPN_OID, "nameFormat": URI_FORMAT, "friendlyName": "eduPersonPrincipalName",
                         "isRequired": True},
                    ],
                },
            },
            "security": {
                "authnRequestsSigned": True,
                "wantMessagesSigned": True,
                "wantAssertionsSigned": True,
                "wantNameId": True,
                "wantAttributeStatement": True,
                "requestedAuthnContext": False,
                "rejectDeprecatedAlgorithm": True,
                "signatureAlgorithm": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
                "digestAlgorithm": "http://www.w3.org/2001/04/xmlenc#sha256",
            },
        }

    def metadata(self) -> str:
        from onelogin.saml2.settings import OneLogin_Saml2_Settings

        settings = OneLogin_Saml2_Settings(self.sp_settings(), sp_validation_only=True)
        xml = settings.get_sp_metadata()
        return xml.decode() if isinstance(xml, bytes) else xml


# --- Shibboleth SP ------------------------------------------------------------------------
@dataclass(frozen=True)
class ShibbolethSite:
    """Where the Shibboleth SP (Apache + mod_shib + shibd) of the tests lives and answers."""

    port: int
    keys: KeyPair

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def entity_id(self) -> str:
        return f"{self.base}/shibboleth"

    @property
    def acs_url(self) -> str:
        return f"{self.base}/Shibboleth.sso/SAML2/POST"

    def metadata(self) -> str:
        """The SP's metadata as an SP administrator registers it: signing/encryption key,
        the SAML2 HTTP-POST ACS, and eduPersonOrcid requested (docs/service-providers.md)."""
        cert = "".join(line for line in self.keys.cert_path.read_text().splitlines() if "CERTIFICATE" not in line)
        return f"""<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#"
    entityID="{self.entity_id}">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor>
      <ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>
    </md:KeyDescriptor>
    <md:NameIDFormat>{PERSISTENT}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{POST_BINDING}" Location="{self.acs_url}" index="1"/>
    <md:AttributeConsumingService index="1">
      <md:ServiceName xml:lang="en">Shibboleth interop SP</md:ServiceName>
      <md:RequestedAttribute FriendlyName="eduPersonOrcid" Name="{ORCID_OID}" NameFormat="{URI_FORMAT}"/>
      <md:RequestedAttribute FriendlyName="eduPersonPrincipalName" Name="{EPPN_OID}" NameFormat="{URI_FORMAT}"/>
      <md:RequestedAttribute FriendlyName="eduPersonScopedAffiliation" Name="{SCOPED_AFFILIATION_OID}"
          NameFormat="{URI_FORMAT}"/>
    </md:AttributeConsumingService>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"""


    def write_config(self, directory: Path, *, idp_metadata: Path, idp_entity_id: str, root: bool) -> dict[str, Path]:
        """Apache's and Shibboleth's configuration for this site under ``directory``: the
        stock ``attribute-map.xml`` with the one line docs/service-providers.md documents,
        the stock ``attribute-policy.xml`` (scope checks included), the proxy's metadata as a
        local file, a Session handler that shows attribute values, a CGI behind
        ``requireSession`` that prints what the service sees. Returns the files to start with."""
        d = directory
        stock_map = Path(SHIBBOLETH_ETC, "attribute-map.xml").read_text()
        assert "</Attributes>" in stock_map and ORCID_OID not in stock_map
        (d / "attribute-map.xml").write_text(stock_map.replace("</Attributes>", f"    {ATTRIBUTE_MAP_LINE}\n</Attributes>"))
        for name in ("shibd.logger", "native.logger"):
            (d / name).write_text(CONSOLE_LOGGER)
        (d / "shibboleth2.xml").write_text(f"""<SPConfig xmlns="urn:mace:shibboleth:3.0:native:sp:config"
    xmlns:conf="urn:mace:shibboleth:3.0:native:sp:config" clockSkew="180">
  <OutOfProcess logger="{d}/shibd.logger"/>
  <InProcess logger="{d}/native.logger"/>
  <UnixListener address="{d}/shibd.sock"/>
  <StorageService type="Memory" id="mem" cleanupInterval="900"/>
  <SessionCache type="StorageService" StorageService="mem" cacheAssertions="false"
                cacheAllowance="900" inprocTimeout="900" cleanupInterval="900"/>
  <ReplayCache StorageService="mem"/>
  <ApplicationDefaults entityID="{self.entity_id}" REMOTE_USER="eppn">
    <!-- http on loopback only: handlerSSL="false" and cookies without Secure -->
    <Sessions lifetime="28800" timeout="3600" relayState="ss:mem" checkAddress="false"
              handlerSSL="false" cookieProps="; path=/; HttpOnly" redirectLimit="exact">
      <SSO entityID="{idp_entity_id}">SAML2</SSO>
      <Logout>Local</Logout>
      <Handler type="Status" Location="/Status" acl="127.0.0.1 ::1"/>
      <Handler type="Session" Location="/Session" showAttributeValues="true"/>
    </Sessions>
    <Errors supportContact="root@localhost" styleSheet="/shibboleth-sp/main.css"/>
    <MetadataProvider type="XML" validate="true" path="{idp_metadata}"/>
    <AttributeExtractor type="XML" validate="true" reloadChanges="false" path="{d}/attribute-map.xml"/>
    <AttributeFilter type="XML" validate="true" path="{SHIBBOLETH_ETC}/attribute-policy.xml"/>
    <CredentialResolver type="File" key="{self.keys.key_path}" certificate="{self.keys.cert_path}"/>
  </ApplicationDefaults>
  <SecurityPolicyProvider type="XML" validate="true" path="{SHIBBOLETH_ETC}/security-policy.xml"/>
  <ProtocolProvider type="XML" validate="true" reloadChanges="false" path="{SHIBBOLETH_ETC}/protocols.xml"/>
</SPConfig>
""")
        (d / "htdocs").mkdir(exist_ok=True)
        (d / "cgi").mkdir(exist_ok=True)
        cgi = d / "cgi" / "whoami"
        cgi.write_text(WHOAMI_CGI)
        cgi.chmod(0o755)
        user = "User www-data\nGroup www-data\n" if root else ""  # Apache refuses to serve as root
        (d / "httpd.conf").write_text(f"""ServerRoot "{d}"
ServerName {HOST}
Listen {HOST}:{self.port}
PidFile {d}/httpd.pid
DefaultRuntimeDir {d}
Mutex file:{d}
ErrorLog /dev/stderr
LogLevel warn
{user}LoadModule mpm_prefork_module {APACHE_MODULES}/mod_mpm_prefork.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
LoadModule authn_core_module {APACHE_MODULES}/mod_authn_core.so
LoadModule alias_module {APACHE_MODULES}/mod_alias.so
LoadModule cgi_module {APACHE_MODULES}/mod_cgi.so
LoadModule mod_shib {APACHE_MODULES}/mod_shib.so
StartServers 1
MinSpareServers 1
MaxSpareServers 3
MaxRequestWorkers 8
ShibConfig {d}/shibboleth2.xml
ShibCompatValidUser Off
DocumentRoot "{d}/htdocs"
<Location /Shibboleth.sso>
  SetHandler shib
  AuthType None
  Require all granted
</Location>
ScriptAlias /secure/ "{d}/cgi/"
<Location /secure>
  AuthType shibboleth
  ShibRequestSetting requireSession 1
  Require shib-session
</Location>
""")
        return {"httpd.conf": d / "httpd.conf", "shibboleth2.xml": d / "shibboleth2.xml"}


SHIBBOLETH_ETC = "/etc/shibboleth"
APACHE_MODULES = "/usr/lib/apache2/modules"
#: the line docs/service-providers.md tells Shibboleth SP administrators to add
ATTRIBUTE_MAP_LINE = f'<Attribute name="{ORCID_OID}" id="eduPersonOrcid"/>'
CONSOLE_LOGGER = """log4j.rootCategory=WARN, console
log4j.category.Shibboleth.AttributeExtractor=INFO
log4j.category.Shibboleth.AttributeFilter=INFO
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{%Y-%m-%d %H:%M:%S} %p %c %x: %m%n
"""
# What the protected application sees: mod_shib exports attributes as CGI environment variables
# (Apache turns "-" in their names into "_": Shib-Identity-Provider arrives as Shib_Identity_Provider).
WHOAMI_CGI = """#!/usr/bin/python3
import json, os
names = ("eduPersonOrcid", "eppn", "affiliation", "unscoped_affiliation", "persistent_id", "REMOTE_USER",
         "Shib_Identity_Provider", "AUTH_TYPE")
print("Content-Type: application/json")
print()
print(json.dumps({n: os.environ[n] for n in names if n in os.environ}))
"""


def stop_together(children) -> None:
    """SIGTERM every child's process group at once (each shuts down gracefully in parallel);
    ``ChildProcess.stop`` then only waits, and escalates for any that does not exit."""
    for child in children:
        if child.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.popen.pid, signal.SIGTERM)  # the group started for this child only


# --- the deployment -----------------------------------------------------------------------
@dataclass
class Interop:
    layout: DemoLayout
    python3_saml: Python3SamlSP
    shibboleth: ShibbolethSite
    authlib_client: dict

    @property
    def authlib_redirect_uri(self) -> str:
        return self.authlib_client["redirect_uris"][0]

    def browser(self, stop_at: str | None = None) -> ScriptedBrowser:
        if stop_at:
            return ScriptedBrowser(stop_at=stop_at, verify=str(self.layout.tls_cert), timeout=30)
        return ScriptedBrowser(verify=str(self.layout.tls_cert), timeout=30)


@pytest.fixture(scope="session")
def interop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Interop]:
    """The demo deployment on loopback with every foreign client registered."""
    root = tmp_path_factory.mktemp("interop")
    layout = DemoLayout(root / "deployment", DemoPorts.free())
    keys = root / "foreign-keys"
    p3 = Python3SamlSP(f"http://{HOST}:{free_port()}",
                       write_key_pair(keys, "python3-saml", "python3-saml interop SP"))
    shib = ShibbolethSite(free_port(), write_key_pair(keys, "shibboleth", "Shibboleth interop SP"))
    if importlib.util.find_spec("onelogin") is not None:
        (layout.trusted_sps_dir / "python3-saml.xml").write_text(p3.metadata())
    (layout.trusted_sps_dir / "shibboleth.xml").write_text(shib.metadata())

    # a second OIDC client: a public redirect_uri where nothing listens (the test reads the code)
    authlib_client = {
        "client_id": AUTHLIB_CLIENT_ID,
        "client_secret": "authlib-" + layout.secrets["oidc_client_secret"],
        "client_name": "Authlib interop RP",
        "redirect_uris": [f"http://{HOST}:{free_port()}/authlib/callback"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic",
    }
    clients = json.loads(layout.oidc_clients_path.read_text())
    clients[AUTHLIB_CLIENT_ID] = authlib_client
    layout.oidc_clients_path.write_text(json.dumps(clients, indent=2))

    stack = DemoStack(layout, log=lambda m: None)
    # the demo SP is nobody's service here: the foreign clients are the services
    stack.children = [c for c in stack.children if c.name != "sp"]
    try:
        stack.start()
        yield Interop(layout, p3, shib, authlib_client)
    finally:
        stop_together(stack.children)
        stack.stop()

