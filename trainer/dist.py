"""One job on N processes under torchrun: the training side (`DistTrainer`, a `Trainer` with its seams filled).

Every rank runs the same loop on its own shard of the data; torch.distributed does the rest:

* **Nets**: both are wrapped in DistributedDataParallel, which broadcasts rank 0's initial weights
  and buffers and averages gradients in backward, so every rank holds the same G and D after every
  update. D's training forwards go through its wrapper; G's step asks the plain D (its parameters are
  frozen there, and a DDP forward whose gradients never come would stall D's next reduction).
* **Batch norm**: converted to SyncBatchNorm on CUDA (statistics over the global batch). gloo/CPU has no
  SyncBatchNorm kernel, so there each rank normalises with its own batch's statistics (local BN), and
  DDP's buffer broadcast keeps the running averages those of rank 0.
* **Data**: rank 0 keeps the run's streams (a 1-process run and rank 0 draw the same batches); rank r>0
  reseeds its data and noise generators from (seed, rank, step). The sets sample with replacement from
  the generator, so independent streams shard them as a DistributedSampler would an i.i.d. stream.
  The effective batch is batch_size × world; `epochs` count world × batch_size images per D update.
* **Seeds**: init from `seed` on every rank (and DDP broadcasts rank 0's anyway); the fixed sample z has
  its own seeded generator, identical on every rank.
* **Talking to the server**: rank 0 alone has the real sink. Flush and poll are decided by rank 0 and
  broadcast after every step (one tiny CPU broadcast over a gloo group, so nothing waits on a GPU), and
  the control answer (cancel/stop/handback) is broadcast each poll: all ranks stop at the same step.
* **Metrics**: loss/*, score/*, pred/* and sample/diversity are averaged over ranks (all_reduce) — each
  rank saw different data. grad/weight/update norms are rank 0's: after DDP's all-reduce the gradients
  and weights are the same on every rank. perf/step_s is rank 0's; perf/img_s counts all ranks' images;
  perf/world_size (at the step each start or resume begins from) says how many processes train the run.
* **Checkpoints**: written by rank 0 only (same format as a 1-process run); on resume every rank loads
  the same file, so a checkpoint resumes on any number of processes, and a 1-process one resumes here.
* **Samples and figures**: drawn by rank 0 only, except under SyncBatchNorm where G's forward is itself a
  collective: then every rank draws them and the others' sink drops them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import _CONTROL_STATUS, Trainer
from ganscope.trainer.sink import Sink

# Metrics each rank measures on its own data: their mean over ranks is the run's value.
AVERAGED_PREFIXES = ("loss/", "score/", "pred/", "sample/")
_ACTIONS = (None, *_CONTROL_STATUS)        # broadcast as their index
_RANK_STREAM = 0x9E3779B1                  # spreads (seed, rank, step) over the 63-bit seed space


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job, from the environment torchrun sets."""

    rank: int
    world: int
    local_rank: int
    backend: str
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_process_group(job_device: str) -> DistContext:
    """Join the job's process group (torchrun's rendezvous: MASTER_ADDR/PORT, RANK, WORLD_SIZE in the env).

    nccl with one GPU per rank (cuda:LOCAL_RANK of the GPUs the worker made visible), gloo on CPU."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if job_device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
        backend, device = "nccl", f"cuda:{local_rank}"
    else:
        backend, device = "gloo", "cpu"
    if not dist.is_initialized():
        kw = {"device_id": torch.device(device)} if backend == "nccl" else {}
        dist.init_process_group(backend, **kw)
    return DistContext(rank, world, local_rank, backend, device)


class NullSink:
    """The sink of ranks other than 0: they compute what rank 0 reports, and report nothing."""

    def on_metrics(self, series: dict[str, tuple[list[int], list[float]]]) -> None: ...
    def on_sample(self, step: int, kind: str, png: bytes) -> None: ...
    def on_snapshot(self, step: int, kind: str, payload: dict) -> None: ...
    def on_checkpoint(self, step: int, path: Path) -> None: ...

    def control(self) -> str | None:
        return None


class DistTrainer(Trainer):
    def __init__(self, cfg: JobConfig, sink: Sink, workdir: Path, ctx: DistContext,
                 data_root: Path | None = None) -> None:
        super().__init__(cfg.model_copy(update={"device": ctx.device}), sink if ctx.is_main else NullSink(),
                         workdir, data_root=data_root)
        self.ctx, self.world = ctx, ctx.world
        # Control traffic stays on the CPU: a gloo group beside nccl, so deciding a flush never syncs a GPU.
        self.ctrl = dist.new_group(backend="gloo") if ctx.backend == "nccl" else dist.group.WORLD
        st = self.state
        self.sync_bn = ctx.backend == "nccl" and cfg.batch_norm
        if self.sync_bn:
            # In place for a net whose root is not a BN layer: the same Parameter objects, so the
            # optimizers and probes built above still hold the right tensors.
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(st.g)
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(st.d)
        ids = [torch.device(ctx.device).index] if ctx.backend == "nccl" else None
        self.ddp_g = DistributedDataParallel(st.g, device_ids=ids)
        self.ddp_d = DistributedDataParallel(st.d, device_ids=ids)
        self.draws = ctx.is_main or self.sync_bn
        if cfg.epochs is not None and self.data.length:
            self.total = max(1, math.ceil(cfg.epochs * self.data.length / (cfg.batch_size * cfg.d_steps * self.world)))

    # --- seams ---------------------------------------------------------------------------
    def train_nets(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.ddp_g, self.ddp_d

    def agree(self, flush: bool, poll: bool) -> tuple[bool, bool]:
        flags = torch.tensor([int(flush), int(poll)])
        dist.broadcast(flags, src=0, group=self.ctrl)
        return bool(flags[0]), bool(flags[1])

    def poll(self) -> str | None:
        action = super().poll() if self.ctx.is_main else None
        code = torch.tensor([_ACTIONS.index(action)])
        dist.broadcast(code, src=0, group=self.ctrl)
        return _ACTIONS[int(code)]

    def reduce_series(self, series: dict[str, tuple[list[int], list[float]]]) -> dict[str, tuple[list[int], list[float]]]:
        # Every rank recorded the same names at the same steps (same loop, same schedule): one all_reduce.
        names = sorted(n for n in series if n.startswith(AVERAGED_PREFIXES))
        if not names:
            return series
        flat = torch.tensor([v for n in names for v in series[n][1]], dtype=torch.float64)
        dist.all_reduce(flat, group=self.ctrl)
        flat /= self.world
        values, offset = flat.tolist(), 0
        for n in names:
            steps = series[n][0]
            series[n] = (steps, values[offset:offset + len(steps)])
            offset += len(steps)
        return series

    def save_checkpoint(self) -> Path:
        path = ckpt_io.checkpoint_path(self.workdir, self.state.step)
        return ckpt_io.save(self.state, path) if self.ctx.is_main else path

    # --- the run ---------------------------------------------------------------------------
    def start(self, resume: Path | None = None) -> str | None:
        action = super().start(resume)
        if self.ctx.is_main and self.probes:   # at the start and at each resume (the count may change)
            self.buffer.record_host("perf/world_size", self.state.step, float(self.world))
        if self.ctx.rank > 0:   # every rank restored rank 0's streams: the others move to their own shard
            shard_streams(self.state, self.ctx.rank)
        return action


def shard_streams(st: ckpt_io.TrainState, rank: int) -> None:
    """Rank `rank`'s own data and noise streams, from (seed, rank, step): rank 0 keeps the run's."""
    if rank > 0:
        base = (st.cfg.seed * _RANK_STREAM + rank * 1_000_003 + st.step) % (2**63)
        st.data_gen.manual_seed(base)
        st.noise_gen.manual_seed(base + 1)


def nets_in_sync(trainer: DistTrainer) -> bool:
    """Whether every rank holds the same G and D parameters (DDP's promise), by comparing checksums.

    Buffers are left out: batch-norm running statistics move with each rank's own batch between DDP's
    broadcasts of rank 0's."""
    sums = []
    for net in (trainer.state.g, trainer.state.d):
        flat = torch.cat([p.detach().double().flatten().cpu() for p in net.parameters()])
        sums += [flat.sum(), flat.abs().sum(), flat.square().sum()]
    local = torch.stack(sums)
    every = [torch.empty_like(local) for _ in range(trainer.world)]
    dist.all_gather(every, local, group=trainer.ctrl)
    return all(torch.equal(every[0], other) for other in every[1:])
