"""The worker's side of a heal (on_failure: heal; docs/knobs.md, failure policy).

The server sets the run's control to "heal"; the training loop ends with status "heal" without
checkpointing the sick state, and `prepare` then:

1. waits until everything measured so far has reached the server (the server rewinds the run's record
   when told, so data of the abandoned stretch must not arrive after that);
2. asks the server for the pending heal (GET /api/runs/{id}/heal): the alert's onset and the patched config;
3. picks the newest checkpoint taken before the onset — this worker's own files first (it keeps more of
   them under heal: `keep_checkpoints`), else one the server holds; none, or one whose networks the new
   config cannot load (a remedy that changes a width, spectral_norm, the batch size): training restarts
   from step 0;
4. drops its own checkpoints after that step and reports (POST /api/runs/{id}/heal/{event});
and hands back (patched config, checkpoint or None), for `train()` to run again in the same job.

Never imports the server.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ganscope.trainer.config import JobConfig

log = logging.getLogger("ganscope.heal")
HEAL_KEEP_EXTRA = 5  # local checkpoints kept beyond the usual few, so a rollback rarely needs a download
_REASON_RE = re.compile(r"heal #(\d+)")


class HealError(RuntimeError):
    """The heal could not be carried out (server unreachable, data undelivered): the run fails with this."""


class HttpClient(Protocol):
    """What a heal needs of trainer.client.Client."""

    def flush(self, timeout: float) -> bool: ...
    def call(self, method: str, path: str, **kw: Any) -> Any: ...
    def download(self, path: str, dest: Path) -> Any: ...


@dataclass
class Healed:
    cfg: JobConfig
    resume: Path | None
    event_id: int | None  # None: no heal was pending (a stale answer): resumed from the newest own checkpoint
    rollback_step: int


def keep_checkpoints(cfg: JobConfig, keep: int) -> int:
    """How many of its own checkpoint files the loop keeps: more under on_failure heal, to roll back to."""
    return keep + HEAL_KEEP_EXTRA if cfg.on_failure == "heal" else keep


def event_of(reason: str | None) -> int | None:
    """The heal event an answer's reason names ("heal #12: ..."), or None."""
    m = _REASON_RE.match(reason or "")
    return int(m.group(1)) if m else None


def _local(workdir: Path) -> dict[int, Path]:
    from ganscope.trainer.checkpoint import checkpoint_dir

    out = {}
    for p in checkpoint_dir(workdir).glob("step_*.pt"):
        try:
            out[int(p.stem.split("_", 1)[1])] = p
        except ValueError:
            continue
    return out


def _ok(r: Any, what: str) -> Any:
    if r.status_code != 200:
        raise HealError(f"{what}: HTTP {r.status_code}: {r.text[:300]}")
    return r.json()


def _pick(client: HttpClient, run_id: int, workdir: Path, before: int, cfg: JobConfig) -> tuple[int, Path | None]:
    """(step, file) of the newest checkpoint before `before` that `cfg` can restore; (0, None): start afresh."""
    from ganscope.trainer import checkpoint as ckpt_io

    own = {s: p for s, p in _local(workdir).items() if s < before}
    path: Path | None = None
    if own:
        step = max(own)
        path = own[step]
    else:
        listed = _ok(client.call("GET", f"/api/runs/{run_id}/checkpoints"), "listing checkpoints")
        steps = [int(c["step"]) for c in listed.get("checkpoints", []) if int(c["step"]) < before]
        if not steps:
            return 0, None
        step = max(steps)
        path = workdir / f"heal-{step}.ckpt"
        if client.download(f"/api/runs/{run_id}/checkpoints/{step}", path) is None:
            return 0, None
        log.info("run %d: no own checkpoint before step %d: downloaded the server's of step %d", run_id, before, step)
    try:
        saved = ckpt_io.config_of(ckpt_io.load(path))
    except (ckpt_io.CheckpointError, ValueError) as exc:
        log.warning("run %d: checkpoint of step %d unreadable (%s): healing from step 0", run_id, step, exc)
        return 0, None
    if diff := ckpt_io.shape_diff(saved, cfg):
        log.info("run %d: the remedy changes %s: the checkpoint cannot be reused, healing from step 0", run_id,
                 ", ".join(diff))
        return 0, None
    return step, path


def prepare(client: HttpClient, run_id: int, worker_id: str, workdir: Path, cfg: JobConfig, from_step: int,
            device: str | None, drain_timeout: float) -> Healed:
    """Roll back and patch (see the module docstring). `device`: the worker's device, kept over the config's."""
    if not client.flush(drain_timeout):
        raise HealError(f"heal: the data measured up to step {from_step} did not reach the server within "
                        f"{drain_timeout:.0f}s, so the run's record cannot be rewound safely")
    r = client.call("GET", f"/api/runs/{run_id}/heal")
    if r.status_code == 404:
        # Nothing pending (an answer about a heal already applied): carry on from the newest own checkpoint.
        own = {s: p for s, p in _local(workdir).items() if s <= from_step}
        step = max(own, default=0)
        log.info("run %d: no heal pending; resuming from step %d", run_id, step)
        return Healed(cfg, own.get(step), None, step)
    pending = _ok(r, "fetching the pending heal")
    event = pending["event"]
    new_cfg = JobConfig.model_validate(pending["config"])
    if device is not None and new_cfg.device != "cpu":
        new_cfg = new_cfg.model_copy(update={"device": device})
    onset = int(event.get("onset_step") or 0)
    step, path = _pick(client, run_id, workdir, onset, new_cfg)
    for s, p in _local(workdir).items():
        if s > step:
            p.unlink(missing_ok=True)  # the abandoned stretch's: never a resume point again
    body = {"worker_id": worker_id, "from_step": max(int(from_step), step), "rollback_step": step}
    _ok(client.call("POST", f"/api/runs/{run_id}/heal/{event['id']}", json=body), "reporting the heal")
    log.info("run %d: healing %s (event %s): rolled back from step %d to %d; %s", run_id, event.get("signature"),
             event["id"], from_step, step, ", ".join(f"{c['knob']}={c['to']!r}" for c in event.get("changes", [])))
    return Healed(new_cfg, path, int(event["id"]), step)


class HealState(Protocol):
    """What the worker's JobState shares with a heal (trainer/worker.py)."""

    run_id: int
    step: int
    action: str | None
    reason: str | None
    healed: set[int]


def train_on(train: Any, client: HttpClient, state: HealState, worker_id: str, workdir: Path, cfg: JobConfig,
             sink: Any, result: Any, device: str, drain_timeout: float, **kw: Any) -> Any:
    """Heal while `train` ends with status "heal" (a run may heal several times); the last TrainResult."""
    while result.status == "heal":
        healed = prepare(client, state.run_id, worker_id, workdir, cfg, int(result.step),
                         None if cfg.device == "cpu" else device, drain_timeout)
        if healed.event_id is not None:
            state.healed.add(healed.event_id)  # a late answer naming it is not applied twice
        if state.action == "heal":
            state.action, state.reason = None, None
        cfg, state.step = healed.cfg, healed.rollback_step
        result = train(cfg, sink, workdir, resume=healed.resume, **kw)
    return result
