"""The worker process: claim a job over HTTP, train it, report everything, hand it back on SIGTERM.

    python -m ganscope.trainer.worker --server URL [--token T] [--device cuda:1] [--gpus N|all] [--spool DIR]
        [--workdir DIR] [--sys-every S]

States (one stdout line each): idle -> claimed run N -> training -> finishing -> idle. A
heartbeat thread reports the step every --heartbeat seconds; its answer (and each ingest
answer) can say cancel / stop (the loop checkpoints and returns), heal (trainer/heal.py: roll back,
patch the config, train on) or release (the server gave
the job to someone else: abandon it without reporting). SIGTERM asks the loop to hand the
job back: it checkpoints, the checkpoint and every point are flushed, and `finish` with
status "handback" makes the server requeue the job for the next worker, which resumes from
that checkpoint. Whatever happens, a final status is spooled in a `finally`.

Devices: the worker offers `--device` (and, with `--gpus N`/`all`, that many GPUs from it on) in every
claim, so it only gets jobs whose `gpus` it can serve. A system-metrics thread samples GPUs, CPU and
RAM every `--sys-every` seconds (trainer/sysmetrics.py): each sample goes to the run in training, at
the step the sink last saw flushed (no host sync of its own), and with the next heartbeat or claim to
the server's record of this worker.

Several processes per job (`--procs-per-job N`, or a job's `gpus` on a worker owning that many GPUs):
the worker launches the job under torchrun and relays rank 0's reports to the same sink (trainer/relay.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import signal
import socket
import sys
import threading
import traceback
from types import SimpleNamespace
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganscope.trainer.advertise import describe_devices, gpu_uuid, resolve_gpus
from ganscope import __version__
from ganscope.trainer.client import Client, ServerUnavailable, SpoolBusy
from ganscope.trainer.config import MAX_GPUS, JobConfig
from ganscope.trainer import heal
from ganscope.trainer.device import DeviceError
from ganscope.trainer.relay import launch, procs_for, visible_devices
from ganscope.trainer.sysmetrics import GpuRef, SysMetricsThread, SystemSampler

log = logging.getLogger("ganscope.worker")


@dataclass
class JobState:
    """What the training thread, the heartbeat thread and the spool sender share about one run."""

    run_id: int
    step: int = 0
    action: str | None = None  # sticky: cancel / stop / release, once the server said it
    reason: str | None = None
    finished: bool = False  # the final status reached the server: later answers concern a closed run
    finish_seq: int | None = None  # spool entry of the final status, once written
    healed: set[int] = field(default_factory=set)  # heal events applied: a late answer naming one is stale

    def told(self, action: str | None, reason: str | None) -> None:
        if not action or action == "continue" or self.action == "release" or self.finished:
            return
        if action == "heal" and (self.action in ("cancel", "stop") or heal.event_of(reason) in self.healed):
            return  # a stop outranks a heal; a heal already applied is not applied twice
        if action != self.action:
            log.info("run %d: server says %s%s", self.run_id, action, f" ({reason})" if reason else "")
        self.action, self.reason = action, reason


class WorkerSink:
    """The trainer's Sink: everything goes through the spooling client, nothing blocks on the network."""

    def __init__(self, client: Client, state: JobState, worker: "Worker") -> None:
        self.client, self.state, self.worker = client, state, worker

    @property
    def _dropped(self) -> bool:
        # After a release another worker owns the run: what we would send now is not ours to send.
        return self.state.action == "release"

    def on_metrics(self, series: dict[str, tuple[list[int], list[float]]]) -> None:
        if self._dropped:
            return
        self.client.log_metrics(self.state.run_id, series)
        top = max((int(s[-1]) for s, _ in series.values() if len(s)), default=self.state.step)
        self.state.step = max(self.state.step, top)

    def on_sample(self, step: int, kind: str, png: bytes) -> None:
        if not self._dropped:
            self.client.put_sample(self.state.run_id, step, kind, png)

    def on_snapshot(self, step: int, kind: str, payload: dict) -> None:
        if not self._dropped:
            self.client.put_snapshot(self.state.run_id, step, kind, payload)

    def on_checkpoint(self, step: int, path: Path) -> None:
        if not self._dropped:
            self.client.put_checkpoint(self.state.run_id, step, Path(path))
            log.info("run %d: checkpoint at step %d spooled for upload", self.state.run_id, step)

    def control(self) -> str | None:
        if self.state.action == "release":
            return "cancel"  # stop at once; the worker then drops the run without finishing it
        if self.worker.terminating.is_set():
            return "handback"
        if self.state.action in ("cancel", "stop", "heal"):
            return self.state.action
        return None


