"""The SDK's torch side: watch a script's own G and D, and the helpers that measure what the rules read.

Same cost rule as the built-in trainer: nothing here reads a value back to the host per step. The
probes (trainer/probes.py's LayerProbe) and the helpers build device tensors; `DeviceLog` keeps them
where they were computed and hands them over in one transfer per flush.

How `watch` finds "the update": a pre-hook and a post-hook on *every* optimizer's step
(`torch.optim.optimizer.register_optimizer_step_pre_hook` / `..._post_hook`), so whatever the script
does — one optimizer per net, several, one for both, D stepped five times per G step, optimizers made
after `watch`, Lightning's wrapped optimizers, AMP's GradScaler skipping a step — each real step of a
watched parameter is seen. Around a step the hooks copy the weights it updates and then measure, for the
layers that optimizer owns: the gradient the step used (the optimizer leaves .grad alone), the weights
after it, and the change. Module or parameter hooks would see backward passes, not updates: gradient
accumulation, skipped steps and D's gradients from G's loss would all be miscounted.

Timing: what the hooks measure is attached to the step of the script's next `run.log()` (or helper call
with an explicit step); a net stepped several times before that keeps its last measurement, as the
trainer's probe keeps the last D update of a step.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from ganscope.trainer.probes import LayerProbe, MetricBuffer, diversity, is_weight_layer, module_layers
from ganscope.trainer.toy import Mixture, mixture_for, mode_stats

_EPS = 1e-7  # probabilities are clamped to [eps, 1 - eps] before their logit


class DeviceLog:
    """One run's device-side values: pending ones wait for the next logged step; all leave in one transfer."""

    def __init__(self, flush_every: int = 50, flush_seconds: float = 1.0) -> None:
        self.buffer = MetricBuffer()
        self.flush_every = max(1, flush_every)
        self.flush_seconds = flush_seconds
        self._pending: dict[str, torch.Tensor] = {}  # group -> its latest row, waiting for a step
        self._pending_host: dict[str, float] = {}  # name -> host value, waiting for a step
        self._rows = 0
        self._since = time.monotonic()

    def group(self, group: str, names: list[str]) -> None:
        if not self.buffer.has(group):
            self.buffer.define(group, names)

    def put(self, group: str, names: list[str], row: torch.Tensor, step: int | None) -> None:
        """A row of values: recorded at `step`, or (None) kept until the next `commit`; a newer row replaces it."""
        self.group(group, names)
        if step is None:
            self._pending[group] = row
        else:
            self.buffer.record(group, int(step), row)
            self._rows += 1

    def put_host(self, values: Mapping[str, float], step: int | None) -> None:
        """Values already on the host (counted, not measured per step): at `step`, or with the next commit."""
        for name, value in values.items():
            if step is None:
                self._pending_host[name] = float(value)
            else:
                self.buffer.record_host(name, int(step), float(value))
                self._rows += 1

    def commit(self, step: int) -> None:
        for group, row in self._pending.items():
            self.buffer.record(group, step, row)
            self._rows += 1
        for name, value in self._pending_host.items():
            self.buffer.record_host(name, step, value)
            self._rows += 1
        self._pending, self._pending_host = {}, {}

    def log(self, step: int, tensors: Mapping[str, torch.Tensor]) -> None:
        """`run.log`'s tensor values at `step`, with everything pending."""
        self.commit(step)
        by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
        for name, t in tensors.items():
            if t.numel() != 1:
                raise ValueError(f"metric {name!r}: a tensor of shape {tuple(t.shape)}; log a scalar (e.g. .mean())")
            by_device.setdefault(t.device, []).append((name, t))
        for device, items in by_device.items():
            names = [n for n, _ in items]
            group = f"log:{device}:" + "\x1f".join(names)
            self.put(group, names, torch.stack([t.detach().float().reshape(()) for _, t in items]), step)

    def due(self) -> bool:
        return self._rows >= self.flush_every or (self._rows > 0 and time.monotonic() - self._since >= self.flush_seconds)

    def drain(self) -> dict[str, tuple[list[int], list[float]]]:
        self._rows, self._since = 0, time.monotonic()
        return self.buffer.drain()

    # --- helpers ------------------------------------------------------------------------
    def d_outputs(self, outputs: Mapping[str, Any], logits: bool, critic: bool, step: int | None) -> None:
        """score/<x> (mean raw output; the mean logit for probabilities) and, unless D is a critic, pred/<x>."""
        names: list[str] = []
        values: list[torch.Tensor] = []
        for which, out in outputs.items():
            if out is None:
                continue
            x = torch.as_tensor(out).detach().float()
            if logits:
                score, pred = x.mean(), torch.sigmoid(x).mean()
            else:
                pred, score = x.mean(), torch.logit(x.clamp(_EPS, 1 - _EPS)).mean()
            names.append(f"score/{which}")
            values.append(score)
            if not critic:
                names.append(f"pred/{which}")
                values.append(pred)
        if names:
            self.put("d_outputs:" + ",".join(names), names, torch.stack(values), step)

    def diversity(self, fake: torch.Tensor, real: torch.Tensor, step: int | None) -> None:
        if fake.shape[1:] != real.shape[1:]:
            raise ValueError(f"log_diversity: fake batch {tuple(fake.shape)} and real batch {tuple(real.shape)} "
                             "differ beyond the batch dimension")
        if fake.shape[0] < 2 or real.shape[0] < 2:
            raise ValueError("log_diversity needs at least two samples of each (a spread of one is zero)")
        self.put("diversity", ["sample/diversity"], diversity(fake, real).reshape(1), step)


    def modes(self, fake: torch.Tensor, mixture: Mixture, step: int | None) -> None:
        """toy/modes and toy/quality of G's samples against a Gaussian mixture (trainer/toy.py's measure)."""
        covered, quality = mode_stats(fake, mixture)  # one host read: call it every few dozen steps
        self.put_host({"toy/modes": covered, "toy/quality": quality}, step)


