"""Prometheus metrics of the plugin, and the small exporter that serves them.

What is counted (all names start with ``satosa_orcid_``)::

    hops_started_total{kind}                 interstitial shown / browser sent to ORCID
    hops_completed_total{kind}               linked_now | pending_confirmed
    hops_denied_total{choice}                not_now | never | cancel (the researcher said no)
    hops_failed_total{reason}                the error code (orcid_unavailable, invalid_id_token, ...)
    fast_path_releases_total{reason}         linked | asserted_by_trusted_idp (no ORCID call)
    logins_total{outcome}                    every login the micro-service finished, by outcome
    orcid_request_seconds{endpoint,method,status}   ORCID call latency (status "none": no answer)
    sync_items_total{result}                 affiliation sync results (posted, updated, parked, ...)
    tokens_revoked_total{reason,result}      tokens no link holds, revoked at ORCID (result: revoked,
                                             queued, retried, abandoned, lost; reason: link_failed,
                                             conflict, relinked, switched, moved, pending_*, connect_*)
    outbox_items{status}, outbox_oldest_waiting_seconds, links{status}, database_up
                                             read from the database at scrape time

Recording is always on and costs a dictionary lookup; nothing is *served* unless an operator
starts the exporter: ``satosa-orcid metrics serve --port 9100`` (a separate port, never the
proxy's own), optionally protected by a bearer token. Under gunicorn every worker is its own
process, so set ``PROMETHEUS_MULTIPROC_DIR`` (an empty directory, wiped at start; the image's
entrypoint does this) before the workers start: each worker then writes its samples there and
the exporter adds them up.

Label values are always from small fixed sets (outcome strings, error codes, ORCID endpoint
names, HTTP status codes): never a user, an iD or a URL.
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import threading
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, REGISTRY, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
TOKEN_ENV = "SATOSA_ORCID_METRICS_TOKEN"
_LABEL = re.compile(r"[^a-z0-9_.]+")
_MAX_LABEL = 48

HOPS_STARTED = Counter("satosa_orcid_hops_started_total", "ORCID hops started (interstitial shown or redirect to ORCID)",
                       ["kind"])
HOPS_COMPLETED = Counter("satosa_orcid_hops_completed_total", "Hops that ended with a verified, stored ORCID iD",
                         ["kind"])
HOPS_DENIED = Counter("satosa_orcid_hops_denied_total", "Hops the researcher declined", ["choice"])
HOPS_FAILED = Counter("satosa_orcid_hops_failed_total", "Hops that failed, by error code", ["reason"])
FAST_PATH = Counter("satosa_orcid_fast_path_releases_total", "Logins that released a stored iD without calling ORCID",
                    ["reason"])
USER_KEY_PROBLEMS = Counter(
    "satosa_orcid_user_key_problems_total",
    "Logins whose user key failed a check (scope not in the IdP's shibmd:Scope, no scope, unknown scopes, no "
    "issuer), by problem and action (refused: no lookup, no hop; warned: scope_check warn)", ["problem", "action"])
LOGINS = Counter("satosa_orcid_logins_total", "Logins the micro-service finished, by outcome", ["outcome"])
ORCID_SECONDS = Histogram(
    "satosa_orcid_orcid_request_seconds", "Latency of requests to ORCID, by endpoint, method and HTTP status",
    ["endpoint", "method", "status"], buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
SYNC_ITEMS = Counter("satosa_orcid_sync_items_total", "Affiliation sync results, by result", ["result"])
TOKENS_REVOKED = Counter("satosa_orcid_tokens_revoked_total",
                         "ORCID tokens no link holds, by why they were given up and what became of the revoke",
                         ["reason", "result"])

COMPLETED_OUTCOMES = frozenset({"linked_now", "pending_confirmed"})
FAST_PATH_OUTCOMES = frozenset({"linked", "asserted_by_trusted_idp"})


def _label(value: Any) -> str:
    text = _LABEL.sub("_", str(value).lower())[:_MAX_LABEL].strip("_")
    return text or "unknown"


def record(event: str, value: str) -> None:
    """Count one event of the micro-service. Never raises (metrics must not break a login).

    ``hop_started`` (kind), ``outcome`` (the outcome of ``_continue``), ``denied`` (choice),
    ``failed`` (error code).
    """
    try:
        v = _label(value)
        if event == "outcome":
            LOGINS.labels(outcome=v).inc()
            if v in COMPLETED_OUTCOMES:
                HOPS_COMPLETED.labels(kind=v).inc()
            elif v in FAST_PATH_OUTCOMES:
                FAST_PATH.labels(reason=v).inc()
        elif event == "hop_started":
            HOPS_STARTED.labels(kind=v).inc()
        elif event == "denied":
            HOPS_DENIED.labels(choice=v).inc()
        elif event == "failed":
            HOPS_FAILED.labels(reason=v).inc()
        else:
            log.debug("metrics: unknown event %r", event)
    except Exception:  # pragma: no cover - a broken metrics directory must not end a login
        log.debug("metrics: could not record %s", event, exc_info=True)


def observe_orcid_request(endpoint: str, method: str, status: int | None, seconds: float) -> None:
    """``OrcidClient(observer=...)``: one sample per request to ORCID."""
    try:
        ORCID_SECONDS.labels(endpoint=_label(endpoint), method=_label(method),
                             status=str(status) if status is not None else "none").observe(seconds)
    except Exception:  # pragma: no cover
        log.debug("metrics: could not observe an ORCID request", exc_info=True)


def record_user_key_problem(problem: str, action: str) -> None:
    """A login's user key failed a check (``policy.check_user_key``): ``action`` is ``refused``
    or ``warned``. Never raises."""
    try:
        USER_KEY_PROBLEMS.labels(problem=_label(problem), action=_label(action)).inc()
    except Exception:  # pragma: no cover
        log.debug("metrics: could not record a user key problem", exc_info=True)


def record_revocation(reason: str, result: str) -> None:
    """One token given up: ``result`` is ``revoked`` (ORCID confirmed), ``queued`` (the revoke
    failed and a retry is stored), ``retried`` (a queued one failed again), ``abandoned`` (given
    up after the last attempt) or ``lost`` (neither ORCID nor the database answered: alert on it)."""
    try:
        TOKENS_REVOKED.labels(reason=_label(reason), result=_label(result)).inc()
    except Exception:  # pragma: no cover
        log.debug("metrics: could not record a revocation", exc_info=True)


def record_sync_report(report: Any) -> None:
    """``SyncWorker.run_forever(on_report=record_sync_report)``: add one report's counts."""
    counts = report.as_dict() if hasattr(report, "as_dict") else dict(report)
    for result, count in counts.items():
        if result == "tokens_revoked":  # not outbox items: counted in tokens_revoked_total
            continue
        if isinstance(count, int) and count > 0:
            SYNC_ITEMS.labels(result=_label(result)).inc(count)


