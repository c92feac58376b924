"""The worker's side of a job on N processes: launch it under torchrun and relay rank 0's reports.

    python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 0 \\
        -m ganscope.trainer.dist_entry --job job.json --workdir RUNDIR [--resume CKPT] [--data-root DIR]

torchrun (torch's elastic launcher) starts the ranks, runs their rendezvous on a free local port,
watches them and, when one dies, ends the others and exits non-zero with a summary naming the
failed rank. Rank 0's sink (`RelaySink`) sends everything it would report over one authenticated
local connection (multiprocessing.connection) to the worker, which hands it to its own sink:
spool, heartbeats, cancel/stop/handback and the final status stay the worker's, as for a 1-process
job. Control questions and checkpoint hand-overs wait for the worker's answer; the rest is one way.

No process outlives the job: torchrun runs in its own session (a terminal's Ctrl-C reaches the worker
only, which then hands the job back), gets SIGTERM if the worker dies (PR_SET_PDEATHSIG), and every
process left under it when the job ends is killed.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from ganscope.trainer.config import JobConfig
from ganscope.trainer.sink import Sink

ENV_ADDRESS, ENV_KEY = "GANSCOPE_RELAY", "GANSCOPE_RELAY_KEY"
MONITOR_S = 0.5        # how often torchrun checks its ranks: a dead rank ends the job within this
STOP_GRACE_S = 30.0    # after rank 0's last word, how long the ranks get to exit before they are killed


class DistributedJobFailed(RuntimeError):
    """A job on several processes ended without rank 0 reporting a result (a rank died, torchrun failed)."""


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(sig))   # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


# --- rank 0 ------------------------------------------------------------------------------------
class RelaySink:
    """Rank 0's sink: every report goes to the worker that launched the job."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @classmethod
    def from_env(cls) -> "RelaySink":
        host, _, port = os.environ[ENV_ADDRESS].rpartition(":")
        return cls(Client((host, int(port)), authkey=bytes.fromhex(os.environ[ENV_KEY])))

    def on_metrics(self, series: dict[str, tuple[list[int], list[float]]]) -> None:
        self.conn.send(("metrics", series))

    def on_sample(self, step: int, kind: str, png: bytes) -> None:
        self.conn.send(("sample", step, kind, png))

    def on_snapshot(self, step: int, kind: str, payload: dict) -> None:
        self.conn.send(("snapshot", step, kind, payload))

    def on_checkpoint(self, step: int, path: Path) -> None:
        # Waits: the worker copies the file to its spool before the loop may prune it.
        self.conn.send(("checkpoint", step, str(path)))
        self.conn.recv()

    def control(self) -> str | None:
        self.conn.send(("control",))
        return self.conn.recv()

    def result(self, status: str, step: int, reason: str | None) -> None:
        self.conn.send(("result", status, step, reason))

    def close(self) -> None:
        self.conn.close()


# --- the worker ----------------------------------------------------------------------------------
def torchrun_command(procs: int, job: Path, workdir: Path, resume: Path | None, data_root: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
           "--max-restarts", "0", "--monitor-interval", str(MONITOR_S),
           "-m", "ganscope.trainer.dist_entry", "--job", str(job), "--workdir", str(workdir)]
    if resume is not None:
        cmd += ["--resume", str(resume)]
    if data_root is not None:
        cmd += ["--data-root", str(data_root)]
    return cmd


def failure_reason(log: str) -> str | None:
    """One line from torchrun's failure summary: which rank failed and how; None without a summary.

    A rank killed by a signal other than torchrun's own SIGTERM is the cause (its peers then fail in a
    collective, or get SIGTERM from torchrun); otherwise torchrun's "Root Cause" rank."""
    at = max(log.rfind("Failures:"), log.rfind("Root Cause"))
    if at < 0:
        return None
    blocks = []
    for block in re.split(r"\n\[\d+\]:\n", log[log.rfind("Failures:") if "Failures:" in log else at:]):
        rank, code = re.search(r"rank\s*:\s*(\d+)", block), re.search(r"exitcode\s*:\s*(-?\d+)", block)
        if rank and code:
            tb = re.search(r"traceback\s*:\s*(.+)", block)
            blocks.append((int(rank.group(1)), int(code.group(1)), tb.group(1).strip() if tb else ""))
    if not blocks:
        return None
    rank, code, tb = next((b for b in blocks if b[1] < 0 and b[1] != -signal.SIGTERM), blocks[-1])
    how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
        else f"exit code {code}"
    detail = "" if tb.startswith(("Signal", "<N/A>", "Traceback")) or not tb else f": {tb[:300]}"
    return f"rank {rank} failed ({how}){detail}"


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _kill_tree(proc: subprocess.Popen, procs: list[Any]) -> None:
    import psutil

    for p in [*procs]:
        try:
            p.kill()
        except psutil.Error:
            pass
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    psutil.wait_procs(procs, timeout=5)


