"""Both journeys in a real browser: headless Chromium (Debian's ``chromium``, driven by Playwright)
through the real processes of the demo (ORCID emulator, demo IdP, demo SP, the proxy under
gunicorn over HTTPS with its generated certificate).

* Journey 1: SP -> proxy -> IdP (alice) -> the interstitial (reached and pressed with the
  keyboard) -> ORCID sign-in and "Authorize access" -> the SP shows eduPersonOrcid.
* Journey 3: at ORCID, "Sign in with your institution" -> proxy (an ORCID requester: no hop,
  the sign-in marker is set) -> IdP -> back at ORCID, link the account -> ORCID's "connect your
  institution" notification -> "Connect" (a new tab, the state-less authorize URL) -> grant ->
  the proxy's connect page "Your ORCID iD is connected" -> a login at the SP shows the iD
  without any request to ORCID.

A screenshot of every page goes to ``tests/artifacts/`` (git-ignored). Without Playwright or
Chromium these tests are skipped, unless ``SATOSA_ORCID_REQUIRE_BROWSER=1`` (``.ci/run``), where
they fail. ``make browser-deps`` installs what is missing.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, quote_plus, urlsplit

import pytest

from satosa_orcid_plugin.devstack.demo import DemoStack
from satosa_orcid_plugin.devstack.layout import DemoLayout, DemoPorts

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

REQUIRE_BROWSER_VAR = "SATOSA_ORCID_REQUIRE_BROWSER"
CHROMIUM_VAR = "SATOSA_ORCID_CHROMIUM"  # optional: another chromium binary
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
JOSIAH = "0000-0002-1825-0097"
JOSIAH_URI = f"https://orcid.org/{JOSIAH}"
ORCID_PASSWORD = "orcid-demo"
IDP_PASSWORD = "demo"
TIMEOUT_MS = 20_000


def _unavailable(reason: str) -> None:
    """Skip, or fail when the browser tests are required (CI)."""
    if os.environ.get(REQUIRE_BROWSER_VAR) == "1":
        pytest.fail(f"{reason}; {REQUIRE_BROWSER_VAR}=1 forbids skipping the browser tests "
                    "(run `make browser-deps`)", pytrace=False)
    pytest.skip(f"{reason} (run `make browser-deps`)")


def _chromium() -> str | None:
    configured = os.environ.get(CHROMIUM_VAR)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright Python package is not installed (it is in the dev extra)")
    executable = _chromium()
    if executable is None:
        _unavailable("Debian's chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        except Exception as exc:  # a broken chromium install
            _unavailable(f"chromium at {executable} does not start: {str(exc).splitlines()[0]}")
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def demo_keys(tmp_path_factory) -> Path:
    from satosa_orcid_plugin.devstack.pki import generate_demo_pki

    directory = tmp_path_factory.mktemp("browser-keys")
    generate_demo_pki(directory)
    return directory


@pytest.fixture
def stack(tmp_path, demo_keys) -> Iterator[DemoLayout]:
    """The demo's four processes on free loopback ports (a fresh deployment per test)."""
    layout = DemoLayout(tmp_path / "demo", DemoPorts.free(), keys_from=demo_keys)
    with DemoStack(layout, log=lambda msg: None) as running:
        running.start()
        try:
            yield layout
        finally:
            # shown by pytest only when the test failed
            for log in sorted(layout.logs_dir.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def context(chromium):
    ctx = chromium.new_context(ignore_https_errors=True, locale="en-US", viewport={"width": 1024, "height": 800})
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


class Shots:
    """Numbered full-page screenshots of one test in tests/artifacts/."""

    def __init__(self, prefix: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        for old in ARTIFACTS.glob(f"{prefix}-*.png"):
            old.unlink()
        self.prefix, self.count, self.taken = prefix, 0, []

    def __call__(self, page, name: str) -> Path:
        self.count += 1
        path = ARTIFACTS / f"{self.prefix}-{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@contextmanager
def on_failure_screenshot(shots: Shots, *pages) -> Iterator[None]:
    try:
        yield
    except BaseException:
        for i, page in enumerate(p for p in pages if p is not None and not p.is_closed()):
            try:
                page.screenshot(path=str(ARTIFACTS / f"{shots.prefix}-FAILED-{i}.png"), full_page=True)
                print(f"failed at {page.url}")
            except Exception:
                pass
        raise


def released_attributes(page) -> dict:
    return json.loads(page.locator("script#released-attributes").text_content())["attributes"]


def sign_in_at_idp(page, layout: DemoLayout, shots: "Shots | None" = None, user: str = "alice") -> None:
    page.wait_for_url(f"{layout.idp_base}/**")
    page.get_by_role("heading", name="Demo University: sign in").wait_for()
    if shots is not None:
        shots(page, "idp-signin")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(IDP_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def focused(page) -> dict:
    return page.evaluate("""() => {
        const e = document.activeElement;
        return {tag: e.tagName.toLowerCase(), id: e.id || null, value: e.value || null, text: (e.innerText || '').trim(),
                outline: getComputedStyle(e).outlineStyle, focusVisible: e.matches(':focus-visible')};
    }""")


def test_journey_1_login_hops_through_the_interstitial_and_orcid_to_the_sp(stack, context):
    layout = stack
    shots = Shots("journey1")
    page = context.new_page()
    with on_failure_screenshot(shots, page):
        page.goto(f"{layout.sp_base}/")
        shots(page, "sp-home")
        page.get_by_role("link", name="Log in through the proxy").click()

        sign_in_at_idp(page, layout, shots)
        heading = page.get_by_role("heading", name="Connect your ORCID iD")
        heading.wait_for()
        assert page.url == f"{layout.proxy_base}/Saml2/acs/post"
        shots(page, "interstitial")

        # Keyboard: Tab from the top of the page reaches "Connect" (a link straight to ORCID) and
        # every button, each with a visible focus ring.
        seen = []
        for _ in range(15):
            page.keyboard.press("Tab")
            now = focused(page)
            if now["id"] == "connect-orcid" or now["tag"] == "button":
                assert now["focusVisible"] and now["outline"] not in ("none", ""), now
                seen.append(now["value"] or now["id"])
            if {"connect-orcid", "not_now", "never"} <= set(seen):
                break
        assert {"connect-orcid", "not_now", "never"} <= set(seen), f"Tab reached only {seen}"
        while focused(page)["id"] != "connect-orcid":
            page.keyboard.press("Shift+Tab")
        assert focused(page)["text"] == "Connect your ORCID iD"
        assert page.get_by_role("link", name="Connect your ORCID iD", exact=True).count() == 1  # its accessible name
        shots(page, "interstitial-keyboard-focus")
        to_proxy = []
        page.on("request", lambda r: to_proxy.append(r.url) if r.url.startswith(layout.proxy_base) else None)
        page.keyboard.press("Enter")  # follows the link: the authorize URL was made with the page

        page.wait_for_url(f"{layout.emulator_url}/oauth/authorize?**")
        assert to_proxy == []  # going to ORCID cost the proxy no request
        authorize = parse_qs(urlsplit(page.url).query)
        assert authorize["state"][0] and authorize["redirect_uri"] == [layout.orcid_callback_url]
        assert authorize["lang"] == ["en"]
        page.get_by_role("heading", name="Sign in to ORCID").wait_for()
        shots(page, "orcid-signin")
        page.get_by_label("Email or 16-digit ORCID iD").fill(JOSIAH)
        page.get_by_label("Password").fill(ORCID_PASSWORD)
        page.get_by_role("button", name="Sign in", exact=True).click()

        page.get_by_role("button", name="Authorize access").wait_for()
        shots(page, "orcid-authorize")
        page.get_by_role("button", name="Authorize access").click()

        page.wait_for_url(f"{layout.sp_base}/acs/post")
        page.locator("#orcid-id").wait_for()
        shots(page, "sp-result")
        assert page.locator("#orcid-id").inner_text() == JOSIAH_URI
        attributes = released_attributes(page)
        assert attributes["eduPersonOrcid"] == [JOSIAH_URI]
        assert attributes["eduPersonPrincipalName"] == ["alice@demo.example.org"]


def test_journey_3_institutional_sign_in_at_orcid_then_connect_binds_the_id(stack, context):
    layout = stack
    shots = Shots("journey3")
    page = context.new_page()
    tab = None
    with on_failure_screenshot(shots, page):
        page.goto(f"{layout.emulator_url}/signin")
        shots(page, "orcid-signin")
        page.get_by_role("link", name="Sign in with your institution").click()

        sign_in_at_idp(page, layout, shots)  # the proxy's AuthnRequest, on behalf of ORCID's SP

        # The proxy answered ORCID's SP directly: no interstitial, no hop; the marker is set.
        page.get_by_role("heading", name="Link your").wait_for()
        assert page.url == f"{layout.emulator_url}/Shibboleth.sso/SAML2/POST"
        marker = [c for c in context.cookies(layout.proxy_base + "/orcid/") if c["name"] == "__Host-orcid_signin"]
        assert marker and marker[0]["path"] == "/" and marker[0]["httpOnly"] and marker[0]["secure"]
        assert page.locator("#account-id").inner_text() == "alice@demo.example.org"
        shots(page, "orcid-link-account")
        page.get_by_label("Email or 16-digit ORCID iD").fill(JOSIAH)
        page.get_by_label("Password").fill(ORCID_PASSWORD)
        page.get_by_role("button", name="Sign in").click()

        page.wait_for_url(f"{layout.emulator_url}/my-orcid")
        page.get_by_role("heading", name="Connecting your institutional account").wait_for()
        shots(page, "orcid-connect-notification")
        button = page.locator("#connect-institution")
        expected = (f"{layout.emulator_url}/oauth/authorize?response_type=code&client_id={layout.orcid_client_id}"
                    f"&scope=%2Fread-limited+%2Factivities%2Fupdate&redirect_uri={quote_plus(layout.orcid_connect_url)}")
        assert button.get_attribute("href") == expected  # ORCID's connect notification: no state, nothing else
        assert button.get_attribute("target") == "_blank"

        with context.expect_page() as opened:
            button.click()
        tab = opened.value
        tab.get_by_role("button", name="Authorize access").wait_for()
        shots(tab, "orcid-authorize-connect")
        tab.get_by_role("button", name="Authorize access").click()

        # ORCID -> <proxy>/orcid/connect?code (no state) -> state-protected re-authorize -> bound
        tab.get_by_role("heading", name="Your ORCID iD is connected").wait_for()
        assert tab.url.startswith(f"{layout.proxy_base}/orcid/callback?")
        assert tab.locator("#orcid-uri").inner_text() == JOSIAH_URI
        shots(tab, "proxy-connected")
        assert not [c for c in context.cookies(layout.proxy_base + "/orcid/") if c["name"] == "__Host-orcid_signin"]

        # Every service now gets the iD, and the login never goes near ORCID.
        to_orcid = []
        # (only this tab: the first tab still shows an ORCID page that may fetch e.g. a favicon late)
        tab.on("request", lambda r: to_orcid.append(r.url) if r.url.startswith(layout.emulator_url) else None)
        tab.goto(f"{layout.sp_base}/")
        tab.get_by_role("link", name="Log in through the proxy").click()
        sign_in_at_idp(tab, layout, shots)
        tab.wait_for_url(f"{layout.sp_base}/acs/post")
        tab.locator("#orcid-id").wait_for()
        shots(tab, "sp-result")
        assert released_attributes(tab)["eduPersonOrcid"] == [JOSIAH_URI]
        assert to_orcid == []

        # ORCID archives the notification once the client holds the user's /activities/update token.
        page.goto(f"{layout.emulator_url}/my-orcid")
        page.locator("#no-notifications").wait_for()
        shots(page, "orcid-after-connect")


# --- every page of the plugin: two languages, desktop and phone, axe-core ----------------------
AXE_VAR = "SATOSA_ORCID_AXE"  # optional: another axe.min.js
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 360, "height": 740}}
KWAME, ANA = "0009-0003-7578-3214", "0000-0002-1694-233X"
HEADINGS = {
    "en": {"interstitial": "Connect your ORCID iD", "wrong_state": "This link is not for this sign-in",
           "refused": "ORCID did not accept the request", "already": "Your ORCID iD is already connected",
           "expired": "Your sign-in session has expired", "invalid": "Link not valid", "pending": "Almost done",
           "confirm": "Connect this ORCID iD to your account?", "connected": "Your ORCID iD is connected"},
    "de": {"interstitial": "Verbinden Sie Ihre ORCID iD", "wrong_state": "Dieser Link gehört nicht zu dieser Anmeldung",
           "refused": "ORCID hat die Anfrage nicht angenommen", "already": "Ihre ORCID iD ist bereits verbunden",
           "expired": "Ihre Anmeldesitzung ist abgelaufen", "invalid": "Ungültiger Link", "pending": "Fast geschafft",
           "confirm": "Diese ORCID iD mit Ihrem Konto verbinden?", "connected": "Ihre ORCID iD ist verbunden"},
}


def _axe() -> Path | None:
    configured = os.environ.get(AXE_VAR)
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    found = sorted(Path(__file__).resolve().parents[2].glob("var/axe-core-*/axe.min.js"))
    return found[-1] if found else None


@pytest.fixture(scope="module")
def axe_script() -> Path:
    path = _axe()
    if path is None:
        _unavailable("axe-core is not in var/ (make browser-deps fetches it with npm)")
    return path


class PageCheck:
    """Screenshot, accessibility check (axe-core, WCAG 2 A/AA, zero violations) and layout
    check (no sideways scrolling; the iD on one line) of each page, at each viewport."""

    def __init__(self, lang: str, axe: Path) -> None:
        self.lang, self.axe, self.count = lang, axe, 0
        self.shots = Shots(f"pages-{lang}")
        self.checked: list[str] = []

    def __call__(self, page, name: str, heading: str) -> None:
        page.get_by_role("heading", name=heading, level=1).wait_for()
        assert page.locator("html").get_attribute("lang") == self.lang, name
        page.add_script_tag(path=str(self.axe))
        for viewport, size in VIEWPORTS.items():
            page.set_viewport_size(size)
            self.shots(page, f"{name}-{viewport}")
            violations = page.evaluate("""async (tags) => {
                const result = await axe.run(document, {runOnly: {type: 'tag', values: tags}});
                return result.violations.map(v => `${v.id} (${v.impact}): ${v.help} at ` +
                                                  v.nodes.map(n => n.target.join(' ')).join(', '));
            }""", AXE_TAGS)
            assert violations == [], f"{name} ({self.lang}, {viewport}): {violations}"
            layout = page.evaluate("""() => {
                const uri = document.getElementById('orcid-uri');
                return {overflow: document.documentElement.scrollWidth - window.innerWidth,
                        uriLines: uri ? uri.getClientRects().length : 0,
                        uriHeight: uri ? uri.getBoundingClientRect().height : 0,
                        lineHeight: uri ? parseFloat(getComputedStyle(uri).fontSize) * 1.8 : 0};
            }""")
            assert layout["overflow"] <= 0, f"{name} ({viewport}) scrolls sideways by {layout['overflow']}px"
            assert layout["uriHeight"] <= layout["lineHeight"], f"{name} ({viewport}): the iD wraps"
        page.set_viewport_size(VIEWPORTS["desktop"])
        self.checked.append(name)


@pytest.mark.parametrize("lang", ["en", "de"])
def test_every_page_in_two_languages_on_desktop_and_phone_passes_axe(stack, chromium, axe_script, lang):
    """Each page the plugin shows a researcher, reached as a researcher reaches it, in the
    browser's language: checked by axe-core at desktop and phone width and photographed."""
    layout, words = stack, HEADINGS[lang]
    check = PageCheck(lang, axe_script)

    def new_context():
        # bypass_csp: only to inject axe-core into pages whose CSP (default-src 'none') forbids scripts
        ctx = chromium.new_context(ignore_https_errors=True, locale=lang, bypass_csp=True,
                                   viewport=VIEWPORTS["desktop"])
        ctx.set_default_timeout(TIMEOUT_MS)
        return ctx

    ctx = new_context()
    page = ctx.new_page()
    try:
        with on_failure_screenshot(check.shots, page):
            # 1. the interstitial, then (the login still waiting there) two error pages and the refusal
            page.goto(f"{layout.sp_base}/")
            page.get_by_role("link", name="Log in through the proxy").click()
            sign_in_at_idp(page, layout, user="alice")
            check(page, "interstitial", words["interstitial"])
            connect = page.locator("#connect-orcid").get_attribute("href")
            assert parse_qs(urlsplit(connect).query)["lang"] == [lang]
            page.goto(f"{layout.orcid_callback_url}?code=abcdef&state=not-this-browsers")
            check(page, "error-wrong-state", words["wrong_state"])
            assert page.locator("#service-link").inner_text() == "Demo Research Portal"
            page.goto(layout.orcid_callback_url)  # ORCID refused in the fragment: no parameters
            check(page, "refused", words["refused"])

            # 2. on to ORCID with the link, back to the SP; then the back button's page
            callbacks = []
            page.on("request", lambda r: callbacks.append(r.url) if r.url.startswith(layout.orcid_callback_url + "?")
                    else None)
            page.goto(connect)
            page.get_by_label("Email or 16-digit ORCID iD").fill(JOSIAH)
            page.get_by_label("Password").fill(ORCID_PASSWORD)
            page.get_by_role("button", name="Sign in", exact=True).click()
            page.get_by_role("button", name="Authorize access").click()
            page.wait_for_url(f"{layout.sp_base}/acs/post")
            assert released_attributes(page)["eduPersonOrcid"] == [JOSIAH_URI]
            page.goto(callbacks[-1])
            check(page, "error-already-connected", words["already"])
            assert page.locator("#orcid-uri").inner_text() == JOSIAH_URI
        ctx.close()

        # 3. a browser with no sign-in in progress: the generic error pages
        ctx = new_context()
        page = ctx.new_page()
        with on_failure_screenshot(check.shots, page):
            page.goto(f"{layout.orcid_callback_url}?code=abcdef&state=from-nowhere")
            check(page, "error-expired", words["expired"])
            page.goto(layout.orcid_connect_url)
            check(page, "error-connect-invalid", words["invalid"])

            # 4. Institutional Connect without a sign-in marker: pending, then confirmed at the next login
            page.goto(f"{layout.emulator_url}/oauth/authorize?response_type=code&client_id={layout.orcid_client_id}"
                      f"&scope=%2Fread-limited+%2Factivities%2Fupdate&redirect_uri={quote_plus(layout.orcid_connect_url)}")
            page.get_by_label("Email or 16-digit ORCID iD").fill(KWAME)
            page.get_by_label("Password").fill(ORCID_PASSWORD)
            page.get_by_role("button", name="Sign in", exact=True).click()
            page.get_by_role("button", name="Authorize access").click()
            check(page, "pending", words["pending"])
            assert "UTC" in page.locator("#expires").inner_text()
            page.goto(f"{layout.sp_base}/")
            page.get_by_role("link", name="Log in through the proxy").click()
            sign_in_at_idp(page, layout, user="bob")
            check(page, "confirm", words["confirm"])
            page.locator("button[value=yes]").click()
            page.wait_for_url(f"{layout.sp_base}/acs/post")
            assert released_attributes(page)["eduPersonOrcid"] == [f"https://orcid.org/{KWAME}"]
        ctx.close()

        # 5. Institutional Connect after signing in to ORCID through the institution: connected
        ctx = new_context()
        page = ctx.new_page()
        with on_failure_screenshot(check.shots, page):
            page.goto(f"{layout.emulator_url}/signin")
            page.get_by_role("link", name="Sign in with your institution").click()
            sign_in_at_idp(page, layout, user="carol")
            page.get_by_role("heading", name="Link your Demo University account").wait_for()  # one name everywhere
            page.get_by_label("Email or 16-digit ORCID iD").fill(ANA)
            page.get_by_label("Password").fill(ORCID_PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.goto(page.locator("#connect-institution").get_attribute("href"))
            page.get_by_text("Demo University").first.wait_for()  # ORCID's consent names the same institution
            page.get_by_role("button", name="Authorize access").click()
            check(page, "connected", words["connected"])
            assert page.locator("#institution").inner_text() == "Demo University"
    finally:
        ctx.close()
    assert len(check.checked) == 9
    print(f"screenshots of {len(check.checked)} pages x {len(VIEWPORTS)} viewports ({lang}): {ARTIFACTS}")
