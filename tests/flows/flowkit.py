"""Fixtures for whole-flow tests: SATOSA's real WSGI app over the real ``proxy_conf/``.

The deployment is a :class:`DemoLayout` in ``tmp_path`` with free loopback ports; its
environment variables are applied with ``monkeypatch`` and the proxy is built exactly as
deployments build it: ``make_app(SATOSAConfig("proxy_conf.yaml"))`` with cwd ``proxy_conf/``.
The SP and the institutional IdP are in-process pysaml2 objects (the demo SP/IdP classes);
the ORCID emulator, when a test needs it, is served on loopback in a thread.

Fixtures
    demo_ports        DemoPorts of four free loopback ports
    demo_layout       DemoLayout(tmp_path / "deployment", demo_ports) (keys generated once per session)
    proxy_env         layout.env() applied to os.environ (monkeypatch); returns the dict
    micro_services    names of MICRO_SERVICES entries to keep (default: all); parametrize
                      indirectly, e.g. ``@pytest.mark.parametrize("micro_services", [[]], indirect=True)``
    satosa_config     SATOSAConfig("proxy_conf.yaml") loaded from proxy_conf/ (cwd), filtered
    satosa_app        werkzeug Client over make_app(satosa_config) (cookies kept per test)
    demo_sp           DemoSP(layout): .client is the pysaml2 Saml2Client
    demo_idp          DemoIdP(layout): .server is the pysaml2 Server
    orcid_emulator    the ORCID Emulator app, served at layout.emulator_url in a thread
    start_login       start_login(client, sp, relay_state="/protected") -> IdpRequest
    idp_respond       idp_respond(client, user, request=None) -> werkzeug TestResponse; request
                      defaults to the last start_login's, or is an IdpRequest or the proxy's
                      redirect URL to the IdP (e.g. after an OIDC authorization request)
    sp_receive        sp_receive(response, sp) -> ReleasedAttributes
    form_fields       form_fields(html) -> (action, {name: value}) of the first form
    pass_interstitial pass_interstitial(client, response, choice="connect") -> TestResponse: presses
                      a button of the plugin's interstitial page if ``response`` is one (for
                      "connect", a link: returns ORCID's authorize URL)
    orcid_consent     orcid_consent(authorize_url, action="Authorize access") -> callback URL
    follow_callback   follow_callback(client, url) -> TestResponse of the proxy (absolute URL ok)

``client`` is any werkzeug Client over the proxy (normally ``satosa_app``; tests that
change the config build their own). ``start_login`` sends the SP's AuthnRequest to the
proxy and returns the proxy's (signed, HTTP-Redirect) request to the IdP. ``idp_respond``
lets the IdP answer it for a demo user (alice, bob, carol) and POSTs the response to the
proxy's ACS, returning the proxy's answer: when the micro-service acts, its interstitial page
(``pass_interstitial``) or a 302 to ORCID; otherwise the HTML form that POSTs the SAML
response to the SP (read it with ``sp_receive``). The emulator's demo account is
0000-0002-1825-0097 (password orcid-demo).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

import pytest

from satosa_orcid_plugin.devstack.demo_idp import DemoIdP
from satosa_orcid_plugin.devstack.demo_sp import DemoSP, ReleasedAttributes
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

SAML2_BINDING_HTTP_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
SAML2_BINDING_HTTP_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"


@dataclass
class IdpRequest:
    """The proxy's AuthnRequest to the institutional IdP, as the browser would carry it."""

    url: str
    binding: str
    saml_request: str
    relay_state: str | None
    sp_request_id: str | None = None  # ID of the SP's AuthnRequest (for InResponseTo checks)
    sigalg: str | None = None  # HTTP-Redirect signature of the proxy's request
    signature: str | None = None


