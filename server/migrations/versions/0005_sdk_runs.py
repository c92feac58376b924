"""SDK runs describe themselves: the user's own config, an idempotent creation key, heartbeats.

`runs.config` keeps what the detectors read (for SDK runs: only what the script declared);
`runs.user_config` keeps the script's own options as given. `client_key` makes a creation that is
retried (a spool replayed after the server was down at `init`) return the same run. `sdk_heartbeats`
marks runs whose script sends heartbeats, so their silence fails them within a minute.

Revision ID: 0005
Revises: 0003
Create Date: 2025-02-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0003"
branch_labels = None
depends_on = None


def _columns() -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns("runs")}


def upgrade() -> None:
    have = _columns()  # a database made by create_all from newer models already has them
    with op.batch_alter_table("runs") as batch:
        if "user_config" not in have:
            batch.add_column(sa.Column("user_config", sa.JSON(), nullable=True))
        if "client_key" not in have:
            batch.add_column(sa.Column("client_key", sa.String(64), nullable=True))
        if "sdk_heartbeats" not in have:
            batch.add_column(sa.Column("sdk_heartbeats", sa.Boolean(), nullable=False, server_default=sa.false()))
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("runs")}
    if "ix_runs_client_key" not in indexes:
        # SDK creation retried (offline spool replay): WHERE client_key=?; unique, NULLs allowed
        op.create_index("ix_runs_client_key", "runs", ["client_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_runs_client_key", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("sdk_heartbeats")
        batch.drop_column("client_key")
        batch.drop_column("user_config")
