"""HTML pages a person sees, rendered with Jinja2 (autoescaped, no external assets)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from .i18n import Translator

if TYPE_CHECKING:
    from jinja2 import Environment  # imported with the first page: linked users' logins never need it

_env_cache: dict[str | None, Environment] = {}
# Compiling templates in several threads at once trips a CPython 3.11 bug ("SystemError: AST
# constructor recursion depth mismatch", python/cpython#106905); gunicorn threads would hit it
# on the first requests. Compile under a lock; rendering a compiled template needs none.
_compile_lock = threading.Lock()


def environment(override_dir: str | None = None) -> Environment:
    """Templates from the deployment's directory first (if given), then the package's."""
    env = _env_cache.get(override_dir)
    if env is None:  # (called under _compile_lock from template())
        from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, select_autoescape

        loaders = [PackageLoader("satosa_orcid_plugin", "templates")]
        if override_dir:
            loaders.insert(0, FileSystemLoader(str(Path(override_dir))))
        env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(default=True))
        _env_cache[override_dir] = env
    return env


def template(name: str, override_dir: str | None = None):
    with _compile_lock:
        return environment(override_dir).get_template(name)


def render(name: str, override_dir: str | None = None, **context: object) -> str:
    return template(name, override_dir).render(**context)


# Every page: never cached, never framed, no scripts; forms post only to us or over https.
def headers(*, form_targets: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """The plugin's page headers: never cached or framed, no referrer sent on, forms posting
    only to this proxy (and, after the interstitial's redirect, to ORCID: ``form-action``
    also applies to the redirects that follow a form, CSP Level 3)."""
    targets = " ".join(["'self'", *(t.rstrip("/") for t in form_targets if t)])
    return [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                        f"form-action {targets}; frame-ancestors 'none'")]


EXPIRED = "Your sign-in session has expired"
NOT_CONNECTED = "Your ORCID iD could not be connected"
# key: (title, message, status) of error.html
ERRORS: dict[str, tuple[str, str, str]] = {
    "expired": (EXPIRED, "We could not find the sign-in you started.", "400 Bad Request"),
    "callback_expired": (EXPIRED, "We could not find the sign-in you started, so your ORCID iD was not connected.",
                         "400 Bad Request"),
    "replayed": ("This link was already used",
                 "This sign-in step was already completed. Please start again from the service.", "400 Bad Request"),
    "connect_declined": ("ORCID iD not connected",
                         "You chose not to give your institution access to your ORCID record.", "200 OK"),
    "connect_invalid": ("Link not valid", "This link from ORCID is incomplete or not valid.", "400 Bad Request"),
    "connect_rejected": (NOT_CONNECTED, "ORCID did not confirm this connection. Please try again from your ORCID inbox.",
                         "400 Bad Request"),
    "connect_failed": (NOT_CONNECTED, "ORCID did not confirm this connection.", "400 Bad Request"),
    "connect_throttled": ("Too many attempts", "Too many ORCID connection links reached us from your network just "
                          "now. Please wait a minute, then use the link in your ORCID inbox again.",
                          "429 Too Many Requests"),
    "wrong_state": ("This link is not for this sign-in",
                    "ORCID sent back an answer that does not belong to the sign-in in this browser. If you "
                    "were connecting your ORCID iD, go back to that tab and finish there.", "400 Bad Request"),
    "cross_site": ("Request not allowed", "This form must be sent from the page that showed it. Please go back "
                   "to the service and sign in again.", "403 Forbidden"),
    "method": ("Method not allowed", "This address is not meant to be opened like this.", "405 Method Not Allowed"),
    "unexpected": ("Something went wrong", "We could not finish connecting your ORCID iD.", "500 Internal Server Error"),
}


def translated(name: str, override_dir: str | None, lang: str, **context: object) -> str:
    t = Translator(lang)
    return render(name, override_dir, t=t, lang=t.lang, **context)


def error(key: str, override_dir: str | None, *, reference: str, lang: str, code: str | None = None,
          institution: str = "") -> tuple[str, str]:
    """error.html and its status; ``code`` picks a clearer message for a failed connect verification."""
    title, message, status = ERRORS[key]
    message = {
        "connect_mismatch": "The ORCID account you are signed in with is not the one that sent this link.",
        "link_conflict": "This ORCID iD is already connected to another account at "
                         f"{institution}. Please contact the help desk.",
    }.get(code or "", message)
    return render("error.html", override_dir, title=title, message=message, reference=reference, lang=lang), status


def service_name(names: Mapping[str, str], requester: str | None, metadata_name: str | None) -> str:
    """What the interstitial calls the service: configured, from the SP's metadata, or its host."""
    return names.get(requester or "") or metadata_name or urlsplit(requester or "").hostname or requester \
        or "This service"


def display_name(names: Any) -> str | None:
    """The English (or first) display name from SATOSA's ``requester_name`` list."""
    if not isinstance(names, list):
        return None
    texts = [(n.get("lang"), n.get("text")) for n in names if isinstance(n, dict) and n.get("text")]
    for lang, text in texts:
        if lang == "en":
            return str(text)
    return str(texts[0][1]) if texts else None