class Worker:
    def __init__(self, opts: argparse.Namespace) -> None:
        self.opts = opts
        self.worker_id = opts.worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.workdir = Path(opts.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.terminating = threading.Event()
        self._current: JobState | None = None
        self.device = resolve_device(opts.device)
        self.gpu_indices = resolve_gpus(self.device, opts.gpus)
        self.devices = describe_devices(self.device, self.gpu_indices)
        if self.device.startswith("cuda") and opts.procs_per_job > len(self.gpu_indices):
            raise DeviceError(f"--procs-per-job {opts.procs_per_job} needs as many GPUs: start the worker with "
                              f"--gpus {opts.procs_per_job} (it owns {len(self.gpu_indices)})")
        self.client = Client(opts.server, Path(opts.spool), token=opts.token, on_action=self._on_ingest_action,
                             flush_seconds=0.5)
        # torch and the trainer load now (seconds), not between claiming a job and heart-beating for it.
        from ganscope.trainer.loop import train

        self._train = train
        self._hb_stop = threading.Event()
        self._hb = threading.Thread(target=self._heartbeat_loop, name="ganscope-heartbeat", daemon=True)
        self._sys_lock = threading.Lock()
        self._sys_new: dict[str, float] | None = None  # the latest sample, until a heartbeat or claim carries it
        self._sys_step: tuple[int, int] | None = None  # (run, step) of the last sample posted to a run
        self._sys: SysMetricsThread | None = None
        if opts.sys_every > 0:
            sampler = SystemSampler([GpuRef(i, gpu_uuid(i)) for i in self.gpu_indices])
            if self.gpu_indices and sampler.gpu_error:
                log.warning("worker %s: no GPU system metrics (%s)", self.worker_id, sampler.gpu_error)
            self._sys = SysMetricsThread(sampler, opts.sys_every, self._on_sys_sample)

    # --- lifecycle --------------------------------------------------------------
    def run(self) -> int:
        log.info("worker %s: serving %s on %s (spool %s)", self.worker_id, self.opts.server,
                 ", ".join(d["name"] for d in self.devices), self.opts.spool)
        self._hb.start()
        if self._sys is not None:
            self._sys.start()
        jobs = 0
        idle_logged = False
        server_down = False
        try:
            while not self.terminating.is_set():
                if self._finish_pending():
                    # A previous job's final status is undelivered: claiming now would make the server
                    # take that job for lost, and the server is not accepting data anyway.
                    if not server_down:
                        log.warning("worker %s: a final status waits in the spool; claiming when it is "
                                    "delivered", self.worker_id)
                    server_down = True
                    self.client.poke()
                    self.terminating.wait(max(self.opts.poll, 1.0))
                    continue
                try:
                    job = self.claim()
                except ServerUnavailable as exc:
                    if not server_down:
                        log.warning("worker %s: cannot claim (%s); retrying", self.worker_id, exc)
                    server_down = True
                    self.terminating.wait(max(self.opts.poll, 1.0))
                    continue
                if server_down:
                    log.info("worker %s: server reachable again", self.worker_id)
                    server_down = False
                    self.client.poke()
                if job is None:
                    if not idle_logged:
                        log.info("worker %s: idle, polling every %.1fs", self.worker_id, self.opts.poll)
                        idle_logged = True
                    self.terminating.wait(self.opts.poll)
                    continue
                idle_logged = False
                self.run_job(job)
                jobs += 1
                if self.opts.once or (self.opts.max_jobs and jobs >= self.opts.max_jobs):
                    break
        finally:
            self._hb_stop.set()
            if self._sys is not None:
                self._sys.stop()
            drained = self.client.close(self.opts.drain_timeout)
            log.info("worker %s: exiting after %d job(s)%s", self.worker_id, jobs,
                     "" if drained else " (spool not empty: kept on disk for replay)")
        return 0

    def claim(self) -> dict[str, Any] | None:
        body: dict[str, Any] = {"worker_id": self.worker_id, "host": socket.gethostname(), "devices": self.devices,
                                "version": __version__}
        if (sample := self._take_sys()) is not None:
            body["sys"] = sample
        r = self.client.call("POST", "/api/workers/claim", json=body, retry_for=0, stop=self.terminating)
        if r.status_code == 204:
            return None
        if r.status_code != 200:
            raise ServerUnavailable(f"claim answered HTTP {r.status_code}: {r.text[:300]}")
        return r.json()

    def run_job(self, job: dict[str, Any]) -> None:
        run_id = int(job["run_id"])
        state = JobState(run_id)
        resume = job.get("resume")
        if resume:
            state.step = int(resume.get("step") or 0)  # system samples before the first flush land here
        log.info("run %d: claimed (attempt %s)%s", run_id, job.get("attempt"),
                 f", resuming from step {resume['step']}" if resume else "")
        rundir = self.workdir / "runs" / f"{run_id}-{job.get('attempt', 0)}-{uuid.uuid4().hex[:4]}"
        rundir.mkdir(parents=True, exist_ok=True)
        status, step, error = "failed", 0, None
        self._current = state
        from ganscope.trainer.data import default_data_root, public_message  # torch: loaded to train anyway
        try:
            cfg = JobConfig.model_validate(job["config"])
            if cfg.device != "cpu":  # the operator pins workers to devices; a job asking cpu gets cpu
                cfg = cfg.model_copy(update={"device": self.device})
            resume_path = self._fetch_checkpoint(run_id, rundir, resume.get("url")) if resume else None
            kw: dict[str, Any] = {"data_root": Path(self.opts.data_root)} if self.opts.data_root else {}
            procs = procs_for(cfg.device, self.gpu_indices, self.opts.procs_per_job, cfg.gpus)
            log.info("run %d: training on %s%s", run_id, cfg.device, f" x {procs} processes (torchrun)" * (procs > 1))
            sink = WorkerSink(self.client, state, self)
            train = self._train
            if procs > 1:   # one job on several processes: torchrun launches them, rank 0 reports here
                cuda = visible_devices(self.gpu_indices[:procs]) if cfg.device.startswith("cuda") else None

                def train(cfg: JobConfig, sink: Any, workdir: Path, resume: Path | None = None,
                          data_root: Path | None = None) -> SimpleNamespace:
                    status, step, reason = launch(cfg, sink, workdir, procs, resume, data_root, cuda)
                    return SimpleNamespace(status=status, step=step, reason=reason)
            result = train(cfg, sink, rundir, resume=resume_path, **kw)
            if result.status == "heal":  # on_failure: heal — roll back, patch, train on in this job
                result = heal.train_on(train, self.client, state, self.worker_id, rundir, cfg, sink,
                                       result, self.device, self.opts.drain_timeout, **kw)
            status, step, error = result.status, int(result.step), result.reason
            error = error if status == "failed" else None
            if error:
                error = public_message(error, self.opts.data_root or default_data_root(), self.workdir,
                                       os.environ.get("GANSCOPE_HOME"))
        except BaseException as exc:  # noqa: BLE001 - reported as the run's failure, then re-raised if fatal
            status, step = "failed", state.step
            error = public_message(traceback.format_exception_only(type(exc), exc)[-1].strip(),
                                   self.opts.data_root or default_data_root(), self.workdir,
                                   os.environ.get("GANSCOPE_HOME"))
            log.error("run %d: failed: %s\n%s", run_id, error, traceback.format_exc())
            if not isinstance(exc, Exception):
                raise
        finally:
            if state.action == "release":
                log.info("run %d: released by the server (taken over elsewhere): dropped, not finished", run_id)
                self.client.flush_metrics()
            else:
                seq = self.client.finish(run_id, {"worker_id": self.worker_id, "status": status, "step": step,
                                                  "error": error})
                log.info("run %d: finishing as %s at step %d", run_id, status, step)
                # Heart-beat until the final status is delivered so the server does not requeue meanwhile.
                state.finish_seq = seq
                if not self.client.wait_delivered(seq, self.opts.drain_timeout):
                    log.warning("run %d: final status not delivered within %.0fs; it stays spooled (%d entries) "
                                "and is replayed when the server takes data again", run_id,
                                self.opts.drain_timeout, self.client.spool.count())
            self._current = None
            shutil.rmtree(rundir, ignore_errors=True)  # the spool holds its own copy of every checkpoint
            log.info("run %d: done", run_id)

    def _finish_pending(self) -> bool:
        return any(e.kind == "finish" for e in self.client.spool.entries())

    def _fetch_checkpoint(self, run_id: int, rundir: Path, url: str | None) -> Path | None:
        dest = rundir / "resume.ckpt"
        r = self.client.download(url or f"/api/runs/{run_id}/checkpoints/latest", dest)
        if r is None:
            log.warning("run %d: server has no checkpoint to resume from; starting at step 0", run_id)
            return None
        log.info("run %d: downloaded checkpoint of step %s", run_id, r.headers.get("x-ganscope-step"))
        return dest

    # --- server answers -----------------------------------------------------------
    def _on_ingest_action(self, run_id: int, action: str, reason: str | None) -> None:
        state = self._current
        if state is not None and state.run_id == run_id:
            state.told(action, reason)

    def _heartbeat_loop(self) -> None:
        failing = False
        while not self._hb_stop.wait(self.opts.heartbeat):
            state = self._current
            if state is None or self._finish_delivered(state):
                continue
            body: dict[str, Any] = {"worker_id": self.worker_id, "run_id": state.run_id, "step": state.step}
            if (sample := self._take_sys()) is not None:
                body["sys"] = sample
            try:
                r = self.client.call("POST", "/api/workers/heartbeat", retry_for=0, json=body)
                if r.status_code == 200:
                    data = r.json()
                    if not self._finish_delivered(state):  # else it would answer about a finished run
                        state.told(data.get("action"), data.get("reason"))
                    if failing:
                        log.info("run %d: heartbeat reaches the server again", state.run_id)
                        self.client.poke()
                    failing = False
                elif not failing:
                    log.warning("run %d: heartbeat answered HTTP %d: %s", state.run_id, r.status_code, r.text[:300])
                    failing = True
            except (ServerUnavailable, ValueError) as exc:
                if not failing:
                    log.warning("run %d: heartbeat failed (%s); training goes on", state.run_id, exc)
                failing = True

    # --- system metrics -------------------------------------------------------------------
    def _on_sys_sample(self, sample: dict[str, float]) -> None:
        """A new sample: kept for the next heartbeat/claim, and logged to the run in training at its step.

        The step is the last one the sink saw flushed (a plain int the loop's own hand-over set): no device
        read happens here. One point per step: while the step stands still (a long evaluation, a checkpoint
        upload) the run's series waits, and the worker's own record still moves."""
        with self._sys_lock:
            self._sys_new = sample
        state = self._current
        if state is None or state.action == "release" or state.finish_seq is not None:
            return
        key = (state.run_id, state.step)
        if self._sys_step is not None and self._sys_step[0] == key[0] and self._sys_step[1] >= key[1]:
            return
        self._sys_step = key
        self.client.log_metrics(state.run_id, {name: ([key[1]], [value]) for name, value in sample.items()})

    def _take_sys(self) -> dict[str, float] | None:
        with self._sys_lock:
            sample, self._sys_new = self._sys_new, None
        return sample

    def _finish_delivered(self, state: JobState) -> bool:
        if state.finish_seq is not None and self.client.delivered(state.finish_seq):
            state.finished = True
        return state.finished

    def on_signal(self, signum: int, _frame: Any) -> None:
        if self.terminating.is_set():
            log.warning("worker %s: second signal: exiting now (spool kept on disk)", self.worker_id)
            os._exit(1)
        state = self._current
        doing = ("idle" if state is None else f"handing run {state.run_id} back" if state.finish_seq is None
                 else f"delivering the final status of run {state.run_id}")
        log.info("worker %s: %s: %s, then exiting", self.worker_id, signal.Signals(signum).name, doing)
        self.terminating.set()


def resolve_device(device: str) -> str:
    """auto -> cuda:0 or cpu; a device this host lacks stops the worker now, not at its first job."""
    from ganscope.trainer.device import resolve_device as torch_device

    return str(torch_device(device))


def _gpus_arg(value: str) -> str:
    if value == "all" or (value.isdigit() and 0 <= int(value) <= MAX_GPUS):
        return str(int(value)) if value.isdigit() else value
    raise argparse.ArgumentTypeError(f"expected 0-{MAX_GPUS} or 'all', got {value!r}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ganscope worker", description="Train ganscope jobs claimed from a server.")
    p.add_argument("--server", default=os.environ.get("GANSCOPE_SERVER", "http://127.0.0.1:8000"))
    p.add_argument("--token", default=os.environ.get("GANSCOPE_TOKEN"), help="or GANSCOPE_TOKEN")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpus", type=_gpus_arg, default=os.environ.get("GANSCOPE_GPUS", "0"),
                   help="GPUs this worker owns and advertises (or GANSCOPE_GPUS): 0 = just --device; N = N GPUs "
                        "from --device on; all = every visible GPU (a Slurm or Kubernetes allotment). Jobs asking "
                        "for up to that many GPUs (`gpus`) are claimed and train on that many under torchrun")
    p.add_argument("--procs-per-job", type=int, default=int(os.environ.get("GANSCOPE_PROCS_PER_JOB", "0")),
                   help="processes per job under torchrun (or GANSCOPE_PROCS_PER_JOB): on CPU, N gloo ranks; on GPUs, "
                        "N ranks on N of the worker's GPUs (needs --gpus >= N); 0 = one on CPU, the job's `gpus` on GPUs")
    p.add_argument("--sys-every", type=float, default=float(os.environ.get("GANSCOPE_SYS_EVERY", "5")),
                   help="seconds between system-metrics samples (sys/*: GPU, CPU, RAM); 0 turns them off "
                        "(or GANSCOPE_SYS_EVERY)")
    p.add_argument("--spool", default=None, help="undelivered requests (default: <workdir>/spool)")
    p.add_argument("--workdir", default=os.path.join(os.path.expanduser("~"), ".ganscope", "worker"))
    p.add_argument("--poll", type=float, default=2.0, help="seconds between claims while idle")
    p.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    p.add_argument("--once", action="store_true", help="exit after one job")
    p.add_argument("--max-jobs", type=int, default=0, help="exit after this many jobs (0: never)")
    p.add_argument("--data-root", default=os.environ.get("GANSCOPE_DATA_ROOT"))
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="longest wait for the server to take spooled data after a job or at exit")
    p.add_argument("--worker-id", default=None)
    opts = p.parse_args(argv)
    if opts.device != "auto" and not re.match(r"^(cpu|cuda(:\d+)?|mps)$", opts.device):
        p.error(f"--device must be auto, cpu, cuda or cuda:N, got {opts.device!r}")
    if opts.procs_per_job < 0:
        p.error(f"--procs-per-job must be 0 or more, got {opts.procs_per_job}")
    opts.spool = opts.spool or os.path.join(opts.workdir, "spool")
    return opts


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per state change, not per request
    try:
        worker = Worker(opts)
    except (DeviceError, SpoolBusy) as exc:  # operator errors: one clear line, no traceback
        print(f"ganscope worker: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, worker.on_signal)
    signal.signal(signal.SIGINT, worker.on_signal)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
