"""docker-compose.yml, checked without a Docker engine: its structure, then each service's command run
as a plain process with the service's environment (container paths mapped to temp folders, the
server's port to a free one, the `server` host name to 127.0.0.1)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.harness import REPO, base_env, free_port, wait_for

COMPOSE = REPO / "docker-compose.yml"
TOKEN = "compose-token"
CONTAINER_PORT = "8000"
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default} and $VAR substitution, recursively."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1) or m.group(3)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _environment(service: dict[str, Any], env: dict[str, str]) -> dict[str, str]:
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    return {k: str(v) for k, v in interpolate(raw, env).items()}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """container path -> volume name, for named volumes."""
    out = {}
    for v in service.get("volumes", []):
        source, target = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        out[target] = source
    return out


def test_services_and_their_wiring(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"server", "worker", "postgres"} <= set(services)
    server, worker, pg = services["server"], services["worker"], services["postgres"]
    # Images: the two stages of the one Dockerfile; the server stage is the torch-free one.
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\w+)", (REPO / "Dockerfile").read_text(), re.M | re.I)
    assert server["build"]["target"] == "server" and worker["build"]["target"] == "worker"
    assert {"server", "worker"} <= set(stages)
    # GPU reservation for the worker.
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    # GANSCOPE_HOME on a named volume, for both server and worker.
    named = set(compose["volumes"])
    for svc in (server, worker):
        home = _environment(svc, {})["GANSCOPE_HOME"]
        assert _mounts(svc).get(home) in named, f"GANSCOPE_HOME {home} is not on a named volume"
    # Healthchecks; the worker starts once the server is healthy.
    assert "/healthz" in " ".join(server["healthcheck"]["test"])
    assert any("pg_isready" in part for part in pg["healthcheck"]["test"])
    assert worker["depends_on"]["server"]["condition"] == "service_healthy"
    # The postgres profile: the database only with the profile; the server waits for it when present.
    assert pg["profiles"] == ["postgres"]
    assert "profiles" not in server and "profiles" not in worker
    dep = server["depends_on"]["postgres"]
    assert dep == {"condition": "service_healthy", "required": False}
    assert _mounts(pg).get("/var/lib/postgresql/data") in named
    # Published on the host's loopback unless told otherwise.
    ports = interpolate(server["ports"], {})
    assert ports == [f"127.0.0.1:{CONTAINER_PORT}:{CONTAINER_PORT}"]
    assert interpolate(server["ports"], {"GANSCOPE_PUBLISH": "0.0.0.0"})[0].startswith("0.0.0.0:")


def test_the_database_url_switches_to_postgres(compose: dict[str, Any]) -> None:
    server, pg = compose["services"]["server"], compose["services"]["postgres"]
    assert _environment(server, {}).get("GANSCOPE_DATABASE_URL") == ""  # unset: SQLite in GANSCOPE_HOME
    url = "postgresql+psycopg://ganscope:ganscope@postgres:5432/ganscope"
    assert _environment(server, {"GANSCOPE_DATABASE_URL": url})["GANSCOPE_DATABASE_URL"] == url
    pg_env = _environment(pg, {})
    assert (pg_env["POSTGRES_USER"], pg_env["POSTGRES_PASSWORD"], pg_env["POSTGRES_DB"]) == \
        ("ganscope", "ganscope", "ganscope")
    assert "docker compose --profile postgres" in COMPOSE.read_text() and url in COMPOSE.read_text()


class Mapper:
    """Container-world names to this machine: paths under temp folders, the server's port and host name."""

    def __init__(self, root: Path, port: int) -> None:
        self.root, self.port = root, port

    def path(self, service: str, p: str) -> str:
        # Each service has its own volumes, as in compose: <root>/<service>/<container path>.
        return str(self.root / service / p.strip("/")) if p.startswith("/") else p

    def arg(self, a: str) -> str:
        a = a.replace("http://server:8000", f"http://127.0.0.1:{self.port}")
        a = a.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
        return "127.0.0.1" if a == "0.0.0.0" else a

    def command(self, cmd: list[str]) -> list[str]:
        out = [self.arg(a) for a in cmd]
        for i, a in enumerate(out[:-1]):
            if a == "--port" and out[i + 1] == CONTAINER_PORT:
                out[i + 1] = str(self.port)
        if out[0] == "ganscope":  # the installed console script; -m keeps to this interpreter
            out = [sys.executable, "-m", "ganscope", *out[1:]]
        elif out[0] == "python":
            out[0] = sys.executable
        return out

    def env(self, name: str, service: dict[str, Any], host_env: dict[str, str]) -> dict[str, str]:
        env = _environment(service, host_env)
        for key, value in env.items():
            if key in ("GANSCOPE_HOME", "GANSCOPE_DATA_ROOT") and value.startswith("/"):
                env[key] = self.path(name, value)
                Path(env[key]).mkdir(parents=True, exist_ok=True)
        return env


