"""Shared database fixtures.

``database_url`` runs a test once on a fresh SQLite file and once on PostgreSQL. The
PostgreSQL URL comes from ``SATOSA_ORCID_TEST_POSTGRES_URL``; without it those runs are
skipped, unless ``SATOSA_ORCID_REQUIRE_SERVICES=1`` (CI), where they fail. Every PostgreSQL
test gets its own random schema (via ``search_path``), dropped afterwards, so parallel and
earlier runs never see each other's rows.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from satosa_orcid_plugin.tokens import TokenCipher

POSTGRES_URL_VAR = "SATOSA_ORCID_TEST_POSTGRES_URL"
REQUIRE_SERVICES_VAR = "SATOSA_ORCID_REQUIRE_SERVICES"


def postgres_base_url() -> str:
    """The configured PostgreSQL URL, or skip (fail when services are required)."""
    url = os.environ.get(POSTGRES_URL_VAR, "").strip()
    if not url:
        message = f"PostgreSQL tests need {POSTGRES_URL_VAR} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        if os.environ.get(REQUIRE_SERVICES_VAR) == "1":
            pytest.fail(f"{message}; {REQUIRE_SERVICES_VAR}=1 forbids skipping")
        pytest.skip(message)
    return url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'orcid.sqlite'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    base = sa.make_url(postgres_base_url())
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg")
    schema = f"test_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    """A URL of an empty database: a SQLite file, or a private PostgreSQL schema."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def token_cipher() -> TokenCipher:
    return TokenCipher.from_keys([TokenCipher.generate_key()])
