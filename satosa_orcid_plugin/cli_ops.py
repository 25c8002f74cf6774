"""Operations commands of ``satosa-orcid``: ``metrics serve`` and ``health``.

    satosa-orcid [--config proxy_conf.yaml] metrics serve --port 9100 [--host 0.0.0.0] [--token-file F]
    satosa-orcid health [--url http://127.0.0.1:8000/orcid/health] [--detail]

``metrics serve`` is the only way metrics leave the process: off unless started, on its own
port (never the proxy's), optionally behind a bearer token (``--token-file`` or
``$SATOSA_ORCID_METRICS_TOKEN``). Under gunicorn it serves the samples every worker wrote
to ``$PROMETHEUS_MULTIPROC_DIR``; with a database (``--config`` or
``$SATOSA_ORCID_DATABASE_URL``) it adds link counts and the affiliation outbox depth and age.

``health`` probes liveness (the image's ``HEALTHCHECK``: the process serves requests, whatever
the database does); ``health --detail`` probes ``<url>/detail`` and prints the database state,
exiting 1 when it is degraded (for scripts and alerts, never for routing). Without ``--url``
(or ``$SATOSA_ORCID_HEALTH_URL``) it probes this host's gunicorn as the image starts it: the
port of ``$GUNICORN_BIND`` on loopback, over https when gunicorn has a certificate
(``$GUNICORN_CERTFILE``, or ``--certfile`` in ``$GUNICORN_CMD_ARGS``), whose name is the public
host's and not 127.0.0.1's, so that loopback probe does not verify it.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from .cli_base import Group
from .ops.signals import stop_event_on_signals

HEALTH_URL_ENV = "SATOSA_ORCID_HEALTH_URL"
DEFAULT_HEALTH_URL = "http://127.0.0.1:8000/orcid/health"
HEALTH_PATH = "/orcid/health"


def local_health_url(environ: "os._Environ[str] | dict[str, str]") -> tuple[str, bool]:
    """The health URL of the gunicorn this container runs, and whether it is served over TLS.

    >>> local_health_url({"GUNICORN_BIND": "0.0.0.0:8443", "GUNICORN_CMD_ARGS": "--certfile /c.pem --keyfile /k.pem"})
    ('https://127.0.0.1:8443/orcid/health', True)
    >>> local_health_url({})
    ('http://127.0.0.1:8000/orcid/health', False)
    """
    import shlex

    binds = [b.strip() for b in environ.get("GUNICORN_BIND", "0.0.0.0:8000").split(",") if b.strip()]
    port = "8000"
    for bind in binds:
        if not bind.startswith(("unix:", "fd://")):
            port = bind.rsplit(":", 1)[1] if ":" in bind else "8000"
            break
    try:
        args = shlex.split(environ.get("GUNICORN_CMD_ARGS", ""))
    except ValueError:
        args = []
    tls = bool(environ.get("GUNICORN_CERTFILE")) or any(a == "--certfile" or a.startswith("--certfile=") for a in args)
    return f"{'https' if tls else 'http'}://127.0.0.1:{port}{HEALTH_PATH}", tls




@click.group("metrics", cls=Group)
def metrics_group() -> None:
    """Prometheus metrics (off unless served)."""


@metrics_group.command("serve")
@click.option("--port", type=int, required=True, help="Port of the metrics endpoint (not the proxy's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="File holding a bearer token scrapers must send (or $SATOSA_ORCID_METRICS_TOKEN).")
@click.option("--no-database", is_flag=True, help="Do not read link and outbox gauges from the database.")
@click.pass_obj
def metrics_serve(obj: Any, port: int, host: str, token_file: str | None, no_database: bool) -> None:
    """Serve /metrics until SIGTERM or Ctrl-C."""
    from . import metrics

    token = None
    if token_file:
        token = open(token_file, encoding="utf-8").read().strip()
    token = token or os.environ.get(metrics.TOKEN_ENV) or None
    if not os.environ.get(metrics.MULTIPROC_ENV):
        click.echo(f"warning: {metrics.MULTIPROC_ENV} is not set: only this process's metrics are served "
                   "(set it for the proxy's gunicorn workers and here)", err=True)
    admin = obj.admin() if not no_database and obj.has_database() else None
    try:
        server = metrics.serve(port, host, token=token, admin=admin)
    except OSError as exc:
        click.echo(f"satosa-orcid: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    stop = stop_event_on_signals()
    click.echo(f"metrics on http://{host}:{server.port}/metrics"
               + (" (bearer token required)" if token else ""), err=True)
    stop.wait()
    server.stop()


@click.command("health")
@click.option("--url", default=None, help=f"Health URL (default ${HEALTH_URL_ENV}, else this host's gunicorn: {DEFAULT_HEALTH_URL}, "
                   "https when it has a certificate).")
@click.option("--timeout", type=float, default=5.0, show_default=True)
@click.option("--insecure", is_flag=True, help="Do not verify the TLS certificate (a proxy with its own cert).")
@click.option("--detail", is_flag=True,
              help="Probe <url>/detail (the database state) and print it; exit 1 when degraded.")
def health(url: str | None, timeout: float, insecure: bool, detail: bool) -> None:
    """Exit 0 when the proxy's health endpoint answers 200 (liveness: the container HEALTHCHECK)."""
    import requests

    url = url or os.environ.get(HEALTH_URL_ENV)
    if not url:
        url, loopback_tls = local_health_url(os.environ)
        insecure = insecure or loopback_tls  # our own certificate, probed on loopback
    if detail:
        url = url.rstrip("/") + "/detail"
    try:
        response = requests.get(url, timeout=timeout, verify=not insecure, allow_redirects=False)
    except requests.RequestException as exc:
        click.echo(f"unhealthy: {url}: {type(exc).__name__}", err=True)
        sys.exit(1)
    if response.status_code != 200:
        click.echo(f"unhealthy: {url}: HTTP {response.status_code} {response.text[:200]}", err=True)
        sys.exit(1)
    click.echo(response.text.strip() if detail else "healthy")


def register(main_group: click.Group) -> None:
    """Add ``metrics`` and ``health`` to the ``satosa-orcid`` group."""
    main_group.add_command(metrics_group)
    main_group.add_command(health)


__all__ = ["register", "metrics_group", "health"]
