"""Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from ganscope.server.db import Database
from ganscope.server.schema import Base
from ganscope.server.store.migrate import alembic_config, current, downgrade, migrate
from tests.harness import start_server


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'mig.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    database = Database(url)
    yield database
    database.dispose()


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def diff(db: Database) -> list:
    with db.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def test_upgrade_matches_the_models(db: Database) -> None:
    assert current(db) is None
    migrate(db)
    assert current(db) == head()
    assert diff(db) == []
    migrate(db)  # idempotent: a restart migrates nothing
    assert current(db) == head()


def test_downgrade_and_upgrade_again(db: Database) -> None:
    migrate(db)
    downgrade(db, "base")
    with db.engine.connect() as conn:
        assert "runs" not in inspect(conn).get_table_names()
    migrate(db)
    assert diff(db) == []


def test_database_made_before_migrations_is_adopted(db: Database) -> None:
    Base.metadata.create_all(db.engine)  # what the pre-Alembic placeholder did
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (name, kind, config, status, health, priority, attempts, max_attempts,"
                          " created_at, step, total_steps) VALUES ('old', 'job', '{}', 'queued', 'healthy', 0, 0, 3,"
                          " '2024-01-01 00:00:00', 0, 10)"))
    migrate(db)
    assert current(db) == head()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM runs")).scalar() == "old"


def test_server_starts_twice_on_the_same_database(tmp_path: Path) -> None:
    home = tmp_path / "h"
    for _ in range(2):
        s = start_server(home)
        try:
            with s.client() as c:
                assert c.post("/api/jobs", json={"dataset": "ring8"}).status_code == 201
                assert c.get("/api/runs").json()["total"] >= 1
        finally:
            s.stop()
    db = Database(f"sqlite:///{home / 'ganscope.db'}")
    assert current(db) == head()
    db.dispose()
