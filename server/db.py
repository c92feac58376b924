"""Engine and sessions. SQLite is the embedded default; PostgreSQL for many hosts.

SQLite allows one writer at a time. Every write goes through `Database.write()`,
which holds a process-wide lock, so request threads queue here instead of
failing with "database is locked"; readers never wait thanks to WAL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer nor each other
    cur.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe with WAL against app crashes
    cur.execute("PRAGMA busy_timeout=10000")  # other processes (CLI, a second server) wait, not fail
    cur.execute("PRAGMA foreign_keys=ON")
    # Each pooled connection keeps its own page cache (2 MB by default): up to 16 connections made the
    # server's memory grow ~16 MB under load while each cache filled. The OS page cache holds the file anyway;
    # 256 KiB each cost no read latency in `python -m bench.load`.
    cur.execute("PRAGMA cache_size=-256")
    cur.close()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: Engine = create_engine(
                url, connect_args={"check_same_thread": False, "timeout": 10}, pool_size=8, max_overflow=8)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock() if self.is_sqlite else None

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._sessions() as s:
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose work is committed on exit (rolled back on error)."""
        if self._write_lock is not None:
            self._write_lock.acquire()
        try:
            with self._sessions() as s, s.begin():
                yield s
        finally:
            if self._write_lock is not None:
                self._write_lock.release()

    def dispose(self) -> None:
        self.engine.dispose()
