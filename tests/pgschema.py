"""PostgreSQL for tests: the URL from ``SATOSA_ORCID_TEST_POSTGRES_URL`` (skip without it, fail
when ``SATOSA_ORCID_REQUIRE_SERVICES=1``), and a private schema per test or module."""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

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


@contextmanager
def private_schema(prefix: str = "test") -> Iterator[str]:
    """A URL of a fresh PostgreSQL schema (via ``search_path``), dropped afterwards."""
    base = sa.make_url(postgres_base_url())
    if base.drivername in ("postgresql", "postgres"):
        base = base.set(drivername="postgresql+psycopg")
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


