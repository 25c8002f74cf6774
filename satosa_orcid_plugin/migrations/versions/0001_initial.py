"""Initial schema: links, encrypted tokens, decisions, audit.

Revision ID: 0001
Revises:
Create Date: 2024-11-24

Frozen copy of the schema (not ``metadata.create_all``): later model changes get their own
revision. The two partial unique indexes are the store's invariants: at most one active
link per user and per (iD, environment).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ACTIVE = sa.text("status = 'active'")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "orcid_links",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_key", sa.String(512), nullable=False),
        sa.Column("orcid", sa.String(19), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("amr", sa.String(64), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("revoked_at", nullable=True),
        sa.Column("revoke_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orcid_links")),
        sa.CheckConstraint("status IN ('active', 'revoked', 'unlinked')", name=op.f("ck_orcid_links_status")),
        sa.CheckConstraint("environment IN ('production', 'sandbox')", name=op.f("ck_orcid_links_environment")),
    )
    op.create_index(
        op.f("uq_orcid_links_active_user"), "orcid_links", ["user_key"], unique=True,
        postgresql_where=ACTIVE, sqlite_where=ACTIVE,
    )
    op.create_index(
        op.f("uq_orcid_links_active_orcid"), "orcid_links", ["orcid", "environment"], unique=True,
        postgresql_where=ACTIVE, sqlite_where=ACTIVE,
    )
    op.create_index(op.f("ix_orcid_links_user_key_id"), "orcid_links", ["user_key", "id"])
    op.create_index(op.f("ix_orcid_links_orcid_id"), "orcid_links", ["orcid", "id"])

    op.create_table(
        "orcid_tokens",
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=False),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        _ts("expires_at", nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("key_version", sa.String(32), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("link_id", name=op.f("pk_orcid_tokens")),
        sa.ForeignKeyConstraint(
            ["link_id"], ["orcid_links.id"], name=op.f("fk_orcid_tokens_link_id_orcid_links"), ondelete="CASCADE"
        ),
    )

    op.create_table(
        "orcid_decisions",
        sa.Column("user_key", sa.String(512), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        _ts("until", nullable=True),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("user_key", name=op.f("pk_orcid_decisions")),
        sa.CheckConstraint("decision IN ('not_now', 'never')", name=op.f("ck_orcid_decisions_decision")),
    )

    op.create_table(
        "orcid_audit",
        sa.Column("id", sa.Integer(), primary_key=True),
        _ts("at"),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("user_key", sa.String(512), nullable=True),
        sa.Column("orcid", sa.String(19), nullable=True),
        sa.Column("instance", sa.String(255), nullable=False),
        sa.Column("session_id", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orcid_audit")),
    )
    op.create_index(op.f("ix_orcid_audit_user_key_id"), "orcid_audit", ["user_key", "id"])
    op.create_index(op.f("ix_orcid_audit_at"), "orcid_audit", ["at"])


def downgrade() -> None:
    op.drop_table("orcid_audit")
    op.drop_table("orcid_decisions")
    op.drop_table("orcid_tokens")
    op.drop_index(op.f("ix_orcid_links_orcid_id"), table_name="orcid_links")
    op.drop_index(op.f("ix_orcid_links_user_key_id"), table_name="orcid_links")
    op.drop_index(op.f("uq_orcid_links_active_orcid"), table_name="orcid_links")
    op.drop_index(op.f("uq_orcid_links_active_user"), table_name="orcid_links")
    op.drop_table("orcid_links")
