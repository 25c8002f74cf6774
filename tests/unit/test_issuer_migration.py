"""Revision 0006 (issuer-bound user keys) over a store that already holds links, tokens and
decisions, on SQLite and PostgreSQL: what an existing deployment goes through on upgrade."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from satosa_orcid_plugin.errors import ConfigError
from satosa_orcid_plugin.orcid_id import OrcidId
from satosa_orcid_plugin.store import VERSION_TABLE, Store
from satosa_orcid_plugin.store.schema import Base

IDP_A = "https://idp.uni-a.example/idp/shibboleth"
IDP_B = "https://idp.uni-b.example/idp/shibboleth"
ALICE = "alice@uni-a.example"
ORCID = OrcidId.parse("0000-0002-1825-0097")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def old_store(database_url, token_cipher):
    """A store at revision 0005 with one active link (and its tokens) and one decision, written
    the way that revision's code wrote them."""
    store = Store.from_url(database_url, token_cipher)
    store.db.upgrade("0005")
    naive = store.db.engine.dialect.name == "sqlite"
    at = T0.replace(tzinfo=None) if naive else T0
    with store.db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO orcid_links (id, user_key, orcid, environment, status, scopes, name, amr, created_at, "
            "updated_at) VALUES (1, :u, :o, 'production', 'active', 'openid', 'Josiah Carberry', NULL, :t, :t)"),
            {"u": ALICE, "o": ORCID.value, "t": at})
        conn.execute(sa.text(
            "INSERT INTO orcid_tokens (link_id, access_token_enc, refresh_token_enc, expires_at, scope, key_version, "
            "updated_at) VALUES (1, :a, NULL, NULL, 'openid', 'k1', :t)"),
            {"a": token_cipher.encrypt("old-access-token"), "t": at})
        conn.execute(sa.text(
            "INSERT INTO orcid_decisions (user_key, decision, until, created_at) VALUES ('bob@uni-a.example', "
            "'never', NULL, :t)"), {"t": at})
    yield store
    store.db.dispose()


def test_upgrade_without_an_issuer_stops_before_changing_anything(old_store):
    with pytest.raises(ConfigError) as caught:
        old_store.db.upgrade()

    assert caught.value.key == "default_issuer"
    assert "\n" not in str(caught.value) and "2 links/decisions" in str(caught.value)
    assert old_store.db.schema_revision() == "0005"
    with old_store.db.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("orcid_links")}
        assert "issuer" not in columns
        assert conn.execute(sa.text("SELECT COUNT(*) FROM orcid_tokens")).scalar() == 1


def test_upgrade_binds_existing_rows_to_the_configured_issuer(old_store):
    old_store.db.upgrade(existing_issuer=IDP_A)

    assert old_store.db.schema_revision() == "0006"
    link = old_store.links.get_active(ALICE, issuer=IDP_A)
    assert link is not None and link.orcid == ORCID and link.issuer == IDP_A
    assert old_store.links.tokens(ALICE, issuer=IDP_A).access_token == "old-access-token"  # not cascaded away
    # the same key from another IdP, or issuer-free, is someone else
    assert old_store.links.get_active(ALICE, issuer=IDP_B) is None
    assert old_store.links.get_active(ALICE) is None
    assert old_store.decisions.get("bob@uni-a.example", T0, issuer=IDP_A) == "never"
    assert old_store.decisions.get("bob@uni-a.example", T0, issuer=IDP_B) is None
    # and new rows keep the invariants: another IdP's alice gets her own link, not a conflict on the key
    other = OrcidId.parse("0000-0001-5109-3700")
    assert old_store.links.link(ALICE, other, None, issuer=IDP_B).issuer == IDP_B
    assert old_store.links.get_active(ALICE, issuer=IDP_A).orcid == ORCID


def test_upgrade_for_issuer_free_keys(old_store):
    old_store.db.upgrade(existing_issuer="")

    assert old_store.links.get_active(ALICE).orcid == ORCID
    assert old_store.decisions.get("bob@uni-a.example", T0) == "never"


def test_upgraded_schema_matches_the_models(old_store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    old_store.db.upgrade(existing_issuer=IDP_A)
    with old_store.db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}), Base.metadata)
    assert diff == []


def test_an_empty_store_upgrades_without_an_issuer(database_url, token_cipher):
    store = Store.from_url(database_url, token_cipher)
    try:
        store.db.upgrade("0005")
        store.db.upgrade()
        assert store.db.schema_revision() == "0006"
    finally:
        store.db.dispose()
