"""Bring the database schema up to date with Alembic (server/migrations), at server start.

Runs on SQLite and PostgreSQL alike. On PostgreSQL an advisory lock makes servers that
start together migrate one after the other; on SQLite the file's write lock does.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, text

from ganscope.server.db import Database

log = logging.getLogger("ganscope.migrate")
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
FIRST_REVISION = "0001"
_PG_LOCK_KEY = 0x6761_6E73  # 'gans': any constant shared by every ganscope server


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade to `revision` (head by default)."""
    cfg = alembic_config()
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
        tables = set(inspect(conn).get_table_names())
        cfg.attributes["connection"] = conn
        if "runs" in tables and "alembic_version" not in tables:
            # Made by the pre-Alembic create_all placeholder: same tables as the first revision.
            log.warning("database has tables but no migration history; marking it as revision %s", FIRST_REVISION)
            command.stamp(cfg, FIRST_REVISION)
        command.upgrade(cfg, revision)


def downgrade(db: Database, revision: str) -> None:
    cfg = alembic_config()
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current(db: Database) -> str | None:
    with db.engine.connect() as conn:
        if "alembic_version" not in inspect(conn).get_table_names():
            return None
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