def mixture(centers: Any = None, sigma: float | None = None, dataset: str | None = None) -> Mixture:
    """The mixture a script samples: its own centers and sigma, or a ganscope toy set's by name."""
    if centers is not None:
        if sigma is None or sigma <= 0:
            raise ValueError("log_modes: give sigma (> 0) with centers")
        c = torch.as_tensor(centers, dtype=torch.float32).detach().cpu()
        return Mixture(centers=c.reshape(-1, 1) if c.dim() == 1 else c, sigma=float(sigma))
    found = mixture_for(SimpleNamespace(dataset=dataset)) if dataset else None  # type: ignore[arg-type]
    if found is None:
        raise ValueError("log_modes needs centers= and sigma=, or a declared dataset that is one of ganscope's "
                         "toy mixtures (ring8, grid25, gauss1d, bimodal1d, trimodal1d)")
    return found


class Watch:
    """Per-layer gradient / weight / update measurements of named nets around every optimizer step."""

    def __init__(self, log: DeviceLog, nets: Mapping[str, nn.Module], every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.log = log
        self.every = every
        self.nets = {key: net for key, net in nets.items()}
        self.layers = {key: module_layers(net) for key, net in self.nets.items()}
        for key, layers in self.layers.items():
            if not layers:
                raise ValueError(f"watch: the {key.upper()} net has no parameters")
        # optimizer -> [(probe, its counter)]: built at its first step, forgotten with it
        self._probes: "weakref.WeakKeyDictionary[torch.optim.Optimizer, list[_Probe]]" = weakref.WeakKeyDictionary()
        self._handles = [register_optimizer_step_pre_hook(self._before), register_optimizer_step_post_hook(self._after)]

    def declared_layers(self) -> dict[str, list[str]]:
        """Each net's weight layers (matrices and kernels) in registration order: the run's `layers`."""
        return {key: [name for name, ps in layers.items() if is_weight_layer(ps)] for key, layers in self.layers.items()}

    def sizes(self) -> dict[str, float]:
        """model/params_<net> (all parameters) and params/<net>/<layer> (a weight layer's matrix/kernel elements:
        with weight/<net>/<layer> at the first steps it gives the init's spread, which poor_init reads)."""
        out: dict[str, float] = {}
        for key, layers in self.layers.items():
            out[f"model/params_{key}"] = float(sum(p.numel() for ps in layers.values() for p in ps))
            for name, ps in layers.items():
                if is_weight_layer(ps):
                    out[f"params/{key}/{name}"] = float(sum(p.numel() for p in ps if p.dim() >= 2))
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def _probes_for(self, opt: torch.optim.Optimizer) -> list["_Probe"]:
        probes = self._probes.get(opt)
        if probes is None:
            owned = {id(p) for group in opt.param_groups for p in group["params"]}
            probes = []
            for key, layers in self.layers.items():
                mine = {name: ps for name, ps in layers.items() if any(id(p) in owned for p in ps)}
                if mine:
                    probes.append(_Probe(LayerProbe(mine, key)))
            self._probes[opt] = probes
        return probes

    def _before(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for pr in self._probes_for(opt):
            pr.armed = pr.count % self.every == 0
            pr.count += 1
            if pr.armed:
                pr.probe.before_step()

    def _after(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        for pr in self._probes.get(opt, ()):
            if pr.armed:
                pr.armed = False
                self.log.put(pr.group, pr.names, pr.probe.after_step(), None)
                lr = opt.param_groups[0].get("lr")
                if isinstance(lr, (int, float)):  # a tensor lr (capturable optimizers) would cost a host read
                    self.log.put_host({f"lr/{pr.probe.net_key}": lr}, None)


class _Probe:
    """A LayerProbe over the layers one optimizer updates, with its step counter."""

    def __init__(self, probe: LayerProbe) -> None:
        self.probe = probe
        self.names = probe.names()
        self.group = f"watch:{probe.net_key}:" + ",".join(probe.layers)
        self.count = 0
        self.armed = False


def images_png(images: Any, value_range: tuple[float, float] = (-1.0, 1.0), nrow: int | None = None) -> bytes:
    """A PNG of a batch: (N, C, H, W) or (C, H, W) images in value_range as a grid; (N, 2) / (N,) points as a plot."""
    from ganscope.trainer.samples import images_png as grid_png, points_png  # torchvision: only when drawing

    x = torch.as_tensor(images).detach().float()
    if x.dim() <= 2:
        return points_png(x if x.dim() == 2 else x.reshape(-1, 1))
    if x.dim() == 3:
        x = x.unsqueeze(0)
    lo, hi = value_range
    if (lo, hi) != (-1.0, 1.0):
        x = (x - lo) / max(hi - lo, 1e-12) * 2 - 1  # the grid maker reads [-1, 1]
    return grid_png(x, nrow or max(1, math.ceil(math.sqrt(x.shape[0]))))


def generate(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """G(z) without gradients and without moving its batch-norm statistics (the sample changes nothing)."""
    from ganscope.trainer.samples import generate as draw

    return draw(generator, z)
