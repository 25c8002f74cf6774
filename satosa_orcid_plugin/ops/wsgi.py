"""The WSGI entry the image runs: SATOSA's own app behind :class:`~.guard.RequestGuard`.

    gunicorn -c python:satosa_orcid_plugin.ops.gunicorn_conf satosa_orcid_plugin.ops.wsgi:app

Like ``satosa.wsgi:app`` it loads ``$SATOSA_CONFIG`` (default ``proxy_conf.yaml``) relative to
the working directory (the gunicorn config changes into the file's directory). The app is
built on first access of ``app``, so importing this module (tests, tools) loads nothing.
"""
from __future__ import annotations

import os
import warnings
from typing import Any, Callable

from .discovery import plugin_names
from .guard import RequestGuard


# pysaml2 imports a cipher mode that cryptography deprecates: two lines of noise at every
# start, nothing a deployment can act on.
warnings.filterwarnings("ignore", message=".*CFB has been moved.*")

try:  # gunicorn prints an AppImportError as its one line and stops, without a traceback
    from gunicorn.errors import AppImportError as _LoadError
except ImportError:  # pragma: no cover - gunicorn is a dependency
    _LoadError = RuntimeError  # type: ignore[misc,assignment]


class StartupError(_LoadError):  # type: ignore[misc,valid-type]
    """The configuration cannot work: one line per mistake (``satosa-orcid: ...``)."""


def create_app(satosa_config: Any = None) -> Callable:
    """SATOSA's WSGI app for ``satosa_config`` (a ``SATOSAConfig``; default: ``$SATOSA_CONFIG``),
    wrapped in the request guard for the plugin's endpoints.

    From ``$SATOSA_CONFIG`` the configuration is checked first (:func:`.checks.startup_problems`):
    a mistake that would end in SATOSA's traceback raises :class:`StartupError` naming it."""
    from satosa.proxy_server import make_app
    from satosa.satosa_config import SATOSAConfig

    if satosa_config is None:
        from pathlib import Path

        from .checks import startup_problems

        path = os.environ.get("SATOSA_CONFIG", "proxy_conf.yaml")
        problems = startup_problems(Path(path))
        if problems:
            raise StartupError("\n".join(f"satosa-orcid: {p}" for p in problems))
        satosa_config = SATOSAConfig(path)
    satosa_app = make_app(satosa_config)
    advertise_pkce(satosa_app)
    return RequestGuard(satosa_app, plugin_prefixes=plugin_names(satosa_config),
                        state_cookie=str(satosa_config.get("COOKIE_STATE_NAME") or "SATOSA_STATE"))


def advertise_pkce(satosa_app: Any) -> None:
    """Copy ``provider.code_challenge_methods_supported`` of each OpenID Connect frontend's
    configuration into its discovery document (RFC 8414 section 2).

    pyop verifies the ``code_verifier`` at the token endpoint whenever the authorization
    request carried a ``code_challenge`` (RFC 7636 section 4.6), but SATOSA builds the
    discovery document from a fixed set of ``provider`` keys, so RPs that look for PKCE
    support there (Authlib, oidc-client) would not find it. The frontend module stays SATOSA's.
    """
    app, depth = satosa_app, 0
    while not hasattr(app, "module_router") and hasattr(app, "app") and depth < 8:  # make_app's middlewares
        app, depth = app.app, depth + 1
    router = getattr(app, "module_router", None)
    for entry in (getattr(router, "frontends", None) or {}).values():
        frontend = entry.get("instance")
        provider = getattr(frontend, "provider", None)
        methods = ((getattr(frontend, "config", None) or {}).get("provider") or {}).get("code_challenge_methods_supported")
        if provider is not None and methods:
            provider.configuration_information["code_challenge_methods_supported"] = [str(m) for m in methods]


_app: Callable | None = None


def __getattr__(name: str) -> Any:
    global _app
    if name == "app":
        if _app is None:
            _app = create_app()
        return _app
    raise AttributeError(name)


__all__ = ["create_app", "StartupError"]  # and "app", built on first access
