"""The one place objects are built: the store, the ORCID client and the service each role needs.

Every role gets the same store set-up (token cipher, hashed user keys, instance name) and the
same ORCID client set-up (the latency observer; an HTTP session from
:func:`~satosa_orcid_plugin.orcid_client.http_session`)::

    login = login_service(config, instance="orcid")     # the proxy (OrcidConnect)
    admin = admin_service(config)                        # satosa-orcid links/decisions/keys/...
    worker = sync_worker(config, owner="host:pid")       # satosa-orcid sync run
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any

from .config import PluginConfig, StoreSettings
from .errors import ConfigError, StoreError
from .orcid_client import OrcidClient, http_session
from .services import AdminService, LoginService, SyncWorker, TokenRevoker
from .store import HEAD_REVISION, Budget, Store
from .tokens import TokenCipher

log = logging.getLogger(__name__)


def build_store(settings: StoreSettings, *, instance: str | None = None, upgrade: bool = False,
                login: bool = False, existing_issuer: str | None = None) -> Store:
    """The store of ``settings``; with ``upgrade`` its schema is migrated first (the proxy on
    SQLite by default: ``store.auto_upgrade``; ``existing_issuer``: see
    ``Database.upgrade``). ``login``: the proxy's time budget (``store.timeouts.login``), else
    the CLI's and the worker's (``background``)."""
    secret = settings.user_key_secret.encode() if settings.user_key_secret else None
    t = settings.timeouts
    budget = Budget(connect=t.connect, call=t.login if login else t.background)
    store = Store.from_url(settings.database_url, TokenCipher.from_keys(settings.token_keys),
                           user_key_secret=secret, instance=instance, budget=budget)
    if upgrade:
        store.db.upgrade(existing_issuer=existing_issuer)
    return store


def build_client(config: PluginConfig, *, worker: bool = False) -> OrcidClient:
    """The ORCID client with the latency observer. The worker's session has no transport
    retries: the worker owns its retries (backoff, the shared rate limit)."""
    from .metrics import observe_orcid_request

    session = http_session(transport_retries=not worker,
                           user_agent="satosa-orcid-plugin (affiliation sync)" if worker else "satosa-orcid-plugin",
                           proxy=config.orcid.proxy, ca_bundle=config.orcid.ca_bundle)
    return OrcidClient(config.orcid, session=session, observer=observe_orcid_request)


def auto_upgrade(settings: StoreSettings) -> bool:
    """Whether the schema is migrated on opening: ``store.auto_upgrade``, by default on SQLite
    (where the proxy owns the file; PostgreSQL: ``satosa-orcid db upgrade``)."""
    return settings.database_url.startswith("sqlite") if settings.auto_upgrade is None else settings.auto_upgrade


def login_service(config: PluginConfig, *, instance: str | None = None,
                  existing_issuer: str | None = None) -> LoginService:
    """The proxy's service. The schema is migrated at start-up when :func:`auto_upgrade` says so;
    links stored before issuer binding get ``existing_issuer`` (default: ``config.existing_issuer``)."""
    if existing_issuer is None:
        existing_issuer = config.existing_issuer
    return LoginService(config, build_client(config), build_store(config.store, instance=instance,
                                                                  upgrade=auto_upgrade(config.store), login=True,
                                                                  existing_issuer=existing_issuer))


def admin_service(config: PluginConfig | None, *, store_settings: StoreSettings | None = None,
                  instance: str = "cli", migrate: bool = True) -> AdminService:
    """The CLI's service: from the plugin configuration, or (store-only commands) from
    ``store_settings`` alone, without an ORCID client. With ``migrate`` the store is treated as
    the proxy treats it (:func:`auto_upgrade`: a SQLite file is migrated), and a schema left
    behind is named with the command that fixes it instead of failing on a missing table."""
    settings = config.store if config is not None else store_settings
    if settings is None:
        raise ConfigError("store", "give the plugin configuration or the database settings")
    client = build_client(config) if config is not None else None
    existing_issuer = config.existing_issuer if config is not None else None
    store = build_store(settings, instance=instance, upgrade=migrate and auto_upgrade(settings),
                        existing_issuer=existing_issuer)
    if migrate and not auto_upgrade(settings):
        revision = store.db.schema_revision()
        if revision is None or revision < HEAD_REVISION:
            store.db.dispose()
            raise StoreError(f"the database schema is {'empty' if revision is None else 'at ' + revision}, "
                             f"this version needs {HEAD_REVISION}: run 'satosa-orcid db upgrade'")
    return AdminService(store, client, existing_issuer=existing_issuer)


def sync_worker(config: PluginConfig, *, owner: str | None = None, **sync_overrides: Any) -> SyncWorker:
    """The affiliation worker: the outbox, the shared rate limit in the database, and a client
    without transport retries. ``sync_overrides`` replace ``affiliations.sync`` settings
    (``lease_seconds``, ``batch_size``). ConfigError when no affiliations are configured."""
    settings = config.affiliations
    if settings is None:
        raise ConfigError("affiliations", "is not configured (or enabled: false); there is nothing to sync")
    if "/activities/update" not in config.orcid.scopes:
        log.warning("orcid.scopes lacks /activities/update: new links will not queue affiliations")
    sync = dataclasses.replace(settings.sync, **{k: v for k, v in sync_overrides.items() if v is not None})
    store = build_store(config.store, instance=owner)
    limiter = store.rate_limiter(rate=sync.rate_per_second, burst=sync.burst)
    client = build_client(config, worker=True)
    return SyncWorker(client, store.outbox, sync, limiter=limiter, owner=owner, revoker=TokenRevoker(client, store))


__all__ = ["build_store", "build_client", "auto_upgrade", "login_service", "admin_service", "sync_worker"]
