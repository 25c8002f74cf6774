"""PostgreSQL connections in the proxy's pool: a connection reused at once costs the login no
extra round trip (no ping), while one the server has ended (a restart, a failover,
``pg_terminate_backend``) is noticed before use and replaced, so the login's lookup and the
link write that follows succeed as if nothing happened."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from pgschema import postgres_base_url

from satosa_orcid_plugin.orcid_id import OrcidId
from satosa_orcid_plugin.store import Budget, Store
from satosa_orcid_plugin.store import database
from satosa_orcid_plugin.tokens import TokenSet

pytestmark = pytest.mark.postgres

JOSIAH = OrcidId.parse("0000-0002-1825-0097")
TOKENS = TokenSet(access_token="access-token-of-the-test", refresh_token="refresh-token-of-the-test",
                  expires_at=datetime.now(timezone.utc) + timedelta(days=1), scope=("/authenticate",))


@pytest.fixture
def store(postgres_url, token_cipher):
    store = Store.from_url(postgres_url, token_cipher, budget=Budget(connect=2, call=2))  # the proxy's budget
    store.db.upgrade()
    yield store
    store.db.engine.dispose()


@pytest.fixture
def pings(store, monkeypatch):
    """Pings sent on checkout (the dialect's do_ping, as SQLAlchemy's pool_pre_ping sends it)."""
    sent: list[int] = []
    dialect = store.db.engine.dialect
    real = dialect.do_ping
    monkeypatch.setattr(dialect, "do_ping", lambda conn: (sent.append(1), real(conn))[1])
    return sent


def _backend_pid(store: Store) -> int:
    return store.db.first(sa.select(sa.func.pg_backend_pid()))[0]


def _admin_scalar(sql: str, **params: object) -> object:
    """One statement on a connection of its own (not the store's pool), as a DBA would run it."""
    engine = sa.create_engine(postgres_base_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as admin:
            return admin.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def test_a_connection_reused_at_once_is_not_pinged(store, pings):
    store.links.get_active("alice@example.org")  # the pool's first connection: fresh, never pinged
    pid = _backend_pid(store)
    for _ in range(20):
        assert store.links.get_active("alice@example.org") is None
    assert pings == []
    assert _backend_pid(store) == pid  # the same connection all along


def test_a_connection_the_server_ended_is_replaced_before_the_login_uses_it(store, pings):
    store.links.get_active("alice@example.org")
    pid = _backend_pid(store)
    assert _admin_scalar("SELECT pg_terminate_backend(:pid)", pid=pid)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until the server's goodbye reaches the pooled socket
        if not _admin_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid", pid=pid):
            break
        time.sleep(0.02)
    assert store.links.get_active("alice@example.org") is None  # no StoreError: a new connection
    assert pings == [1]
    assert _backend_pid(store) != pid
    link = store.links.link("alice@example.org", JOSIAH, TOKENS)
    assert store.links.get_active("alice@example.org").orcid == link.orcid


def test_a_connection_idle_for_long_is_pinged(store, pings, monkeypatch):
    store.links.get_active("alice@example.org")
    monkeypatch.setattr(database, "PING_AFTER_IDLE_S", 0.0)
    time.sleep(0.01)
    store.links.get_active("alice@example.org")
    assert pings == [1]
