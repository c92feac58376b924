"""Past one GPU: workers' system samples, webhook deliveries, alerts by update time.

Revision ID: 0007
Revises: 0005
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("sys", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("sys_at", TS, nullable=True))

    op.create_table(
        "worker_sys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("worker_id", sa.String(100), sa.ForeignKey("workers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=True),
        sa.Column("values", sa.JSON(), nullable=False),
    )
    # a worker's series and its pruning: WHERE worker_id=? AND at >= ? ORDER BY at / DELETE ... AND at < ?
    op.create_index("ix_worker_sys_worker_at", "worker_sys", ["worker_id", "at"])

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=True),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
    )
    # a run's deliveries: WHERE run_id=? ORDER BY id
    op.create_index("ix_notifications_run", "notifications", ["run_id", "id"])

    # alerts across runs for pollers: WHERE (updated_at, id) > (?, ?) ORDER BY updated_at, id
    op.create_index("ix_alerts_updated", "alerts", ["updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_alerts_updated", table_name="alerts")
    op.drop_index("ix_notifications_run", table_name="notifications")
    op.drop_table("notifications")
    op.drop_index("ix_worker_sys_worker_at", table_name="worker_sys")
    op.drop_table("worker_sys")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("sys_at")
        batch.drop_column("sys")
