"""Logins parked in the store during an ORCID hop (SATOSA's state cookie keeps only a handle).

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orcid_parked",
        sa.Column("handle_hash", sa.String(64), nullable=False),
        sa.Column("data_enc", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("handle_hash", name=op.f("pk_orcid_parked")),
    )
    op.create_index(op.f("ix_orcid_parked_expires_at"), "orcid_parked", ["expires_at"])


def downgrade() -> None:
    op.drop_table("orcid_parked")
