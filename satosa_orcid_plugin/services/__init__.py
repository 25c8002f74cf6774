"""The services, one per caller: :class:`LoginService` for the micro-service,
:class:`AdminService` for the CLI and the metrics exporter, :class:`SyncWorker` for the
affiliation worker. Each is built by :mod:`satosa_orcid_plugin.wiring`; none knows SATOSA.
"""
from __future__ import annotations

from .admin import AdminService
from .login import ConnectResult, ConnectStart, HopStart, LoginService
from .revocation import TokenRevoker
from .sync import SyncReport, SyncWorker

__all__ = ["AdminService", "LoginService", "SyncWorker", "SyncReport", "HopStart", "ConnectStart", "ConnectResult", "TokenRevoker"]
