"""Two probes, because an unreachable database does not stop logins (``on_error`` decides, the
login completes without the iD) and so must never take an instance out of a load balancer:

``GET <name>/health`` (liveness)
    200 ``{"status": "ok"}`` whenever this process serves requests. It asks nothing else (no
    database, no ORCID), so it stays fast while the database hangs. The image's ``HEALTHCHECK``
    (``satosa-orcid health``), a load balancer and a Kubernetes liveness/readiness probe use it.
``GET <name>/health/detail`` (database state, for dashboards and alerts)
    200 ``{"status": "ok", "database": "ok"}`` when the link store answers within
    :data:`CHECK_TIMEOUT_SECONDS`, else 503 ``{"status": "degraded", "database":
    "unreachable"}`` (logins still complete, without stored iDs). Alert on it, or on the
    exporter's ``satosa_orcid_database_up``; never route traffic by it.

ORCID itself is deliberately not checked: an ORCID outage is handled per login (``on_error``).
:func:`health_endpoint` only builds the endpoint; ``OrcidConnect.register_endpoints`` registers
it for both paths with a zero-argument callable that asks the link store.
"""
from __future__ import annotations

import json
import logging
import threading
from typing import Any, Callable

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3.0
DETAIL_SUFFIX = "/health/detail"


def database_ok(check: Callable[[], bool], timeout: float = CHECK_TIMEOUT_SECONDS) -> bool:
    """``check()``, but never waiting longer than ``timeout`` seconds."""
    result: list[bool] = []

    def run() -> None:
        try:
            result.append(bool(check()))
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            result.append(False)

    worker = threading.Thread(target=run, name="satosa-orcid-health", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _json(body: dict[str, str], ok: bool, head: bool) -> Any:
    from satosa.response import Response

    return Response("" if head else json.dumps(body), status="200 OK" if ok else "503 Service Unavailable",
                    content="application/json", headers=[("Cache-Control", "no-store")])


def liveness_response(*, head: bool = False) -> Any:
    return _json({"status": "ok"}, True, head)


def health_response(ok: bool, *, head: bool = False) -> Any:
    """The detail answer: the database state."""
    return _json({"status": "ok" if ok else "degraded", "database": "ok" if ok else "unreachable"}, ok, head)


def health_endpoint(database_check: Callable[[], bool]) -> Callable[[Any], Any]:
    """The endpoint for ``^<name>/health(/detail)?$``: liveness on ``<name>/health`` (asks
    nothing), the database state on ``<name>/health/detail``, where ``database_check()`` says
    whether the link store answers (called on every request, bounded by
    :data:`CHECK_TIMEOUT_SECONDS`)."""

    def health(context: Any) -> Any:
        from satosa.response import Response

        method = (getattr(context, "request_method", None) or "GET").upper()
        if method not in ("GET", "HEAD"):
            return Response(json.dumps({"error": "method not allowed"}), status="405 Method Not Allowed",
                            content="application/json", headers=[("Allow", "GET, HEAD")])
        head = method == "HEAD"
        if not str(getattr(context, "path", None) or "").rstrip("/").endswith(DETAIL_SUFFIX):
            return liveness_response(head=head)
        ok = database_ok(database_check)
        if not ok:
            log.warning("health: the link store does not answer")
        return health_response(ok, head=head)

    health.__name__ = "health"
    return health


__all__ = ["health_endpoint", "database_ok", "health_response", "liveness_response", "DETAIL_SUFFIX"]
