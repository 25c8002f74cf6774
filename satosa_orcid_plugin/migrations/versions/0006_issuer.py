"""Issuer-bound user keys: a link and a decision belong to (user key, issuer), the issuer being
the entity ID of the IdP that asserted the key ("" for issuer-free keys, ``user_key_scope:
global``). And a pending link remembers the network address its connect came from (shown on
the confirmation page).

Rows written before this revision were made by a deployment that did not record the issuer.
They get the issuer the caller names (``Database.upgrade(existing_issuer=...)``, from the
plugin configuration: ``default_issuer``, else the one IdP of the SAML backend's metadata, or ""
with ``user_key_scope: global``). When there are such rows and nobody named an issuer, the
migration stops before changing anything, with one line naming the key to set.

SQLite: ``orcid_links`` keeps the issuer of the old rows as its column default (removing a
default needs a table copy there, and dropping ``orcid_links`` would cascade to
``orcid_tokens``); the store always writes the issuer itself.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

from satosa_orcid_plugin.errors import ConfigError

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")


def _existing_issuer(bind: sa.Connection) -> str:
    rows = sum(bind.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() or 0
               for table in ("orcid_links", "orcid_decisions"))
    issuer = context.config.attributes.get("existing_issuer")
    if issuer is None:
        if rows:
            raise ConfigError(
                "default_issuer",
                f"is needed to upgrade the link store: {rows} links/decisions predate issuer-bound user keys; set it "
                "to the entity ID of the IdP that asserted them (or user_key_scope: global)")
        return ""
    return str(issuer)


def upgrade() -> None:
    bind = op.get_bind()
    issuer = _existing_issuer(bind)

    op.drop_index("uq_orcid_links_active_user", table_name="orcid_links")
    op.drop_index("ix_orcid_links_user_key_id", table_name="orcid_links")
    op.add_column("orcid_links", sa.Column("issuer", sa.String(1024), nullable=False, server_default=issuer))
    if bind.dialect.name != "sqlite":
        op.alter_column("orcid_links", "issuer", server_default=None, existing_type=sa.String(1024),
                        existing_nullable=False)
    op.create_index("uq_orcid_links_active_user", "orcid_links", ["user_key", "issuer"], unique=True,
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    op.create_index("ix_orcid_links_user_key_issuer_id", "orcid_links", ["user_key", "issuer", "id"])

    op.add_column("orcid_pending", sa.Column("origin", sa.String(64), nullable=True))

    # Nothing refers to orcid_decisions: on SQLite, batch mode may copy it.
    op.add_column("orcid_decisions", sa.Column("issuer", sa.String(1024), nullable=False, server_default=issuer))
    with op.batch_alter_table("orcid_decisions") as batch:
        batch.alter_column("issuer", server_default=None, existing_type=sa.String(1024), existing_nullable=False)
        batch.drop_constraint("pk_orcid_decisions", type_="primary")
        batch.create_primary_key("pk_orcid_decisions", ["user_key", "issuer"])


def downgrade() -> None:
    with op.batch_alter_table("orcid_pending") as batch:
        batch.drop_column("origin")
    with op.batch_alter_table("orcid_decisions") as batch:
        batch.drop_constraint("pk_orcid_decisions", type_="primary")
        batch.drop_column("issuer")
        batch.create_primary_key("pk_orcid_decisions", ["user_key"])
    op.drop_index("ix_orcid_links_user_key_issuer_id", table_name="orcid_links")
    op.drop_index("uq_orcid_links_active_user", table_name="orcid_links")
    with op.batch_alter_table("orcid_links", recreate="never") as batch:
        batch.drop_column("issuer")
    op.create_index("uq_orcid_links_active_user", "orcid_links", ["user_key"], unique=True,
                    postgresql_where=ACTIVE, sqlite_where=ACTIVE)
    op.create_index("ix_orcid_links_user_key_id", "orcid_links", ["user_key", "id"])