def launch(cfg: JobConfig, sink: Sink, workdir: Path, procs: int, resume: Path | None = None,
           data_root: Path | None = None, cuda_visible: str | None = None) -> tuple[str, int, str | None]:
    """Run one job on `procs` processes; (status, step, reason) from rank 0, or DistributedJobFailed."""
    workdir = Path(workdir)
    job = workdir / "job.json"
    job.write_text(json.dumps(cfg.model_dump(mode="json")))
    key = os.urandom(16)
    listener = Listener(("127.0.0.1", 0), authkey=key)
    host, port = listener.address
    env = {**os.environ, ENV_ADDRESS: f"{host}:{port}", ENV_KEY: key.hex()}
    if cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = cuda_visible
    log_path = workdir / "torchrun.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(torchrun_command(procs, job, workdir, resume, data_root), env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    result: tuple[str, int, str | None] | None = None
    try:
        conn = _accept(listener, proc, key)
        if conn is not None:
            with conn:
                result = _serve(conn, sink, proc)
        try:
            proc.wait(STOP_GRACE_S if result is not None else 60.0)
        except subprocess.TimeoutExpired:
            pass
    finally:
        left = _descendants(proc.pid)
        if proc.poll() is None or left:
            _kill_tree(proc, left)
        listener.close()
    if result is not None and result[0] != "failed":
        return result
    text = log_path.read_text(errors="replace")
    cause = failure_reason(text)
    if result is not None and (cause is None or cause.startswith("rank 0 ")):
        raise DistributedJobFailed(f"rank 0: {result[2]}")   # rank 0 caught its own error: its message says most
    if cause is None:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        cause = f"torchrun exited with code {proc.returncode}" + (f": {lines[-1][:300]}" if lines else "")
    raise DistributedJobFailed(cause + (f"; rank 0 then: {str(result[2])[:200]}" if result is not None else ""))


def _accept(listener: Listener, proc: subprocess.Popen, key: bytes) -> Connection | None:
    """Rank 0's connection, or None when torchrun ends before rank 0 connects."""
    box: dict[str, Any] = {}

    def accept() -> None:
        try:
            box["conn"] = listener.accept()
        except Exception as exc:  # noqa: BLE001 - our own unblocking connection below ends up here
            box["error"] = exc

    t = threading.Thread(target=accept, name="ganscope-relay-accept", daemon=True)
    t.start()
    while t.is_alive() and proc.poll() is None:
        t.join(0.2)
    if t.is_alive():   # torchrun is gone and nobody connected: unblock accept() with a connection of our own
        try:
            Client(listener.address, authkey=key).close()
        except OSError:
            pass
        t.join(5)
    return box.get("conn")


def _serve(conn: Connection, sink: Sink, proc: subprocess.Popen) -> tuple[str, int, str | None] | None:
    """Hand rank 0's reports to the worker's sink until it hangs up; its result, if it sent one."""
    result = None
    while True:
        if not conn.poll(0.2):
            if proc.poll() is not None and not conn.poll(0.2):
                return result
            continue
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return result
        kind = msg[0]
        if kind == "metrics":
            sink.on_metrics(msg[1])
        elif kind == "sample":
            sink.on_sample(msg[1], msg[2], msg[3])
        elif kind == "snapshot":
            sink.on_snapshot(msg[1], msg[2], msg[3])
        elif kind == "checkpoint":
            sink.on_checkpoint(msg[1], Path(msg[2]))
            conn.send(True)
        elif kind == "control":
            conn.send(sink.control())
        elif kind == "result":
            result = (msg[1], int(msg[2]), msg[3])


# --- how many processes ------------------------------------------------------------------------
def procs_for(job_device: str, gpu_indices: list[int], procs_per_job: int, job_gpus: int) -> int:
    """Processes for one job: on a GPU, `--procs-per-job` or else the job's `gpus` (one rank per GPU, at most
    the worker's); on CPU, `--procs-per-job` (gloo ranks), else 1."""
    if job_device.startswith("cuda"):
        return max(1, min(procs_per_job or job_gpus, len(gpu_indices) or 1))
    return max(1, procs_per_job)


def visible_devices(indices: list[int]) -> str:
    """CUDA_VISIBLE_DEVICES naming `indices` (as this process numbers them) for the ranks: rank r gets cuda:r."""
    parent = os.environ.get("CUDA_VISIBLE_DEVICES")
    names = [s.strip() for s in parent.split(",")] if parent else None
    return ",".join(names[i] if names else str(i) for i in indices)
