"""satosa_orcid_plugin: authenticated ORCID iDs for every service behind a SATOSA proxy.

The SATOSA micro-services are imported lazily so that the CLI, the store and the
emulator load without pulling in SATOSA's plugin machinery.
"""
from __future__ import annotations

from .orcid_id import OrcidId

__version__ = "0.1.0"
__all__ = ["OrcidConnect", "OrcidRequestHint", "OrcidId", "__version__"]


def __getattr__(name: str):
    if name in ("OrcidConnect", "OrcidRequestHint"):
        from . import microservice

        return getattr(microservice, name)
    raise AttributeError(name)
