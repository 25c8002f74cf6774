"""Pending links from the Institutional Connect callback, finished at the next login.

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orcid_pending",
        sa.Column("handle_hash", sa.String(64), nullable=False),
        sa.Column("orcid", sa.String(19), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("access_token_enc", sa.Text(), nullable=False),
        sa.Column("refresh_token_enc", sa.Text(), nullable=True),
        sa.Column("expires_at_token", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("amr", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("handle_hash", name=op.f("pk_orcid_pending")),
    )
    op.create_index(op.f("ix_orcid_pending_expires_at"), "orcid_pending", ["expires_at"])


def downgrade() -> None:
    op.drop_table("orcid_pending")
