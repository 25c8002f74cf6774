"""The few lines the demo IdP and SP share: a werkzeug URL map dispatching to ``_on_<endpoint>``
methods, and small self-contained HTML pages."""
from __future__ import annotations

import html

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map
from werkzeug.wrappers import Request, Response


class PageApp:
    """Subclasses set ``url_map`` and ``style`` and define ``_on_<endpoint>(request)``."""

    url_map: Map
    style: str = ""

    def __call__(self, environ, start_response):
        request = Request(environ)
        adapter = self.url_map.bind_to_environ(environ)
        try:
            endpoint, _ = adapter.match()
            response = getattr(self, f"_on_{endpoint}")(request)
        except HTTPException as exc:
            response = exc.get_response(environ)
        return response(environ, start_response)

    def _html(self, title: str, body: str, status: int = 200) -> Response:
        page = (
            "<!doctype html><html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><title>{html.escape(title)}</title>"
            f"<style>{self.style}</style></head><body>{body}</body></html>"
        )
        return Response(page, status=status, mimetype="text/html")
