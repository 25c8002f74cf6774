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
        ("pt-BR,pt;q=0.9", "pt"),
        ("it-CH", "it"),
        ("zh-CN,ja;q=0.8", "en"),
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


def test_the_catalogues_are_orcids_ui_languages():
    # ORCID's own UI languages (https://orcid.org, language menu), so ORCID's pages follow ours via ``lang``
    orcid_ui = {"ar", "cs", "de", "en", "es", "fr", "it", "ja", "ko", "pl", "pt", "ru", "tr", "uk", "zh_CN", "zh_TW"}
    assert {"en", "de", "fr", "es"} <= set(MESSAGES) <= orcid_ui


def test_placeholders_are_the_same_in_every_language():
    import string

    def fields(text):
        return sorted(name for _, name, _, _ in string.Formatter().parse(text) if name)

    for lang, table in MESSAGES.items():
        for key, text in table.items():
            assert fields(text) == fields(MESSAGES["en"][key]), (lang, key)