def path_and_query(url: str) -> str:
    """What the werkzeug Client needs of an absolute URL on the proxy."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def html_form_fields(page: str) -> tuple[str, dict[str, str]]:
    """``(action, {name: value})`` of the first form of ``page`` (e.g. a SAML HTTP-POST page)."""
    from bs4 import BeautifulSoup

    form = BeautifulSoup(page, "html.parser").find("form")
    if form is None:
        raise AssertionError(f"no <form> in page: {page[:500]!r}")
    fields = {i["name"]: i.get("value", "") for i in form.find_all("input") if i.get("name")}
    return form.get("action", ""), fields


# --- the deployment ---------------------------------------------------------------------
@pytest.fixture
def demo_ports() -> DemoPorts:
    return DemoPorts.free()


@pytest.fixture(scope="session")
def _demo_keys(tmp_path_factory) -> Path:
    """RSA keys generated once per test session and copied into each layout (they are slow)."""
    from satosa_orcid_plugin.devstack.pki import generate_demo_pki

    directory = tmp_path_factory.mktemp("demo-keys")
    generate_demo_pki(directory)
    return directory


@pytest.fixture
def demo_layout(tmp_path: Path, demo_ports: DemoPorts, _demo_keys: Path) -> DemoLayout:
    return DemoLayout(tmp_path / "deployment", demo_ports, keys_from=_demo_keys)


@pytest.fixture
def proxy_env(demo_layout: DemoLayout, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = demo_layout.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def micro_services(request) -> list[str] | None:
    """Names of the MICRO_SERVICES to keep; ``None`` keeps proxy_conf's list as is."""
    return getattr(request, "param", None)


@pytest.fixture
def satosa_config(proxy_env, demo_layout: DemoLayout, micro_services, monkeypatch: pytest.MonkeyPatch):
    from satosa.satosa_config import SATOSAConfig

    monkeypatch.chdir(demo_layout.proxy_conf_dir)
    config = SATOSAConfig("proxy_conf.yaml")
    if micro_services is not None:
        config["MICRO_SERVICES"] = [m for m in config["MICRO_SERVICES"] if m["name"] in micro_services]
    # proxy_conf's LOGGING sends everything to the real stdout; under pytest leave logging
    # to pytest (caplog) instead of replacing the root handlers.
    config["LOGGING"] = {"version": 1, "disable_existing_loggers": False}
    return config


@pytest.fixture
def satosa_app(satosa_config):
    from satosa.proxy_server import make_app
    from werkzeug.test import Client

    return Client(make_app(satosa_config))


@pytest.fixture
def demo_sp(demo_layout: DemoLayout) -> DemoSP:
    return DemoSP(demo_layout)


@pytest.fixture
def demo_idp(demo_layout: DemoLayout) -> DemoIdP:
    return DemoIdP(demo_layout)


@pytest.fixture
def orcid_emulator(demo_layout: DemoLayout):
    """The ORCID emulator on ``demo_layout.emulator_url``, registered with the demo client."""
    emulator = pytest.importorskip("satosa_orcid_plugin.devstack.emulator")
    app = emulator.Emulator(
        demo_layout.emulator_url,
        clients=[emulator.ClientRegistration(**c) for c in demo_layout.emulator_clients()],
    )
    server = emulator.serve_in_thread(app, demo_layout.host, port=demo_layout.ports.emulator)
    try:
        yield app
    finally:
        server.stop()


# --- moving a login through the proxy --------------------------------------------------
def idp_request_from_url(location: str, sp_request_id: str | None = None) -> IdpRequest:
    """The proxy's HTTP-Redirect AuthnRequest (a ``Location`` towards the IdP) as an IdpRequest."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert "SAMLRequest" in query, location
    return IdpRequest(
        url=location,
        binding=SAML2_BINDING_HTTP_REDIRECT,
        saml_request=query["SAMLRequest"],
        relay_state=query.get("RelayState"),
        sp_request_id=sp_request_id,
        sigalg=query.get("SigAlg"),
        signature=query.get("Signature"),
    )


def start_login_via(client, sp: DemoSP, *, relay_state: str = "/protected") -> IdpRequest:
    """SP -> proxy: send ``sp``'s AuthnRequest to the proxy; return the proxy's request to the IdP."""
    request_id, url = sp.authn_request(relay_state=relay_state)
    response = client.get(path_and_query(url))
    assert response.status_code in (302, 303), (response.status, response.get_data(as_text=True)[:500])
    return idp_request_from_url(response.headers["Location"], request_id)


def idp_respond_via(client, idp: DemoIdP, request: IdpRequest, user: str):
    """IdP -> proxy: ``idp`` answers ``request`` for ``user``; the browser POSTs it to the ACS."""
    destination, fields = idp.respond(request.saml_request, request.relay_state, request.binding, user,
                                      sigalg=request.sigalg, signature=request.signature)
    return client.post(urlsplit(destination).path, data=fields)


def sp_receive(response, sp: DemoSP) -> ReleasedAttributes:
    """Proxy -> SP: read the HTTP-POST form the proxy returned and let ``sp`` verify it."""
    assert response.status_code == 200, (response.status, response.get_data(as_text=True)[:500])
    action, fields = html_form_fields(response.get_data(as_text=True))
    if sp.layout is not None:
        assert action == sp.layout.sp_acs_url, action
    return sp.parse_response(fields["SAMLResponse"])


@pytest.fixture(name="form_fields")
def _form_fields_fixture() -> Callable[[str], tuple[str, dict[str, str]]]:
    """``form_fields(html) -> (action, {name: value})`` of the page's first form."""
    return html_form_fields


