"""The researcher's pages through SATOSA's real WSGI app (real proxy_conf/, pysaml2 SP and IdP,
the ORCID emulator on loopback): "Connect" goes straight to ORCID, every page speaks the
browser's language, error pages name the service and lead back to it, and a reloaded
callback after a successful link says the iD is connected."""
from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from bs4 import BeautifulSoup
from flowkit import connect_link, html_form_fields, path_and_query
from prometheus_client import REGISTRY

JOSIAH = "https://orcid.org/0000-0002-1825-0097"


def returned(answer: str) -> float:
    return REGISTRY.get_sample_value("satosa_orcid_hops_returned_total", {"answer": answer}) or 0.0


@pytest.fixture
def interstitial(satosa_app, demo_sp, start_login, idp_respond):
    """A login up to the interstitial; its HTML."""

    def interstitial(user="alice"):
        start_login(satosa_app, demo_sp)
        response = idp_respond(satosa_app, user)
        assert response.status_code == 200, response.status
        return response.get_data(as_text=True)

    return interstitial


def test_connect_is_a_link_to_orcids_authorize_url_made_with_the_page(
    satosa_app, demo_sp, demo_layout, interstitial, orcid_consent, follow_callback, sp_receive,
):
    page = interstitial()
    soup = BeautifulSoup(page, "html.parser")
    link = soup.find("a", id="connect-orcid")
    # ORCID's button: the iD icon (hidden from screen readers) and the words, which are its name
    assert link.get_text(" ", strip=True) == "Connect your ORCID iD"
    assert link.find("svg")["aria-hidden"] == "true" and not link.get("aria-label")
    assert "noreferrer" in link["rel"]
    assert not [b for b in soup.find_all("button") if b.get("value") == "connect"]  # no round trip via the proxy
    authorize = link["href"]
    assert authorize.startswith(f"{demo_layout.emulator_url}/oauth/authorize?")
    query = parse_qs(urlsplit(authorize).query)
    assert query["redirect_uri"] == [demo_layout.orcid_callback_url] and query["state"][0] and query["nonce"][0]
    # the form's CSRF token is not the OAuth state in the link
    _, fields = html_form_fields(page)
    assert fields["state"] != query["state"][0]

    # the researcher at ORCID and back: the hop is counted at the callback, and the SP gets the iD
    before = returned("code")
    released = sp_receive(follow_callback(satosa_app, orcid_consent(authorize)), demo_sp)
    assert released.attributes["eduPersonOrcid"] == [JOSIAH]
    assert returned("code") == before + 1


def test_an_interstitial_overridden_from_an_older_release_can_still_post_connect(satosa_app, interstitial):
    page = interstitial()
    action, fields = html_form_fields(page)
    answer = satosa_app.post(path_and_query(action), data={**fields, "choice": "connect"})
    assert answer.status_code == 302
    assert answer.headers["Location"] == connect_link(page)


def test_a_deny_at_orcid_is_counted_at_the_callback(
    satosa_app, demo_sp, interstitial, orcid_consent, follow_callback, sp_receive,
):
    before = returned("access_denied")
    callback = orcid_consent(connect_link(interstitial()), action="Deny access")
    assert "eduPersonOrcid" not in sp_receive(follow_callback(satosa_app, callback), demo_sp).attributes
    assert returned("access_denied") == before + 1


@pytest.mark.parametrize("lang, title", [
    ("en", "Your ORCID iD is already connected"),
    ("de", "Ihre ORCID iD ist bereits verbunden"),
])
def test_reloading_the_callback_after_the_link_says_the_id_is_connected(
    satosa_app, demo_sp, interstitial, orcid_consent, follow_callback, sp_receive, orcid_emulator, lang, title,
):
    callback = orcid_consent(connect_link(interstitial()))
    assert sp_receive(follow_callback(satosa_app, callback), demo_sp).attributes["eduPersonOrcid"] == [JOSIAH]
    # the back button (or a reload) brings the browser to the same callback URL again
    again = satosa_app.get(path_and_query(callback), headers={"Accept-Language": lang})
    assert again.status_code == 200
    soup = BeautifulSoup(again.get_data(as_text=True), "html.parser")
    assert soup.html["lang"] == lang and soup.h1.get_text(strip=True) == title
    assert soup.find(id="orcid-uri").get_text() == JOSIAH
    assert soup.find(id="service-link").get_text() == "Demo Research Portal"
    assert soup.find(id="next-step").get_text().strip().endswith("Demo Research Portal" + (
        " wechseln." if lang == "de" else "."))
    # and nothing was exchanged twice (a reused code makes ORCID revoke the tokens)
    assert len([r for r in orcid_emulator.requests if r.path == "/oauth/token"]) == 1


@pytest.mark.parametrize("lang, title, back", [
    ("en", "This link is not for this sign-in", "Go back to"),
    ("de", "Dieser Link gehört nicht zu dieser Anmeldung", "Kehren Sie zu"),
    ("fr", "Ce lien ne correspond pas à cette connexion", "Retournez sur"),
    ("es", "Este enlace no corresponde a este inicio de sesión", "Vuelva a"),
])
def test_an_error_page_speaks_the_browsers_language_and_leads_back_to_the_service(
    satosa_app, demo_sp, demo_layout, interstitial, orcid_consent, lang, title, back,
):
    callback = orcid_consent(connect_link(interstitial()))
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = satosa_app.get(f"{parts.path}?{urlencode({**query, 'state': query['state'][:-2] + 'xx'})}",
                            headers={"Accept-Language": f"{lang};q=0.9"})
    assert forged.status_code == 400
    soup = BeautifulSoup(forged.get_data(as_text=True), "html.parser")
    assert soup.html["lang"] == lang and soup.h1.get_text(strip=True) == title
    next_step = soup.find(id="next-step")
    assert next_step.get_text(" ", strip=True).startswith(back)
    service = next_step.find("a", id="service-link")
    # named by the SP's mdui:DisplayName, and its site from its metadata's AssertionConsumerService
    assert service.get_text() == "Demo Research Portal" and service["href"] == f"{demo_layout.sp_base}/"
    assert len(soup.find(id="reference").get_text()) == 36


def test_an_error_page_without_a_login_says_what_to_do(satosa_app):
    response = satosa_app.get("/orcid/callback?code=abc&state=nothing-here", headers={"Accept-Language": "fr"})
    assert response.status_code == 400
    soup = BeautifulSoup(response.get_data(as_text=True), "html.parser")
    assert soup.html["lang"] == "fr" and soup.h1.get_text(strip=True) == "Votre session de connexion a expiré"
    assert soup.find(id="next-step").get_text(strip=True) == \
        "Retournez sur le service auquel vous vous connectiez et recommencez."
    assert soup.find("a", id="service-link") is None
