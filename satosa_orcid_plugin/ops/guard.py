"""A WSGI middleware in front of SATOSA's app (the image's ``satosa_orcid_plugin.ops.wsgi:app``).

It limits request bodies (small for the plugin's own endpoints) and rejects the inputs SATOSA
itself fails on *before* routing (a body that is not UTF-8, an ``application/json`` body that
is not JSON, a POST without ``Content-Type``, a bad ``Content-Length``): without it those end
as 500s in SATOSA (``satosa/proxy_server.py``: ``unpack_post``), not in the plugin.
"""
from __future__ import annotations

import json
import os
from io import BytesIO
from typing import Callable, Iterable

PLUGIN_MAX_BODY = 16 * 1024  # the interstitial's and confirmation's forms are a few hundred bytes
DEFAULT_MAX_BODY = 1024 * 1024  # SAML responses with many attributes stay far below this
MAX_QUERY = 8 * 1024
MAX_BODY_ENV = "SATOSA_ORCID_MAX_BODY"


class RequestGuard:
    """WSGI middleware: body and query limits, and the inputs SATOSA fails on before routing.

    ``plugin_prefixes`` are the micro-service names (``orcid``): their endpoints accept at most
    ``plugin_max_body`` bytes; everything else ``max_body`` (SAML responses, OIDC requests).
    """

    def __init__(self, app: Callable, *, plugin_prefixes: Iterable[str] = ("orcid",),
                 plugin_max_body: int = PLUGIN_MAX_BODY, max_body: int | None = None, max_query: int = MAX_QUERY,
                 state_cookie: str = "SATOSA_STATE") -> None:
        self.app = app
        self.state_cookie = state_cookie
        self.prefixes = frozenset(p.strip("/") for p in plugin_prefixes)
        self.plugin_max_body = plugin_max_body
        self.max_body = max_body if max_body is not None else int(os.environ.get(MAX_BODY_ENV, DEFAULT_MAX_BODY))
        self.max_query = max_query

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        problem = self._check(environ)
        if problem is not None:
            status, message = problem
            body = f"{message}\n".encode()
            start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                                    ("Cache-Control", "no-store")])
            return [body]
        self._drop_empty_state_cookie(environ)
        return self.app(environ, start_response)

    def _drop_empty_state_cookie(self, environ: dict) -> None:
        """SATOSA 8.6 fails with a 500 on an *empty* state cookie (``SATOSA_STATE=``) on every
        endpoint (``satosa/base.py``: ``_load_state``); without it SATOSA starts a fresh state, as
        for no cookie at all."""
        header = environ.get("HTTP_COOKIE")
        if not header or self.state_cookie not in header:
            return
        from http.cookies import CookieError, SimpleCookie

        try:
            morsel = SimpleCookie(header).get(self.state_cookie)
        except CookieError:
            morsel = None
        if morsel is not None and morsel.value == "":
            parts = [p for p in header.split(";") if p.partition("=")[0].strip() != self.state_cookie]
            environ["HTTP_COOKIE"] = ";".join(parts)

    def _check(self, environ: dict) -> tuple[str, str] | None:
        raw = str(environ.get("CONTENT_LENGTH") or "").strip()
        if raw and not raw.isdigit():
            return "400 Bad Request", "Bad Request: invalid Content-Length"
        length = int(raw or 0)
        first = str(environ.get("PATH_INFO") or "").lstrip("/").split("/", 1)[0]
        limit = self.plugin_max_body if first in self.prefixes else self.max_body
        if length > limit:
            return "413 Content Too Large", "Request body too large"
        if len(environ.get("QUERY_STRING") or "") > self.max_query:
            return "414 URI Too Long", "Request URI too long"
        if str(environ.get("REQUEST_METHOD") or "").upper() == "POST":
            environ.setdefault("CONTENT_TYPE", "")  # SATOSA reads environ["CONTENT_TYPE"] unguarded
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                return "400 Bad Request", "Bad Request: the body is not UTF-8"
            if "application/json" in str(environ.get("CONTENT_TYPE")):
                try:
                    json.loads(text)
                except ValueError:
                    return "400 Bad Request", "Bad Request: the body is not JSON"
        return None


__all__ = ["RequestGuard", "PLUGIN_MAX_BODY", "DEFAULT_MAX_BODY", "MAX_QUERY", "MAX_BODY_ENV"]
