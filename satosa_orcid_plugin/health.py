"""``GET <name>/health``: is this proxy instance able to serve ORCID logins?

200 ``{"status": "ok", "database": "ok"}`` when the link store answers, else 503 with
``"database": "unreachable"``. ORCID itself is deliberately not checked: an ORCID outage is
handled per login (``on_error``) and must not take the proxy out of a load balancer.
The check is bounded in time (a database that hangs is reported as unreachable).

:func:`health_endpoint` is called once from ``OrcidConnect.register_endpoints`` (start-up),
so it also runs the start-up checks (the state cookie size estimate).
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3.0


def database_ok(store: Any, timeout: float = CHECK_TIMEOUT_SECONDS) -> bool:
    """``store.db.health()``, but never waiting longer than ``timeout`` seconds."""
    result: list[bool] = []

    def check() -> None:
        try:
            result.append(bool(store.db.health()))
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            result.append(False)

    worker = threading.Thread(target=check, name="satosa-orcid-health", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def health_response(ok: bool, *, head: bool = False) -> Any:
    from satosa.response import Response

    body = json.dumps({"status": "ok" if ok else "unavailable", "database": "ok" if ok else "unreachable"})
    return Response("" if head else body, status="200 OK" if ok else "503 Service Unavailable",
                    content="application/json", headers=[("Cache-Control", "no-store")])


def health_endpoint(micro_service: Any) -> Callable[[Any], Any]:
    """The bound endpoint for ``^<name>/health$`` of an ``OrcidConnect`` instance."""
    from .hardening import warn_at_startup

    warn_at_startup(micro_service.name, micro_service.config)
    store = micro_service.service.store

    def health(context: Any) -> Any:
        from satosa.response import Response

        method = (getattr(context, "request_method", None) or "GET").upper()
        if method not in ("GET", "HEAD"):
            return Response(json.dumps({"error": "method not allowed"}), status="405 Method Not Allowed",
                            content="application/json", headers=[("Allow", "GET, HEAD")])
        ok = database_ok(store)
        if not ok:
            log.warning("health: the link store does not answer")
        return health_response(ok, head=method == "HEAD")

    health.__name__ = "health"
    return health


__all__ = ["health_endpoint", "database_ok", "health_response"]
