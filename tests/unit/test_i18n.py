import pytest

from satosa_orcid_plugin.i18n import MESSAGES, Translator, negotiate


@pytest.mark.parametrize(
    "header, lang",
    [
        ("de-CH,de;q=0.9,en;q=0.8", "de"),
        ("fr-FR", "fr"),
        ("es", "es"),
        ("ja,en;q=0.5", "en"),
        ("ja", "en"),
        ("", "en"),
        (None, "en"),
        ("en;q=0.1, es;q=0.9", "es"),
        ("de;q=0, fr;q=0.2", "fr"),
        ("garbage;;;,,", "en"),
    ],
)
def test_language_follows_accept_language(header, lang):
    assert negotiate(header) == lang


def test_every_language_translates_every_string():
    keys = set(MESSAGES["en"])
    for lang, table in MESSAGES.items():
        assert set(table) == keys, lang


def test_translator_fills_in_values():
    assert Translator("de")("interstitial.you", user="alice") == "Angemeldet als alice"