@pytest.fixture(name="sp_receive")
def _sp_receive_fixture() -> Callable[[Any, DemoSP], ReleasedAttributes]:
    return sp_receive


@pytest.fixture
def start_login(_login_memory) -> Callable[..., IdpRequest]:
    def start_login(client, sp: DemoSP, **kw) -> IdpRequest:
        request = start_login_via(client, sp, **kw)
        _login_memory["last"] = request
        return request

    return start_login


@pytest.fixture
def idp_respond(demo_idp: DemoIdP, _login_memory):
    def idp_respond(client, user: str, request: IdpRequest | str | None = None):
        if isinstance(request, str):  # the proxy's redirect to the IdP, e.g. from an OIDC login
            request = idp_request_from_url(request)
        request = request or _login_memory.get("last")
        assert request is not None, "call start_login(client, sp) first"
        return idp_respond_via(client, demo_idp, request, user)

    return idp_respond


@pytest.fixture
def _login_memory() -> dict[str, IdpRequest]:
    return {}


def orcid_consent_via(layout: DemoLayout, authorize_url: str, action: str = "Authorize access", **sign_in) -> str:
    """Walk the emulator's pages like a person; return where ORCID sends the browser back."""
    from satosa_orcid_plugin.devstack.demo import orcid_sign_in
    from satosa_orcid_plugin.devstack.scripted_browser import BrowserError, ScriptedBrowser, has_button

    browser = ScriptedBrowser(stay_within=layout.emulator_url, timeout=10)
    response = browser.get(authorize_url)
    for _ in range(5):
        if response.is_redirect:
            return response.headers["Location"]
        if has_button(response, action):
            response = browser.submit_on(response, button=action)
        elif has_button(response, "Sign in"):
            response = orcid_sign_in(browser, response, **sign_in)
        else:
            raise BrowserError(f"unexpected emulator page {response.status_code} at {response.url}")
    raise BrowserError(f"the emulator did not redirect back (history: {browser.history})")


@pytest.fixture
def orcid_consent(demo_layout: DemoLayout, orcid_emulator):
    """Walk the emulator's pages like a person and return where ORCID sends the browser back.

    ``orcid_consent(authorize_url, action="Authorize access" | "Deny access")`` signs in as
    the first demo account and presses ``action``; the returned URL (the proxy's callback)
    is not fetched, hand it to ``follow_callback``.
    """
    def orcid_consent(authorize_url: str, action: str = "Authorize access", **sign_in) -> str:
        return orcid_consent_via(demo_layout, authorize_url, action, **sign_in)

    return orcid_consent


def connect_link(page: str) -> str:
    """The interstitial's "Connect your ORCID iD": a link straight to ORCID's authorize URL
    (state and nonce made with the page), so following it costs the proxy no request."""
    from satosa_orcid_plugin.devstack.scripted_browser import link_with_id

    url = link_with_id(page, "connect-orcid")
    if url is None:
        raise AssertionError(f"no 'Connect your ORCID iD' link in page: {page[:500]!r}")
    return url


def pass_interstitial_via(client, response, proxy_base: str, choice: str = "connect"):
    """If ``response`` is the plugin's interstitial page, press the button sending ``choice``
    (not_now | never | cancel) and return the proxy's answer; else return ``response``.
    ``connect`` is a link, not a button: the answer is ORCID's authorize URL (a str)."""
    from satosa_orcid_plugin.devstack.scripted_browser import parse_forms

    if response.status_code != 200:
        return response
    if choice == "connect":
        return connect_link(response.get_data(as_text=True))
    for form in parse_forms(response.get_data(as_text=True), f"{proxy_base}/"):
        button = form.button_with_value(choice)
        if button is not None and form.action.startswith(f"{proxy_base}/orcid/"):
            return client.post(urlsplit(form.action).path, data=form.data(None, button))
    return response


@pytest.fixture
def pass_interstitial(demo_layout: DemoLayout):
    def pass_interstitial(client, response, choice: str = "connect"):
        return pass_interstitial_via(client, response, demo_layout.proxy_base, choice)

    return pass_interstitial


@pytest.fixture
def follow_callback():
    def follow_callback(client, url: str):
        return client.get(path_and_query(url))

    return follow_callback
