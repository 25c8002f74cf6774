"""The proxy for gunicorn in the throughput family: ``bench.wsgi_app:app``.

Exactly what ``satosa.wsgi:app`` does (``make_app(SATOSAConfig($SATOSA_CONFIG))`` with the
working directory in proxy_conf/), except that ``BENCH_WITH_PLUGIN=0`` removes the plugin's
entries from MICRO_SERVICES (``orcid`` and its companion ``orcid_hint``: every module of
``satosa_orcid_plugin``): the "without the plugin" variant of the same configuration.
"""
import os

from satosa.proxy_server import make_app
from satosa.satosa_config import SATOSAConfig


def _is_plugin_service(entry):  # the same test as bench.common.is_plugin_service, kept import-free
    return entry.get("name") == "orcid" or str(entry.get("module", "")).startswith("satosa_orcid_plugin.")


config = SATOSAConfig(os.environ.get("SATOSA_CONFIG", "proxy_conf.yaml"))
if os.environ.get("BENCH_WITH_PLUGIN", "1") == "0":
    config["MICRO_SERVICES"] = [m for m in config["MICRO_SERVICES"] or [] if not _is_plugin_service(m)]
app = make_app(config)
