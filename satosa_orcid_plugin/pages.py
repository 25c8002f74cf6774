"""HTML pages a person sees, rendered with Jinja2 (autoescaped, no external assets)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping
from urllib.parse import urlsplit

from .config import DEFAULT_INSTITUTION
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
def headers(*, form_targets: tuple[str, ...] = (), logo_url: str | None = None) -> list[tuple[str, str]]:
    """The plugin's page headers: never cached or framed, no referrer sent on, forms posting
    only to this proxy (and, for an overridden interstitial that still posts "connect", to
    ORCID: ``form-action`` also applies to the redirects that follow a form, CSP Level 3),
    images inline or from the configured logo's origin."""
    targets = " ".join(["'self'", *(t.rstrip("/") for t in form_targets if t)])
    images = "data:"
    if logo_url and not logo_url.startswith("data:"):
        images += " {0.scheme}://{0.netloc}".format(urlsplit(logo_url))
    return [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", f"default-src 'none'; style-src 'unsafe-inline'; img-src {images}; "
                                        f"form-action {targets}; frame-ancestors 'none'")]


ORCID_ABOUT = "https://info.orcid.org/what-is-orcid/"  # ORCID's "learn more" page for researchers


@dataclass(frozen=True)
class Site:
    """What every page shows around its content: the institution (header, optional logo) and
    the footer's links, from ``interstitial`` in the configuration."""
    institution: str = DEFAULT_INSTITUTION
    logo_url: str | None = None
    privacy_url: str | None = None
    help_url: str | None = None

    @classmethod
    def of(cls, settings: Any) -> "Site":
        return cls(settings.institution, settings.logo_url, settings.privacy_url, settings.help_url)


# key: HTTP status of error.html; its title and text are "error.<key>.title" / ".body" in the catalogue.
ERRORS: dict[str, str] = {
    "expired": "400 Bad Request",
    "callback_expired": "400 Bad Request",
    "replayed": "400 Bad Request",
    "already_connected": "200 OK",
    "connect_declined": "200 OK",
    "connect_invalid": "400 Bad Request",
    "connect_rejected": "400 Bad Request",
    "connect_failed": "400 Bad Request",
    "connect_throttled": "429 Too Many Requests",
    "wrong_state": "400 Bad Request",
    "cross_site": "403 Forbidden",
    "method": "405 Method Not Allowed",
    "unexpected": "500 Internal Server Error",
}
# Pages reached from ORCID's Institutional Connect: no service to go back to.
ORCID_SIDE = frozenset({"connect_declined", "connect_invalid", "connect_rejected", "connect_failed",
                        "connect_throttled"})
# Nothing went wrong: the step was done before (a reload); the page says so and what else to do.
DONE = frozenset({"already_connected"})
# A failed connect verification with a clearer text of its own ("error.<code>.body").
_BY_CODE = frozenset({"connect_mismatch", "link_conflict"})


def translated(name: str, override_dir: str | None, lang: str | None, *, site: Site = Site(),
               **context: object) -> str:
    """A page in ``lang`` (``t`` translates), with the site's header and footer."""
    t = Translator(lang or "en")
    institution = t("institution.default") if site.institution == DEFAULT_INSTITUTION else site.institution
    return render(name, override_dir, t=t, lang=t.lang, site=site, institution=institution,
                  orcid_about=ORCID_ABOUT, **context)


def error(key: str, override_dir: str | None, *, reference: str, lang: str, code: str | None = None,
          site: Site = Site(), service: str | None = None, service_url: str | None = None,
          orcid_uri: str | None = None) -> tuple[str, str]:
    """error.html and its status. ``code`` picks a clearer text for a failed connect
    verification; ``service``/``service_url`` name the service to go back to, when known."""
    t = Translator(lang)
    institution = t("institution.default") if site.institution == DEFAULT_INSTITUTION else site.institution
    body = t(f"error.{code}.body", institution=institution) if code in _BY_CODE else t(f"error.{key}.body")
    return translated("error.html", override_dir, lang, site=site, title=t(f"error.{key}.title"), message=body,
                      reference=reference, service=service, service_url=service_url, orcid_uri=orcid_uri,
                      orcid_side=key in ORCID_SIDE, done=key in DONE), ERRORS[key]


def service_name(names: Mapping[str, str], requester: str | None, metadata_name: str | None) -> str | None:
    """What the pages call the service: configured, from the SP's metadata, or its host; None
    when nothing names it (the page then says "This service" in its language)."""
    return names.get(requester or "") or metadata_name or urlsplit(requester or "").hostname or requester or None


def service_url(urls: Mapping[str, str], requester: str | None, noted: str | None) -> str | None:
    """Where the error pages send the researcher back to: configured per requester, else the
    site the request hint noted (the SP's own address)."""
    url = urls.get(requester or "") or noted
    return url if url and urlsplit(url).scheme in ("https", "http") and urlsplit(url).netloc else None


def site_of(url: str | None) -> str | None:
    """``https://host/`` of an http(s) URL (an SP's AssertionConsumerService from its
    metadata, an RP's registered redirect_uri): the service's site, to go back to; None for
    anything else (an app's custom scheme, say)."""
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}/" if parts.scheme in ("https", "http") and parts.netloc else None


def display_name(names: Any) -> str | None:
    """The English (or first) display name from SATOSA's ``requester_name`` list."""
    if not isinstance(names, list):
        return None
    texts = [(n.get("lang"), n.get("text")) for n in names if isinstance(n, dict) and n.get("text")]
    for lang, text in texts:
        if lang == "en":
            return str(text)
    return str(texts[0][1]) if texts else None
