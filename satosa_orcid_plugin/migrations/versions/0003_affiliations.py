"""Affiliation outbox (what should be on each ORCID record, and its put-code) and the shared
rate-limit bucket.

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "orcid_affiliations",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_key", sa.String(512), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=False),
        sa.Column("orcid", sa.String(19), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("self_id", sa.String(64), nullable=False),
        sa.Column("desired", sa.Text(), nullable=False),
        sa.Column("desired_hash", sa.String(64), nullable=False),
        sa.Column("synced_hash", sa.String(64), nullable=True),
        sa.Column("put_code", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("posted_at", nullable=True),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        _ts("lease_until", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orcid_affiliations")),
        sa.ForeignKeyConstraint(
            ["link_id"], ["orcid_links.id"], name=op.f("fk_orcid_affiliations_link_id_orcid_links"), ondelete="CASCADE"
        ),
        sa.CheckConstraint("kind IN ('employment', 'education')", name=op.f("ck_orcid_affiliations_kind")),
        sa.CheckConstraint(
            "status IN ('queued', 'retry', 'done', 'parked')", name=op.f("ck_orcid_affiliations_status")
        ),
        sa.UniqueConstraint("user_key", "orcid", "kind", name=op.f("uq_orcid_affiliations_user_key_orcid_kind")),
    )
    # The worker's claim query, and the "what is queued / parked" reports.
    op.create_index(op.f("ix_orcid_affiliations_status_next_attempt_at"), "orcid_affiliations",
                    ["status", "next_attempt_at"])
    op.create_index(op.f("ix_orcid_affiliations_link_id"), "orcid_affiliations", ["link_id"])

    op.create_table(
        "orcid_rate_buckets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.Float(), nullable=False),  # epoch seconds (database clock on PostgreSQL)
        sa.PrimaryKeyConstraint("name", name=op.f("pk_orcid_rate_buckets")),
    )


def downgrade() -> None:
    op.drop_table("orcid_rate_buckets")
    op.drop_index(op.f("ix_orcid_affiliations_link_id"), table_name="orcid_affiliations")
    op.drop_index(op.f("ix_orcid_affiliations_status_next_attempt_at"), table_name="orcid_affiliations")
    op.drop_table("orcid_affiliations")
