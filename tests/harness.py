"""Start the real server and real workers as processes, for tests and benchmarks.

Nothing here fakes a part of ganscope: the server is uvicorn serving
server.app, workers are `python -m ganscope.trainer.worker`, databases are real.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("GANSCOPE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home: Path, **extra: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GANSCOPE_")}
    env["GANSCOPE_HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")  # two cores shared by server, workers and the test itself
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    for k, v in extra.items():
        if v is not None:
            env[k] = v
    return env


@dataclass
class ServerProc:
    home: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.home / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerProc":
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        cmd = [sys.executable, "-m", "uvicorn", "ganscope.server.app:create_app", "--factory",
               "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not come up in {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self, tail: int | None = 5000) -> str:
        """The worker's output: its last `tail` characters (for assertion messages), or all of it."""
        try:
            text = self.log_path.read_text(errors="replace")
            return text if tail is None else text[-tail:]
        except OSError:
            return ""

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


def start_server(home: Path, *, database_url: str | None = None, token: str | None = None,
                 port: int | None = None, **env: str) -> ServerProc:
    extra = {"GANSCOPE_DATABASE_URL": database_url, "GANSCOPE_TOKEN": token, **env}
    server = ServerProc(home=home, port=port or free_port(), env=base_env(home, **extra))
    return server.start()


@dataclass
class WorkerProc:
    proc: subprocess.Popen
    log_path: Path

    def log(self, tail: int | None = 5000) -> str:
        """The worker's output: its last `tail` characters (for assertion messages), or all of it."""
        try:
            text = self.log_path.read_text(errors="replace")
            return text if tail is None else text[-tail:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_worker(server_url: str, home: Path, *, token: str | None = None, args: list[str] | None = None,
                 **env: str) -> WorkerProc:
    """`python -m ganscope.trainer.worker --server URL` with its own spool folder under home."""
    wid = uuid.uuid4().hex[:8]
    wdir = home / f"worker-{wid}"
    wdir.mkdir(parents=True, exist_ok=True)
    log_path = wdir / "worker.log"
    cmd = [sys.executable, "-m", "ganscope.trainer.worker", "--server", server_url, "--spool", str(wdir / "spool"),
           "--workdir", str(wdir), "--device", "cpu", "--poll", "0.2", *(args or [])]
    if token:
        cmd += ["--token", token]
    proc = subprocess.Popen(cmd, cwd=REPO, env=base_env(home, **env), stdout=open(log_path, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    return WorkerProc(proc=proc, log_path=log_path)


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    """Poll predicate() until it returns a truthy value; that value is returned."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def create_pg_database() -> str:
    """A fresh, empty PostgreSQL database for one test; returns its SQLAlchemy URL."""
    import psycopg

    name = "gs_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"postgresql+psycopg://{base.split('://', 1)[1]}/{name}"


def drop_pg_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001
        return False
