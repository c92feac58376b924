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
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from ganscope.trainer.config import JobConfig
from ganscope.trainer.sink import Sink

logger = logging.getLogger("ganscope.worker")
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


@dataclass(frozen=True)
class RankFailure:
    rank: int
    exitcode: int
    error: str    # the exception's last line, or "" (killed by a signal, no error file)

    @property
    def killed(self) -> bool:
        """Killed by a signal that torchrun did not send (torchrun ends surviving ranks with SIGTERM)."""
        return self.exitcode < 0 and self.exitcode != -signal.SIGTERM

    def __str__(self) -> str:
        code = self.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
            else f"exit code {code}"
        return f"rank {self.rank} failed ({how})" + (f": {self.error[:300]}" if self.error else "")


def rank_failures(log: str) -> list[RankFailure]:
    """The failed ranks of torchrun's failure summary (its "Failures:" and "Root Cause" blocks)."""
    at = log.rfind("Failures:") if "Failures:" in log else log.rfind("Root Cause")
    out = []
    for block in re.split(r"\n\[\d+\]:\n", log[at:]) if at >= 0 else []:
        rank, code = re.search(r"rank\s*:\s*(\d+)", block), re.search(r"exitcode\s*:\s*(-?\d+)", block)
        if not (rank and code):
            continue
        error = ""
        if (tb := block.find("traceback")) >= 0:
            lines = [ln.strip() for ln in block[tb:].split(":", 1)[1].splitlines()]
            lines = [ln for ln in lines if ln and not set(ln) <= set("=-") and not ln.startswith("Root Cause")]
            if lines and lines[0].startswith("Traceback"):
                error = lines[-1]   # the exception line closes the traceback
            elif lines and not lines[0].startswith(("Signal", "<N/A>")):
                error = lines[0]
        out.append(RankFailure(int(rank.group(1)), int(code.group(1)), error))
    return out


def failure_reason(log: str, rank0_error: str | None = None) -> str:
    """Why a job on several processes failed, in one line.

    In order: a rank killed by a signal torchrun did not send (its peers then fail in a collective); else rank
    0's own error, unless it is only a communication error and another rank raised an exception; else
    torchrun's root cause; else torchrun's last line."""
    failures = rank_failures(log)
    killed = [f for f in failures if f.killed]
    if killed:
        return str(killed[0]) + (f"; rank 0 then: {rank0_error[:200]}" if rank0_error else "")
    raised = [f for f in failures if f.rank != 0 and f.error]
    comms = rank0_error is not None and re.search(r"gloo|nccl|connection|timed out", rank0_error, re.I)
    if rank0_error and not (comms and raised):
        return f"rank 0: {rank0_error}"
    if raised and comms:
        return str(raised[0])
    if failures:
        return str(failures[-1])   # torchrun prints the root cause last
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    return "torchrun failed" + (f": {lines[-1][:300]}" if lines else "")


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
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(torchrun_command(procs, job, workdir, resume, data_root), env=env, stdout=out,
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
    rank0_error = str(result[2]) if result is not None else None
    text = log_path.read_text(errors="replace")
    # The run folder goes with the job: the worker's log keeps the end of torchrun's for the operator.
    logger.warning("torchrun's log ends:\n%s", "\n".join(text.splitlines()[-40:]))
    raise DistributedJobFailed(failure_reason(text, rank0_error))


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