def _spawn(cmd: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen:
    full = base_env(Path(env["GANSCOPE_HOME"]), **env)
    return subprocess.Popen(cmd, cwd=cwd, env=full, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def started(compose: dict[str, Any], tmp_path: Path) -> Iterator[Any]:
    """Start a compose service's command as a process; everything started is stopped afterwards."""
    procs: list[subprocess.Popen] = []

    def start(name: str, mapper: Mapper, host_env: dict[str, str]) -> subprocess.Popen:
        service = compose["services"][name]
        proc = _spawn(mapper.command(interpolate(service["command"], host_env)), mapper.env(name, service, host_env),
                      tmp_path, tmp_path / f"{name}.log")
        procs.append(proc)
        return proc

    yield start
    for p in reversed(procs):
        _stop(p)


def _log(tmp_path: Path, name: str) -> str:
    try:
        return (tmp_path / f"{name}.log").read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def test_server_and_worker_commands_start_and_work_together(compose: dict[str, Any], started, tmp_path: Path) -> None:
    port = free_port()
    mapper = Mapper(tmp_path / "volumes", port)
    host_env = {"GANSCOPE_TOKEN": TOKEN}
    url = f"http://127.0.0.1:{port}"
    server = started("server", mapper, host_env)
    wait_for(lambda: server.poll() is None and httpx.get(url + "/healthz", timeout=1).status_code == 200,
             timeout=60, what="the server service's command:\n" + _log(tmp_path, "server"))
    # The compose healthcheck itself, run as a process against the mapped port.
    test = compose["services"]["server"]["healthcheck"]["test"]
    assert test[0] == "CMD"
    check = subprocess.run(mapper.command(test[1:]), capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    # The token from the environment reached the server: state changes need it.
    assert httpx.post(url + "/api/jobs", json={"dataset": "ring8"}).status_code == 401
    # The SQLite file lives in the mapped GANSCOPE_HOME volume.
    assert (tmp_path / "volumes" / "server" / "data" / "ganscope.db").exists()

    worker = started("worker", mapper, host_env)
    wait_for(lambda: httpx.get(url + "/api/workers").json()["workers"], timeout=90,
             what="the worker service to register:\n" + _log(tmp_path, "worker"))
    job = {"name": "compose", "dataset": "ring8", "steps": 20, "batch_size": 16, "toy_hidden": 8,
           "toy_layers": 1, "checkpoint_every": 10, "sample_every": 10, "toy_every": 10, "flush_every": 5}
    r = httpx.post(url + "/api/jobs", json=job, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    wait_for(lambda: httpx.get(f"{url}/api/runs/{run_id}").json()["status"] == "succeeded", timeout=180,
             what="the job to succeed on the worker service:\n" + _log(tmp_path, "worker"))
    assert worker.poll() is None
    # The worker keeps its work folder in its own GANSCOPE_HOME volume.
    assert (tmp_path / "volumes" / "worker" / "data" / "worker").is_dir()


@pytest.mark.postgres
def test_server_command_on_postgres(compose: dict[str, Any], started, tmp_path: Path, pg_url: str) -> None:
    port = free_port()
    mapper = Mapper(tmp_path / "volumes", port)
    # The profile's URL names the `postgres` service; here it is this machine's PostgreSQL.
    server = started("server", mapper, {"GANSCOPE_DATABASE_URL": pg_url})
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: server.poll() is None and httpx.get(url + "/healthz", timeout=1).status_code == 200,
             timeout=60, what="the server on PostgreSQL:\n" + _log(tmp_path, "server"))
    r = httpx.post(url + "/api/jobs", json={"name": "in postgres", "dataset": "ring8"})
    assert r.status_code == 201, r.text
    import psycopg

    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        names = [row[0] for row in conn.execute("SELECT name FROM runs")]
    assert names == ["in postgres"]
    assert not (tmp_path / "volumes" / "server" / "data" / "ganscope.db").exists()


def test_dockerfile_commands_match_compose(compose: dict[str, Any]) -> None:
    text = (REPO / "Dockerfile").read_text()
    cmds = re.findall(r"^CMD\s+(\[.*\])$", text, re.M)
    parsed = [yaml.safe_load(c) for c in cmds]
    assert compose["services"]["server"]["command"] in parsed
    assert compose["services"]["worker"]["command"] in parsed
    assert "GANSCOPE_HOME=/data" in text
