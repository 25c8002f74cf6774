"""Alembic environment for the link store.

Migrations normally run through ``Database.upgrade()``, which hands over an open connection
(already inside a locked transaction) in ``config.attributes["connection"]``. Without one,
the URL comes from ``config.attributes["database_url"]`` or the ``sqlalchemy.url`` option;
there is no alembic.ini.
"""
from __future__ import annotations

from alembic import context

from satosa_orcid_plugin.store.database import VERSION_TABLE, create_store_engine
from satosa_orcid_plugin.store.schema import Base

config = context.config
target_metadata = Base.metadata
version_table = config.attributes.get("version_table", VERSION_TABLE)


def _database_url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("run migrations with Database.upgrade(), or give a database_url")
    return url


def run_offline() -> None:
    context.configure(
        url=_database_url(), target_metadata=target_metadata, version_table=version_table, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_store_engine(_database_url())
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
