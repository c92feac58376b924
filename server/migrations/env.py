"""Alembic environment, run programmatically by server.store.migrate (and usable with the alembic CLI).

The caller passes an open connection in config.attributes["connection"]; the CLI
falls back to GANSCOPE_DATABASE_URL / the default SQLite file.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from ganscope.server.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # noqa: ANN001
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    from ganscope.server.settings import get_settings

    engine = create_engine(config.get_main_option("sqlalchemy.url") or get_settings().sqlalchemy_url)
    with engine.connect() as conn:
        _run(conn)
