"""The pages a researcher reads, rendered alone: every page and every error in every language,
the institution's header and footer from the configuration, ORCID's display guidelines."""
from __future__ import annotations

import pytest
from bs4 import BeautifulSoup

from satosa_orcid_plugin import pages
from satosa_orcid_plugin.config import ConfigError, parse_config
from satosa_orcid_plugin.i18n import MESSAGES, SUPPORTED

JOSIAH = "https://orcid.org/0000-0002-1825-0097"
SITE = pages.Site("Example University", "https://www.example.org/logo.svg", "https://www.example.org/privacy",
                  "https://help.example.org/")


def soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


@pytest.mark.parametrize("lang", SUPPORTED)
@pytest.mark.parametrize("key", sorted(pages.ERRORS))
def test_every_error_page_is_in_the_browsers_language(key, lang):
    html, status = pages.error(key, None, reference="ref-1", lang=lang, site=SITE)
    page = soup(html)
    assert page.html["lang"] == lang
    assert page.h1.get_text(strip=True) == MESSAGES[lang][f"error.{key}.title"]
    assert page.find(id="message").get_text(strip=True) == MESSAGES[lang][f"error.{key}.body"]
    assert page.find(id="next-step").get_text(strip=True)  # always says what to do next
    assert status.split()[0].isdigit()


def test_the_catalogues_hold_only_words_no_markup():
    for lang, table in MESSAGES.items():
        for key, text in table.items():
            assert "<" not in text and ">" not in text, (lang, key)


def test_an_error_page_links_back_to_the_service_it_knows():
    html, _ = pages.error("wrong_state", None, reference="r", lang="es", site=SITE, service="Portal <A&B>",
                          service_url="https://portal.example.org/")
    link = soup(html).find(id="next-step").find("a")
    assert link["href"] == "https://portal.example.org/" and link.get_text() == "Portal <A&B>"  # escaped, not markup
    assert soup(html).find(id="next-step").get_text(" ", strip=True) == "Vuelva a Portal <A&B> e inicie sesión de nuevo."


def test_connect_pages_send_the_researcher_back_to_orcid_not_to_a_service():
    html, _ = pages.error("connect_rejected", None, reference="r", lang="en", site=SITE)
    assert soup(html).find(id="next-step").get_text(strip=True) == \
        "You can close this tab, or start again from your ORCID account."


def test_a_failed_verification_says_which_problem_with_the_institution_named():
    html, _ = pages.error("connect_failed", None, reference="r", lang="de", code="link_conflict", site=SITE)
    assert "Example University" in soup(html).find(id="message").get_text()


def test_header_and_footer_come_from_the_configuration():
    page = soup(pages.translated("connected.html", None, "fr", site=SITE, orcid_uri=JOSIAH, user="alice"))
    assert page.find(id="institution").get_text() == "Example University"
    logo = page.find("img", class_="logo")
    assert logo["src"] == SITE.logo_url and logo["alt"] == ""  # the name is written next to it
    assert page.find(id="privacy-link")["href"] == SITE.privacy_url
    assert page.find(id="privacy-link").get_text() == "Confidentialité"
    assert page.find(id="help-link")["href"] == SITE.help_url
    assert page.title.get_text().endswith("Example University")


def test_without_configuration_the_pages_are_neutral_and_still_in_the_language():
    page = soup(pages.translated("pending.html", None, "de", orcid_uri=JOSIAH, expires="2030-01-01 10:00"))
    assert page.find(id="institution").get_text() == "Ihre Einrichtung"
    assert page.find("img") is None and page.find(id="privacy-link") is None and page.find(id="help-link") is None
    assert "2030-01-01 10:00 UTC" in page.find(id="expires").get_text()
    assert page.find(id="next-step").get_text(strip=True)


def test_the_id_follows_orcids_display_guidelines():
    page = soup(pages.translated("connected.html", None, "en", orcid_uri=JOSIAH))
    link = page.find("a", class_="orcid-id")
    assert link["href"] == JOSIAH and page.find(id="orcid-uri").get_text() == JOSIAH  # the full https URI
    assert link["aria-label"] == f"ORCID iD {JOSIAH}" and link.find("svg")["aria-hidden"] == "true"
    assert "white-space: nowrap" in page.style.get_text()  # never broken inside the number


def test_the_interstitial_explains_orcid_and_how_to_undo_dont_ask_again():
    page = soup(pages.translated("interstitial.html", None, "en", site=SITE, service="Portal", state="s",
                                 action="/orcid/choice", connect_url="https://orcid.org/oauth/authorize?x=1"))
    assert page.h1.find("svg")["aria-hidden"] == "true"
    assert page.find(id="learn-more")["href"] == "https://info.orcid.org/what-is-orcid/"
    assert "Example University" in page.find(id="never-undo").get_text()


def test_the_logo_origin_is_the_only_image_source_besides_inline_ones():
    csp = dict(pages.headers(logo_url="https://cdn.example.org/logo.svg"))["Content-Security-Policy"]
    assert "img-src data: https://cdn.example.org;" in csp
    assert "img-src data:;" in dict(pages.headers())["Content-Security-Policy"]


def _config(**interstitial):
    return {"orcid": {"client_id": "APP-ABCDEFGHIJKLMNOP", "client_secret": "s"}, "user_key_attribute": "eppn",
            "store": {"database_url": "sqlite://", "token_keys": "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="},
            "interstitial": interstitial}


def test_page_settings_are_parsed_and_checked():
    cfg = parse_config(_config(institution="Example University", logo_url="data:image/svg+xml;base64,PHN2Zy8+",
                               privacy_url="https://www.example.org/privacy/", help_url="https://help.example.org/",
                               service_urls={"https://sp.example.org/sp": "https://sp.example.org/"})).interstitial
    assert cfg.privacy_url == "https://www.example.org/privacy/"  # kept as written
    assert cfg.logo_url.startswith("data:image/") and cfg.service_urls["https://sp.example.org/sp"]
    for key, value in (("logo_url", "http://www.example.org/logo.png"), ("privacy_url", "javascript:alert(1)"),
                       ("service_urls", {"x": "nope"})):
        with pytest.raises(ConfigError, match=f"interstitial.{key}"):
            parse_config(_config(**{key: value}))


def test_the_already_connected_page_is_no_error_and_asks_for_no_help_desk():
    html, status = pages.error("already_connected", None, reference="r", lang="en", orcid_uri=JOSIAH)
    assert status == "200 OK" and soup(html).find(id="reference") is None
    assert soup(html).find(id="next-step").get_text(strip=True) == "You can close this tab."
