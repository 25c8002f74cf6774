"""gunicorn settings of the image (``gunicorn -c python:satosa_orcid_plugin.ops.gunicorn_conf``).

Environment (all optional): ``GUNICORN_BIND`` (``0.0.0.0:8000``), ``GUNICORN_WORKERS`` (4),
``GUNICORN_THREADS`` (4), ``GUNICORN_TIMEOUT`` (60 s: above the ORCID timeouts),
``GUNICORN_MAX_REQUESTS`` (2000) and ``GUNICORN_MAX_REQUESTS_JITTER`` (200): a worker is
replaced after that many requests plus a random 0..jitter, so memory a worker accumulates is
returned and the workers of an instance do not all restart at once (0 turns recycling off),
``SATOSA_CONFIG`` (its directory becomes the working directory, as SATOSA resolves relative
paths from there), ``PROMETHEUS_MULTIPROC_DIR`` (wiped at start; each worker writes its
metrics there), ``GUNICORN_CERTFILE``/``GUNICORN_KEYFILE`` (TLS between a front proxy and
gunicorn; ``satosa-orcid health`` then probes over https). Anything else: ``GUNICORN_CMD_ARGS`` (gunicorn reads it itself), e.g.
``--forwarded-allow-ips`` behind the front proxy. gunicorn never faces clients directly: a
buffering reverse proxy (docker/nginx.conf) sits in front of it.
"""
from __future__ import annotations

import os

bind = [b.strip() for b in os.environ.get("GUNICORN_BIND", "0.0.0.0:8000").split(",") if b.strip()]
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "20"))
keepalive = 5
# Recycle workers: a fresh worker after max_requests + randint(0, max_requests_jitter) requests
# (gunicorn's --max-requests / --max-requests-jitter). Logins in flight are unaffected: their
# state is in SATOSA's cookie, and the request id the backend checks too (ops/saml2_backend.py).
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "2000"))
max_requests_jitter = int(os.environ.get("GUNICORN_MAX_REQUESTS_JITTER", "200"))
if os.environ.get("GUNICORN_CERTFILE"):
    certfile = os.environ["GUNICORN_CERTFILE"]
    keyfile = os.environ.get("GUNICORN_KEYFILE") or None
chdir = os.path.dirname(os.path.abspath(os.environ.get("SATOSA_CONFIG", "proxy_conf.yaml")))

# Request size limits at the HTTP layer (the request line carries SAML HTTP-Redirect messages).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

# Access log with the path only: a query string can carry an ORCID authorization code.
accesslog = "-"
errorlog = "-"
# (the demo's gunicorns use the same: devstack/demo.py)
ACCESS_LOG_FORMAT = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'
access_log_format = ACCESS_LOG_FORMAT

# No control socket (newer gunicorns open one under $HOME, which a read-only container lacks).
control_socket_disable = True
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # heartbeat files off the (possibly slow, overlay) disk


def on_starting(server):  # noqa: ANN001 - gunicorn hook, in the master before any worker
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from satosa_orcid_plugin.metrics import reset_multiproc_dir

        reset_multiproc_dir(directory)


def child_exit(server, worker):  # noqa: ANN001 - gunicorn hook
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from satosa_orcid_plugin.metrics import mark_process_dead

        mark_process_dead(worker.pid)
