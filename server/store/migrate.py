"""Bring the database schema up to date (placeholder: create_all until Alembic lands)."""

from server.db import Database
from server.schema import Base


def migrate(db: Database) -> None:
    Base.metadata.create_all(db.engine)
