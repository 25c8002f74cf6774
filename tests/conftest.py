"""Shared database fixtures.

``database_url`` runs a test once on a fresh SQLite file and once on PostgreSQL. The
PostgreSQL URL comes from ``SATOSA_ORCID_TEST_POSTGRES_URL``; without it those runs are
skipped, unless ``SATOSA_ORCID_REQUIRE_SERVICES=1`` (CI), where they fail. Every PostgreSQL
test gets its own random schema (via ``search_path``), dropped afterwards, so parallel and
earlier runs never see each other's rows.
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgschema import private_schema

from satosa_orcid_plugin.tokens import TokenCipher


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'orcid.sqlite'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with private_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request) -> str:
    """A URL of an empty database: a SQLite file, or a private PostgreSQL schema."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def token_cipher() -> TokenCipher:
    return TokenCipher.from_keys([TokenCipher.generate_key()])
