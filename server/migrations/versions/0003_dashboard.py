"""Dashboard: run notes, archiving and tags; the per-batch ingest clock; the worker's version.

Revision ID: 0003
Revises: 0001
Create Date: 2025-01-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("note", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("archived", sa.Boolean(), nullable=False, server_default=sa.false()))
    # runs list without archived runs (the default): WHERE archived = false ORDER BY created_at DESC
    op.create_index("ix_runs_archived_created", "runs", ["archived", "created_at"])

    op.create_table(
        "run_tags",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    # the tag filter: WHERE tag = ?
    op.create_index("ix_run_tags_tag", "run_tags", ["tag", "run_id"])

    op.create_table(
        "run_clock",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("step", sa.BigInteger(), primary_key=True),
        sa.Column("t", sa.Float(), nullable=False),
    )

    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("version", sa.String(40), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("version")
    op.drop_table("run_clock")
    op.drop_index("ix_run_tags_tag", table_name="run_tags")
    op.drop_table("run_tags")
    op.drop_index("ix_runs_archived_created", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("archived")
        batch.drop_column("note")