# --- the database at scrape time ------------------------------------------------------------
class DatabaseCollector:
    """Gauges read from the database when Prometheus scrapes: link counts, outbox depth and
    the age of the oldest waiting item, and whether the database answers at all. ``admin`` is
    the :class:`~satosa_orcid_plugin.services.AdminService` (``health``, ``stats``,
    ``sync_status``)."""

    def __init__(self, admin: Any) -> None:
        self.admin = admin

    def describe(self) -> Iterable[Any]:
        return []  # collected lazily: never touch the database at registration

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("satosa_orcid_database_up", "1 when the link store answers")
        ok = bool(self.admin.health())
        up.add_metric([], 1.0 if ok else 0.0)
        yield up
        if not ok:
            return
        try:
            stats = self.admin.stats()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail
            log.warning("metrics: link counts unavailable: %s", type(exc).__name__)
        else:
            links = GaugeMetricFamily("satosa_orcid_links", "Links in the store, by status", labels=["status"])
            for status, key in (("active", "linked"), ("revoked", "revoked"), ("unlinked", "unlinked")):
                links.add_metric([status], float(stats.get(key, 0)))
            yield links
        try:
            summary = self.admin.sync_status(parked_limit=0)
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics: outbox summary unavailable: %s", type(exc).__name__)
            return
        depth = GaugeMetricFamily("satosa_orcid_outbox_items", "Affiliation outbox items, by status", labels=["status"])
        for status, count in summary["counts"].items():
            depth.add_metric([status], float(count))
        yield depth
        age = GaugeMetricFamily("satosa_orcid_outbox_oldest_waiting_seconds",
                                "Age of the oldest queued or retrying outbox item (0 when none)")
        age.add_metric([], float(summary["oldest_waiting_seconds"] or 0.0))
        yield age


class _ThisProcess:
    """This process's default registry, inside another registry (no describe: no name clash)."""

    def collect(self) -> Iterable[Any]:
        return REGISTRY.collect()


def registry_for_export(admin: Any = None) -> CollectorRegistry:
    """The registry the exporter serves: every gunicorn worker's samples (multi-process mode)
    or this process's, plus the database gauges when the admin service is given."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_ThisProcess())
    if admin is not None:
        registry.register(DatabaseCollector(admin))
    return registry


def metrics_app(registry: CollectorRegistry, token: str | None = None) -> Callable:
    """A WSGI app: ``GET /metrics`` (with ``Authorization: Bearer <token>`` when a token is set)."""
    expected = token.encode() if token else None

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Type", "text/plain")])
            return [b"method not allowed\n"]
        if expected is not None:
            auth = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, given = auth.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
                start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="metrics"'),
                                                    ("Content-Type", "text/plain")])
                return [b"unauthorized\n"]
        body = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    return app


class MetricsServer:
    """The exporter on its own port, in a daemon thread. ``stop()`` closes it."""

    def __init__(self, host: str, port: int, app: Callable) -> None:
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        from prometheus_client.exposition import ThreadingWSGIServer

        class _Quiet(WSGIRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

        self.server = make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_Quiet)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="satosa-orcid-metrics", daemon=True)

    def start(self) -> "MetricsServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(port: int, host: str = "127.0.0.1", *, token: str | None = None, admin: Any = None) -> MetricsServer:
    """Start the exporter; returns the running server."""
    return MetricsServer(host, port, metrics_app(registry_for_export(admin), token)).start()


def reset_multiproc_dir(path: str) -> None:
    """Empty the multi-process directory (before the workers start; stale files double-count)."""
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.unlink(os.path.join(path, name))


def mark_process_dead(pid: int) -> None:
    """gunicorn ``child_exit``: drop a dead worker's live gauges (multi-process mode)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


__all__ = [
    "record", "observe_orcid_request", "record_revocation", "record_sync_report", "DatabaseCollector", "registry_for_export",
    "metrics_app", "serve", "MetricsServer", "reset_multiproc_dir", "mark_process_dead",
]
