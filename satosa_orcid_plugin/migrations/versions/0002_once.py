"""Single-use markers: an OAuth state (or connect code) is processed at most once.

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orcid_once",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_orcid_once")),
    )
    op.create_index(op.f("ix_orcid_once_expires_at"), "orcid_once", ["expires_at"])


def downgrade() -> None:
    op.drop_table("orcid_once")
