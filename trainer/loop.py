"""The instrumented GAN training loop: `train(cfg, sink, workdir, resume=None) -> TrainResult`.

One *step* is `d_steps` D updates followed by `g_steps` G updates (the job knobs, docs/design.md).
Metrics of step s carry the step number s (1-based, counted after the step), from the
last D and last G update of that step:

* every step: ``loss/d`` (= ``loss/d_real`` + ``loss/d_fake``, + gp_weight · ``loss/gp`` under
  wgan_gp; 2·ln 2 at equilibrium under BCE), ``loss/g`` (= ``loss/g_adv`` + ramped fm weight ·
  ``loss/g_fm``), ``score/real``, ``score/fake`` (D's mean raw output on the D step),
  ``score/fake_g`` (on the G step), and under the BCE losses ``pred/*``, their mean sigmoid;
* on the D updates where lazy R1 runs: ``loss/r1`` (the penalty before gamma, not in ``loss/d``);
* every `probe_every` steps: ``grad|weight|update/<d|g>/<layer>`` for every parameterised
  layer of both nets, and ``sample/diversity``;
* every flush: ``lr/d``, ``lr/g``, ``perf/step_s`` (mean over the window, sampling and
  checkpointing excluded), ``perf/img_s`` (real images consumed per second);
* toy sets, every `toy_every` steps: ``toy/fit`` (all of them), ``toy/modes``, ``toy/quality`` (mixtures) and a
  "toy" snapshot;
* image sets, every `eval_every` steps: ``quality/*`` and ``perf/eval_s``
  (trainer/quality/evaluate.py) with a "quality" snapshot naming the feature extractor;
* once, at step 0: ``model/params_g``, ``model/params_d`` (parameter counts).

Nothing reads a device value back per step: rows stay on the device until a flush
(`flush_every` steps or `flush_seconds`), which is one transfer and one `sink.on_metrics`.
The sink is asked for control after each flush and at most every `CONTROL_POLL_S`.

Determinism: init from `seed`; data, noise and the fixed sample z each have their own
generator, all saved in checkpoints, so a resumed run repeats the uninterrupted one
exactly (bit-for-bit on CPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.augment import DiffAugment
from ganscope.trainer.config import JobConfig
from ganscope.trainer.data import DataSource, DatasetError, build_data
from ganscope.trainer.device import amp_enabled, autocast, memory_format, resolve_device
from ganscope.trainer.ema import EmaGenerator
from ganscope.trainer.heal import keep_checkpoints
from ganscope.trainer.losses import Objective, gradient_penalty, r1_penalty
from ganscope.trainer.models import NamedNet, build_models, parameter_count, z_shape
from ganscope.trainer.quality.evaluate import QualityEval
from ganscope.trainer.quality.toyfit import toy_fit
from ganscope.trainer.probes import LayerProbe, MetricBuffer, diversity
from ganscope.trainer.samples import GRID_N, checkpoint_figures, generate, images_png, preserved_buffers
from ganscope.trainer.sink import Sink
from ganscope.trainer.toy import density_payload, mixture_for, mode_stats

Status = Literal["succeeded", "cancelled", "stopped", "handback", "heal"]
# "heal": the caller rolls back and trains on with a patched config (trainer/heal.py)
_CONTROL_STATUS: dict[str, Status] = {"cancel": "cancelled", "stop": "stopped", "handback": "handback", "heal": "heal"}
CONTROL_POLL_S = 0.5
KEEP_CHECKPOINTS = 3
TOY_EVAL_N = 2500  # as VEEGAN and PacGAN score mixtures
# Offsets of the per-purpose generators from the run seed, so streams never overlap.
_NOISE_SALT, _FIXED_Z_SALT, _EVAL_SALT, _REAL_SALT = 1, 2, 3, 4


@dataclass
class TrainResult:
    status: Status
    step: int
    reason: str | None = None


def total_steps(cfg: JobConfig, data: DataSource) -> int:
    """`steps`, or with `epochs` the steps that consume that many passes of real images."""
    if cfg.epochs is None:
        return cfg.steps
    if not data.length:
        raise DatasetError(f"epochs needs a finite dataset; {cfg.dataset} is sampled endlessly: use steps")
    return max(1, math.ceil(cfg.epochs * data.length / (cfg.batch_size * cfg.d_steps)))


def make_adam(net: torch.nn.Module, lr: float, cfg: JobConfig, device: torch.device) -> torch.optim.Adam:
    # The fused kernel does the whole update in one pass (4-5x faster than the per-tensor loop
    # on CPU for small nets); it exists for CPU and CUDA tensors only.
    fused = device.type in ("cpu", "cuda")
    return torch.optim.Adam(net.parameters(), lr=lr, betas=(cfg.beta1, cfg.beta2), fused=fused)


@dataclass
class _Window:
    """Host-side timing of the current flush window."""

    start: float = field(default_factory=time.perf_counter)
    steps: int = 0
    side_s: float = 0.0   # time spent sampling/checkpointing, not training

    def reset(self) -> None:
        self.start, self.steps, self.side_s = time.perf_counter(), 0, 0.0


class Trainer:
    """Owns one run's nets, optimizers, generators and probes; `run()` trains it."""

    def __init__(self, cfg: JobConfig, sink: Sink, workdir: Path, data_root: Path | None = None,
                 probes: bool = True) -> None:
        self.cfg, self.sink, self.workdir, self.probes = cfg, sink, Path(workdir), probes
        self.device = resolve_device(cfg.device)
        self.amp = amp_enabled(self.device, cfg.amp)
        self.mem_format = memory_format(self.device, cfg.channels_last)
        self.data = build_data(cfg, data_root)
        self._check_data_shape()
        self.total = total_steps(cfg, self.data)
        self.mixture = mixture_for(cfg) if cfg.is_toy else None

        g, d = build_models(cfg)
        g.to(self.device, memory_format=self.mem_format)
        d.to(self.device, memory_format=self.mem_format)
        opt_g = make_adam(g, cfg.lr_g, cfg, self.device)
        opt_d = make_adam(d, cfg.lr_d, cfg, self.device)
        data_gen = torch.Generator().manual_seed(cfg.seed)
        noise_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + _NOISE_SALT)
        fixed_z = torch.randn(z_shape(cfg, GRID_N), generator=torch.Generator().manual_seed(cfg.seed + _FIXED_Z_SALT))
        g_ema = EmaGenerator(g, cfg.ema_g) if cfg.ema_g > 0 else None
        self.state = ckpt_io.TrainState(cfg=cfg, step=0, g=g, d=d, opt_g=opt_g, opt_d=opt_d, data_gen=data_gen,
                                        noise_gen=noise_gen, fixed_z=fixed_z.to(self.device), g_ema=g_ema)
        self.objective = Objective(cfg, cfg.batch_size, self.device)
        # Augmentation draws from the checkpointed noise stream: a resumed run augments identically.
        self.augment = DiffAugment(cfg.augment_ops, noise_gen) if cfg.augment_ops else None

        self.buffer = MetricBuffer()
        self.probe_d = LayerProbe(d, "d")
        self.probe_g = LayerProbe(g, "g")
        self.buffer.define("step", self.objective.step_metrics(with_fm=cfg.fm_weight > 0))
        if cfg.r1_gamma > 0:
            self.buffer.define("r1", ["loss/r1"])
        self.buffer.define("probe", [*self.probe_d.names(), *self.probe_g.names(), "sample/diversity"])
        self.window = _Window()
        self._last_flush = time.monotonic()
        self._last_poll = time.monotonic()
        self._last_ckpt_step = -1
        self.quality = QualityEval(cfg, self.device) if self.probes and not cfg.is_toy and cfg.eval_every else None
        # Seams for one job on several processes (trainer/dist.py overrides them): processes in the
        # job, and whether this one draws samples and figures (the others' sink drops them anyway).
        self.world = 1
        self.draws = True

    # --- setup helpers -----------------------------------------------------------
    def _check_data_shape(self) -> None:
        want = (self.cfg.data_dim,) if self.cfg.is_toy else (self.cfg.channels, self.cfg.image_size,
                                                              self.cfg.image_size)
        if tuple(self.data.shape) != want:
            raise DatasetError(f"dataset {self.cfg.dataset} yields samples of shape {tuple(self.data.shape)}, "
                               f"the networks expect {want}")

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(z_shape(self.cfg, n), generator=self.state.noise_gen, device=self.device)

    def real_batch(self) -> torch.Tensor:
        x = self.data.batch(self.cfg.batch_size, self.state.data_gen)
        return x.to(self.device, non_blocking=True, memory_format=self.mem_format) if x.dim() == 4 \
            else x.to(self.device, non_blocking=True)

    def fm_weight(self, step: int) -> float:
        """Feature-matching weight at `step`: ramps linearly from 0 so the adversarial term leads early."""
        if self.cfg.fm_weight <= 0:
            return 0.0
        if self.cfg.fm_warmup_steps <= 0:
            return self.cfg.fm_weight
        return self.cfg.fm_weight * min(1.0, step / self.cfg.fm_warmup_steps)

    # --- one step ------------------------------------------------------------------
    def aug(self, x: torch.Tensor) -> torch.Tensor:
        """D's view of a batch: DiffAugment'ed when on, else the batch itself."""
        return x if self.augment is None else self.augment(x)

    def r1_due(self, step: int, k: int) -> bool:
        """Lazy R1: on every `r1_every`-th D update of the run (counted from the step, so resume agrees)."""
        return self.cfg.r1_gamma > 0 and ((step - 1) * self.cfg.d_steps + k + 1) % self.cfg.r1_every == 0

    def train_step(self, step: int) -> None:
        """Step number `step` (1-based): d_steps D updates, then g_steps G updates."""
        cfg, st, obj = self.cfg, self.state, self.objective
        g, d = self.train_nets()   # D's training forwards; G's step asks the plain st.d (its params frozen)
        probe = self.probes and step % cfg.probe_every == 0
        record = self.probes
        r1 = None

        # D updates. The last one's fake batch keeps G's graph and is reused by the first G update
        # (as pytorch/examples' dcgan does), saving one G forward per step.
        st.d.requires_grad_(True)
        for k in range(cfg.d_steps):
            last = k == cfg.d_steps - 1
            real = self.real_batch()
            z = self.noise(cfg.batch_size)
            r1_now = self.r1_due(step, k)
            if r1_now:
                real.requires_grad_(True)   # R1 differentiates D(aug(x)) in x, through the augmentation
            with autocast(self.device, self.amp):
                if last:
                    fake = g(z)
                    fake_d = fake.detach()
                else:
                    with torch.no_grad():
                        fake_d = g(z)
                real_in, fake_in = self.aug(real), self.aug(fake_d)
                logit_r, feat_r = d(real_in)
                logit_f, _ = d(fake_in)
                score_r, score_f = logit_r.float(), logit_f.float()
                loss_d_real, loss_d_fake = obj.d_terms(score_r, score_f)
                loss_d = loss_d_real + loss_d_fake
                if cfg.loss == "wgan_gp":
                    gp = gradient_penalty(lambda x: st.d(x)[0], real_in, fake_in, st.noise_gen)
                    loss_d = loss_d + cfg.gp_weight * gp
                objective_d = loss_d
                if r1_now:
                    # Lazy regularisation: a k-times rarer penalty weighted k times (StyleGAN2). Kept out of
                    # loss/d so that curve does not jump every r1_every updates.
                    r1 = r1_penalty(score_r, real)
                    objective_d = loss_d + (cfg.r1_gamma / 2 * cfg.r1_every) * r1
            st.opt_d.zero_grad(set_to_none=True)
            objective_d.backward()
            if last and probe:
                self.probe_d.before_step()
            st.opt_d.step()
            if last and probe:
                layers_d = self.probe_d.after_step()

        # G updates: D's parameters are frozen so backward computes no gradient G does not need.
        st.d.requires_grad_(False)
        feat_real = feat_r.detach().float().mean(0)
        w_fm = self.fm_weight(step)
        for j in range(cfg.g_steps):
            if j > 0:
                with autocast(self.device, self.amp):
                    fake = g(self.noise(cfg.batch_size))
            with autocast(self.device, self.amp):
                logit_fg, feat_fg = st.d(self.aug(fake))
                score_fg = logit_fg.float()
                loss_adv = obj.g_adv(score_fg)
                loss_g = loss_adv
                if cfg.fm_weight > 0:
                    # Salimans et al. 2016: match D's mean penultimate features on real data (taken from
                    # this step's D update) — mean squared, so the weight does not depend on D's width.
                    loss_fm = (feat_fg.float().mean(0) - feat_real).pow(2).mean()
                    loss_g = loss_adv + w_fm * loss_fm
            st.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            if j == cfg.g_steps - 1 and probe:
                self.probe_g.before_step()
            st.opt_g.step()
            if j == cfg.g_steps - 1 and probe:
                layers_g = self.probe_g.after_step()
            if st.g_ema is not None:
                st.g_ema.update()

        if record:   # in the order of Objective.step_metrics
            row = [loss_d, loss_d_real, loss_d_fake, loss_g, loss_adv]
            if cfg.fm_weight > 0:
                row.append(loss_fm)
            if obj.is_bce:
                row += [torch.sigmoid(score_r).mean(), torch.sigmoid(score_f).mean(), torch.sigmoid(score_fg).mean()]
            row += [score_r.mean(), score_f.mean(), score_fg.mean()]
            if cfg.loss == "wgan_gp":
                row.append(gp)
            self.buffer.record("step", step, torch.stack([t.detach().float() for t in row]))
            if r1 is not None:
                self.buffer.record("r1", step, r1.detach().float().reshape(1))
        if probe:
            self.buffer.record("probe", step, torch.cat([layers_d, layers_g, diversity(fake_d, real).reshape(1)]))

    # --- seams for several processes (identities here) -----------------------------------
    def train_nets(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The G and D that training forwards go through (DistributedDataParallel wrappers under torchrun)."""
        return self.state.g, self.state.d

    def agree(self, flush: bool, poll: bool) -> tuple[bool, bool]:
        """Whether to flush and poll after this step; under torchrun every rank takes rank 0's answer."""
        return flush, poll

    def reduce_series(self, series: dict[str, tuple[list[int], list[float]]]) -> dict[str, tuple[list[int], list[float]]]:
        return series

    def save_checkpoint(self) -> Path:
        return ckpt_io.save(self.state, ckpt_io.checkpoint_path(self.workdir, self.state.step))

    # --- periodic work ---------------------------------------------------------------
    def flush(self) -> None:
        step = self.state.step
        # The drain's device -> host copy waits for all queued device work, so timing after it
        # counts what the accelerator really spent on this window.
        series = self.reduce_series(self.buffer.drain())
        if self.probes and self.window.steps:
            train_s = max(time.perf_counter() - self.window.start - self.window.side_s, 1e-9)
            step_s = train_s / self.window.steps
            series["perf/step_s"] = ([step], [step_s])
            series["perf/img_s"] = ([step], [self.world * self.cfg.batch_size * self.cfg.d_steps / step_s])
            series["lr/d"] = ([step], [float(self.state.opt_d.param_groups[0]["lr"])])
            series["lr/g"] = ([step], [float(self.state.opt_g.param_groups[0]["lr"])])
        if series:
            self.sink.on_metrics(series)
        self.window.reset()
        self._last_flush = time.monotonic()

    def eval_generator(self) -> NamedNet:
        """The G that draws every sample: the moving average with `ema_g` on, else the trained G."""
        return self.state.g_ema.module if self.state.g_ema is not None else self.state.g

    def sample_grid(self) -> None:
        st = self.state
        png = images_png(generate(self.eval_generator(), st.fixed_z), nrow=int(math.sqrt(GRID_N)))
        self.sink.on_sample(st.step, "grid", png)

    def toy_report(self) -> None:
        """Mode coverage, quality and the density snapshot, from samples drawn with their own generator."""
        st, cfg = self.state, self.cfg
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + _EVAL_SALT + st.step)
        z = torch.randn(z_shape(cfg, TOY_EVAL_N), generator=gen).to(self.device)
        fake = generate(self.eval_generator(), z).cpu()
        real = self.data.batch(TOY_EVAL_N, gen)
        if self.mixture is not None and self.probes:
            modes, quality = mode_stats(fake, self.mixture)
            self.buffer.record_host("toy/modes", st.step, float(modes))
            self.buffer.record_host("toy/quality", st.step, quality)
        if self.probes:
            self.buffer.record_host("toy/fit", st.step, toy_fit(real, fake))
        d = st.d

        def d_prob(x: torch.Tensor) -> torch.Tensor:
            # Batches of the training size: with minibatch discrimination D's answer depends on the
            # batch, so it is asked under the conditions it was trained in (and memory stays bounded).
            n = cfg.batch_size
            with torch.no_grad(), preserved_buffers(d):   # asking D never moves its spectral-norm vectors
                return torch.cat([torch.sigmoid(d(x[i:i + n].to(self.device))[0].float()).cpu()
                                  for i in range(0, x.shape[0], n)])

        payload = density_payload(real, fake, d_prob, self.mixture, cfg.data_dim)
        self.sink.on_snapshot(st.step, "toy", payload)

    def write_checkpoint(self) -> None:
        st = self.state
        if self._last_ckpt_step == st.step:
            return
        self.flush()  # metrics up to this step reach the sink before the checkpoint that covers them
        path = self.save_checkpoint()
        self._last_ckpt_step = st.step
        self.sink.on_checkpoint(st.step, path)
        if not self.cfg.is_toy and self.draws:
            for kind, png in checkpoint_figures(self.eval_generator(), self.cfg, self.device).items():
                self.sink.on_sample(st.step, kind, png)
        ckpt_io.prune(self.workdir, keep_checkpoints(self.cfg, KEEP_CHECKPOINTS))

    def poll(self) -> str | None:
        self._last_poll = time.monotonic()
        action = self.sink.control()
        if action is not None and action not in _CONTROL_STATUS:
            raise ValueError(f"sink.control() answered {action!r}; expected None, 'cancel', 'stop', 'handback' or 'heal'")
        return action

    def _stop(self, action: str) -> TrainResult:
        if action != "heal":  # a heal abandons this state: no checkpoint of it may become the resume point
            self.write_checkpoint()
        self.flush()
        return TrainResult(status=_CONTROL_STATUS[action], step=self.state.step, reason=f"control: {action}")

    # --- the run -------------------------------------------------------------------------
    def start(self, resume: Path | None = None) -> str | None:
        """Restore a checkpoint, report the starting state; the sink's control answer (None: go on)."""
        st = self.state
        if resume is not None:
            ckpt_io.restore(st, ckpt_io.load(Path(resume)))
            self._last_ckpt_step = st.step
        st.g.train()
        st.d.train()
        if st.g_ema is not None:
            st.g_ema.module.train()   # sampled like G: batch statistics, buffers restored after
        action = self.poll()
        if action is None and st.step == 0:
            if self.probes:
                # Sizes let a detector judge the G/D capacity balance without building the nets.
                self.buffer.record_host("model/params_g", 0, parameter_count(st.g))
                self.buffer.record_host("model/params_d", 0, parameter_count(st.d))
            self._periodic_outputs(force=True)
            if not self.cfg.is_toy:
                # A grid of real images (their own generator: the training stream is untouched), shown
                # beside G's samples so a reader can judge them against the data.
                real = self.data.batch(GRID_N, torch.Generator().manual_seed(self.cfg.seed + _REAL_SALT))
                self.sink.on_sample(0, "real", images_png(real, nrow=int(math.sqrt(GRID_N))))
        self.window.reset()
        return action

    def advance(self) -> str | None:
        """One step plus whatever falls due after it (samples, checkpoint, flush, control poll)."""
        cfg, st = self.cfg, self.state
        step = st.step + 1
        self.train_step(step)
        st.step = step
        self.window.steps += 1
        side_start = time.perf_counter()
        self._periodic_outputs(force=step == self.total)
        if step % cfg.checkpoint_every == 0 or step == self.total:
            self.write_checkpoint()
        # A checkpoint flushes (and restarts the timing window): count only side time inside this window.
        self.window.side_s += time.perf_counter() - max(side_start, self.window.start)
        flush, poll = self.agree(step % cfg.flush_every == 0 or time.monotonic() - self._last_flush >= cfg.flush_seconds,
                                 time.monotonic() - self._last_poll >= CONTROL_POLL_S)
        if flush:
            self.flush()
        return self.poll() if flush or poll else None

    def run(self, resume: Path | None = None) -> TrainResult:
        action = self.start(resume)
        while action is None and self.state.step < self.total:
            action = self.advance()
        if action is not None:
            return self._stop(action)
        self.flush()
        return TrainResult(status="succeeded", step=self.state.step)

    def _periodic_outputs(self, force: bool) -> None:
        step = self.state.step
        if not self.draws:
            return
        if self.cfg.is_toy:
            if force or step % self.cfg.toy_every == 0:
                self.toy_report()
        elif force or step % self.cfg.sample_every == 0:
            self.sample_grid()
        if self.quality is not None:
            self.quality.maybe_report(self)


def train(cfg: JobConfig, sink: Sink, workdir: Path, resume: Path | None = None, data_root: Path | None = None,
          *, probes: bool = True) -> TrainResult:
    """Train one job, reporting through `sink`; see the module docstring.

    `probes=False` turns every measurement off (same nets and updates): the overhead
    benchmark's baseline. Returns when the steps are done or `sink.control()` says so,
    after a final flush and checkpoint.
    """
    return Trainer(cfg, sink, Path(workdir), data_root=data_root, probes=probes).run(resume)
