"""Every string a researcher reads, one catalogue per language in ``templates/locales/<lang>.json``.

The language comes from the browser's ``Accept-Language`` and is passed on to ORCID as
``lang`` so both pages speak the same language. A key missing from a language falls back to
English (a test keeps every catalogue complete). Placeholders are ``str.format`` fields
(``{institution}``); :meth:`Translator.html` fills them with already-escaped HTML (a link).
"""
from __future__ import annotations

import json
import re
from importlib import resources

from markupsafe import Markup, escape

DEFAULT = "en"


def _load() -> dict[str, dict[str, str]]:
    folder = resources.files("satosa_orcid_plugin") / "templates" / "locales"
    tables = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            tables[entry.name[:-5]] = json.loads(entry.read_text(encoding="utf-8"))
    return {DEFAULT: tables.pop(DEFAULT), **tables}


MESSAGES: dict[str, dict[str, str]] = _load()
SUPPORTED = tuple(MESSAGES)
_TAG = re.compile(r"^\s*([A-Za-z]{1,8})(?:-[A-Za-z0-9]{1,8})*\s*(?:;\s*q\s*=\s*([01](?:\.\d{0,3})?))?\s*$")


def negotiate(accept_language: str | None, supported: tuple[str, ...] = SUPPORTED) -> str:
    """Pick the best supported language from an Accept-Language header (RFC 9110 weights)."""
    best, best_q = DEFAULT, -1.0
    for i, part in enumerate((accept_language or "")[:512].split(",")):
        m = _TAG.match(part)
        if not m:
            continue
        lang = m.group(1).lower()
        q = float(m.group(2)) if m.group(2) else 1.0
        if lang in supported and q > 0 and q > best_q:
            best, best_q = lang, q
    return best


class Translator:
    """``t("key", name=value)`` in the templates; ``t.html(...)`` when a value is markup."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in MESSAGES else DEFAULT

    def __call__(self, key: str, **values: object) -> str:
        text = MESSAGES[self.lang].get(key) or MESSAGES[DEFAULT][key]
        return text.format(**values) if values else text

    def html(self, key: str, **values: object) -> Markup:
        """The text escaped, its fields filled with escaped values or :class:`Markup` as is."""
        text = MESSAGES[self.lang].get(key) or MESSAGES[DEFAULT][key]
        return Markup(escape(text)).format(**values)
