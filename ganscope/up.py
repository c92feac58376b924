"""`ganscope up`: the server and a worker as child processes on SQLite, plus two demo runs on a second worker.

The children run in their own sessions, so a Ctrl-C in the terminal reaches only
this supervisor; it then stops them in order: the worker first (it checkpoints
and hands its job back while the server can still take the hand-back), then the
server. On Linux the children also get SIGTERM should the supervisor die.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ganscope.client import Api, ApiError

DEMO_NAME = "demo: shapes 32px"
DEMO_FAILING_NAME = "demo: shapes 32px, D overpowering"
# Sized to learn visibly on a laptop CPU in minutes: 32-px images and narrow nets (about 0.1 s a
# step on one busy core), a sample grid every 100 steps so the dashboard's timeline fills in, and a quality
# evaluation every 125 steps (quality/recognisable, quality/modes: the shapes classifier's ground truth; 12 over
# the run, and 4% of training time on a quiet 2-core CPU where every 100 cost 5.3%: bench.quality).
# 1,500 steps: its best stretch. Measured (bench.detect's shapes_demo, bench.demo): recognisable 0 → 0.62 and
# 7 of 9 classes by step 1,500; run on to 4,000 it fell back to 0.35 (the learning verdict said regressing).
DEMO_JOB: dict[str, Any] = {
    "name": DEMO_NAME, "dataset": "shapes", "image_size": 32, "nz": 64, "ngf": 16, "ndf": 16,
    "batch_size": 32, "steps": 1500, "sample_every": 100, "checkpoint_every": 500, "probe_every": 5,
    "flush_every": 25, "device": "auto", "eval_every": 125, "eval_samples": 256,
}
# The same model with D given ten times G's learning rate and three updates per step: D wins within a
# minute or two and d_overpowering fires; on_failure "stop" then ends it (the dashboard shows why).
DEMO_FAILING_JOB: dict[str, Any] = {
    **DEMO_JOB, "name": DEMO_FAILING_NAME, "lr_d": 2e-3, "d_steps": 3, "steps": 2000, "on_failure": "stop",
}
DEMO_JOBS = (DEMO_JOB, DEMO_FAILING_JOB)


class Stop(Exception):
    """Raised from the SIGTERM handler so Ctrl-C and `kill` take the same clean path."""


def _die_with_parent() -> None:
    # Runs in the child before exec: ask Linux to SIGTERM it if the supervisor disappears.
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def port_free(host: str, port: int) -> bool:
    """Whether the server can bind host:port. Asked the way uvicorn binds (SO_REUSEADDR), so a port left
    in TIME_WAIT by the last clean stop counts as free, as it is to uvicorn; one with a listener is not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


class Child:
    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float) -> int | None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def ensure_demo(api: Api) -> list[tuple[str, int, bool]]:
    """(name, run id, newly queued) of each demo run, enqueuing those no run of that name stands for yet."""
    runs = api.get("/api/runs")
    items = runs.get("runs", runs) if isinstance(runs, dict) else runs
    have = {run.get("name"): int(run["id"]) for run in items}
    out = []
    for job in DEMO_JOBS:
        name = job["name"]
        if name in have:
            out.append((name, have[name], False))
        else:
            out.append((name, int(api.post("/api/jobs", json=job)["id"]), True))
    return out


def _half_cores(env: dict[str, str]) -> dict[str, str]:
    """Two workers share the machine: each gets half the cores' threads unless the user chose a count."""
    if "OMP_NUM_THREADS" in env:
        return env
    return {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // 2))}


def _wait_healthy(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"the server exited ({child.proc.returncode}):\n{child.tail()}")
        try:
            if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not answer {url}/healthz within {timeout:.0f}s:\n{child.tail()}")


def run_up(home: Path, host: str, port: int, device: str, demo: bool, token: str | None) -> int:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    if not port_free(host, port):
        print(f"error: {host}:{port} is already in use; pick another with --port (or GANSCOPE_PORT).", file=sys.stderr)
        return 2
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{local_host}:{port}"
    env = {**os.environ, "GANSCOPE_HOME": str(home), "PYTHONUNBUFFERED": "1"}
    if token:
        env["GANSCOPE_TOKEN"] = token
    py = [sys.executable, "-m", "ganscope"]
    logs = home / "logs"
    children: list[Child] = []

    def on_term(*_: object) -> None:
        raise Stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    code = 0
    try:
        server = Child("server", py + ["serve", "--host", host, "--port", str(port), "--home", str(home)], env,
                       logs / "server.log")
        children.append(server)
        _wait_healthy(url, server, timeout=60)
        worker = Child("worker", py + ["worker", "--server", url, "--device", device,
                                      "--workdir", str(home / "worker")], _half_cores(env) if demo else env,
                       logs / "worker.log")
        children.append(worker)
        print(f"ganscope is up: {url}", flush=True)
        print(f"  server pid {server.pid}, worker pid {worker.pid}; data in {home}; logs in {logs}", flush=True)
        if demo:
            # A second worker, so the healthy and the failing demo runs train side by side (each on half the
            # cores) and can be compared as they go.
            demo_worker = Child("demo worker", py + ["worker", "--server", url, "--device", device,
                                                     "--workdir", str(home / "worker-demo")],
                                _half_cores(env), logs / "worker-demo.log")
            children.append(demo_worker)
            with Api(url, token) as api:
                demo_runs = ensure_demo(api)
            for name, run_id, created in demo_runs:
                state = "queued" if created else "already there"
                print(f"  demo job {state}: {name}: {url}/runs/{run_id}", flush=True)
            print(f"  demo worker pid {demo_worker.pid}", flush=True)
        print(f"Press Ctrl-C to stop the server and the worker{'s' if demo else ''}.", flush=True)
        while True:
            for child in children:
                if not child.alive():
                    print(f"error: the {child.name} exited ({child.proc.returncode}); its log ends:\n{child.tail()}",
                          file=sys.stderr, flush=True)
                    code = 1
                    raise Stop()
            time.sleep(0.5)
    except (KeyboardInterrupt, Stop):
        pass
    except (RuntimeError, ApiError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # Ignore further Ctrl-C while stopping: a second press must not orphan the children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if children:
            print("stopping...", flush=True)
        for child in reversed(children):
            # The worker checkpoints and hands its job back on SIGTERM: give it time.
            child.stop(timeout=60 if child.name == "worker" else 15)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if children:
        print("stopped.", flush=True)
    return code
