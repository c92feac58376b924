"""Small helpers shared by the store modules: time, ISO dates, dialect-aware upsert."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy.orm import Session


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(dt: datetime | None) -> datetime | None:
    """SQLite hands datetimes back naive; every stored time is UTC, so say so."""
    if dt is None:
        return None
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)


def iso(dt: datetime | None) -> str | None:
    dt = as_utc(dt)
    return dt.isoformat().replace("+00:00", "Z") if dt is not None else None


def dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def upsert(session: Session, table: Any, rows: list[dict[str, Any]], keys: list[str],
           update_cols: list[str]) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE: both SQLite and PostgreSQL speak it."""
    if not rows:
        return
    if dialect(session) == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    if update_cols:
        stmt = stmt.on_conflict_do_update(index_elements=keys,
                                          set_={c: stmt.excluded[c] for c in update_cols})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    session.execute(stmt, rows)
