"""Fixtures: a real server on a free port, real workers, SQLite and PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import chromium_path, launch_browser
from tests.harness import (
    ServerProc, WorkerProc, create_pg_database, drop_pg_database, pg_available, start_server, start_worker,
)

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    d = tmp_path / "home"
    d.mkdir()
    return d


@pytest.fixture
def server(home: Path) -> Iterator[ServerProc]:
    """The real server on SQLite under a temporary GANSCOPE_HOME."""
    s = start_server(home)
    yield s
    s.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database; CI requires PostgreSQL, so absence fails rather than skips there."""
    if not pg_available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (CI needs it)")
        pytest.skip("PostgreSQL not reachable on 127.0.0.1:5432")
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def any_server(request, home: Path) -> Iterator[ServerProc]:
    """The real server, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        s = start_server(home)
        yield s
        s.stop()
    else:
        url = request.getfixturevalue("pg_url")
        s = start_server(home, database_url=url)
        yield s
        s.stop()


@pytest.fixture
def workers(home: Path) -> Iterator[list[WorkerProc]]:
    """Collects started workers and makes sure none outlives the test."""
    started: list[WorkerProc] = []
    yield started
    for w in started:
        w.kill()


@pytest.fixture
def spawn_worker(home: Path, workers: list[WorkerProc]):
    def spawn(server_url: str, **kw) -> WorkerProc:
        w = start_worker(server_url, home, **kw)
        workers.append(w)
        return w
    return spawn


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module (tests/browser.py launches it)."""
    if not chromium_path():
        pytest.skip("chromium is not installed")
    with launch_browser() as b:
        yield b
