"""A PyTorch Lightning callback that diagnoses a GAN LightningModule with no code in the module.

    from ganscope.trainer.lightning import GanscopeCallback

    trainer = L.Trainer(max_epochs=5, callbacks=[GanscopeCallback(name="my gan")])

What it records, every training batch:
* grad|weight|update/<g|d>/<layer> of the two nets (`run.watch`: hooks on the optimizers' steps, so
  manual optimisation with two optimizers, `toggle_optimizer` and AMP are all seen);
* everything the module logs with `self.log`, its GAN names translated (`d_loss`, `g_loss`, `errD`,
  `D(x)`, `D_G_z1`... -> loss/d, loss/g, pred/real, pred/fake: trainer/tagmap.py); other names as they are;
* sample/diversity of G's latest output against the batch's real images (the first tensor of the batch
  with the same shape per sample), captured by a forward hook on G.

Finding the nets: the module's attributes `generator` and `discriminator` (then `netG`/`netD`, `G`/`D`,
`gen`/`disc`), or the attribute names or modules given to the callback. The run's `config` is the
module's `hparams`; `declared.total_steps` defaults to the trainer's estimate of its training batches.
Only the global-zero process logs. Works with `lightning` (lightning.pytorch) and `pytorch_lightning`:
`GanscopeCallback` subclasses the first one installed, `PLGanscopeCallback` always pytorch_lightning's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ganscope.trainer import sdk
from ganscope.trainer.tagmap import TagMap

_NET_NAMES = {"g": ("generator", "netG", "G", "gen", "net_g"), "d": ("discriminator", "netD", "D", "disc", "net_d")}


class _GanscopeHooks:
    """The callback's behaviour, independent of which Lightning package provides the base class."""

    def __init__(self, server: str | None = None, *, name: str | None = None, config: Any = None,
                 declared: Mapping[str, Any] | None = None, generator: str | nn.Module | None = None,
                 discriminator: str | nn.Module | None = None, every: int = 1, diversity_every: int = 1,
                 tag_map: Mapping[str, str | None] | None = None, run: sdk.Run | None = None, **init_kw: Any) -> None:
        super().__init__()
        self.server, self.name, self.config, self.declared = server, name, config, dict(declared or {})
        self.which = {"g": generator, "d": discriminator}
        self.every, self.diversity_every = every, diversity_every
        self.tags = TagMap(tag_map)
        self.run: sdk.Run | None = run
        self._own_run = run is None
        self.init_kw = init_kw
        self._hook: Any = None
        self._fake: torch.Tensor | None = None
        self._real: torch.Tensor | None = None
        self._batches = 0

    # --- setup -------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        nets = {key: self._net(pl_module, key) for key in ("g", "d")}
        if self.run is None:
            declared = dict(self.declared)
            total = _total_batches(trainer)
            if total and "total_steps" not in declared:
                declared["total_steps"] = total
            hparams = dict(getattr(pl_module, "hparams", {}) or {})
            self.run = sdk.init(self.server, name=self.name or type(pl_module).__name__,
                                config=self.config if self.config is not None else hparams, declared=declared,
                                **self.init_kw)
        self.run.watch(nets["g"], nets["d"], every=self.every)
        self._hook = nets["g"].register_forward_hook(self._keep_fake)

    def _net(self, module: Any, key: str) -> nn.Module:
        given = self.which[key]
        if isinstance(given, nn.Module):
            return given
        names = (given,) if given else _NET_NAMES[key]
        for attr in names:
            net = getattr(module, attr, None)
            if isinstance(net, nn.Module):
                return net
        children = ", ".join(n for n, _ in module.named_children()) or "none"
        role = "generator" if key == "g" else "discriminator"
        raise AttributeError(f"GanscopeCallback: no {role} among the module's attributes {', '.join(names)} "
                             f"(its submodules: {children}); pass {role}='attribute name' or the module itself")

    def _keep_fake(self, module: nn.Module, inputs: Any, output: Any) -> None:
        if module.training and isinstance(output, torch.Tensor):
            self._fake = output.detach()

    # --- every batch -----------------------------------------------------------------------
    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._real = _first_tensor(batch)
        self._fake = None

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.run is None or not trainer.is_global_zero:
            return
        step = self._batches
        self._batches += 1
        fake, real = self._fake, self._real
        if (fake is not None and real is not None and step % self.diversity_every == 0
                and fake.shape[1:] == real.shape[1:] and fake.shape[0] > 1 and real.shape[0] > 1):
            self.run.log_diversity(fake, real)
        metrics: dict[str, Any] = {}
        for tag, value in trainer.callback_metrics.items():
            name = self.tags(tag)
            if name is not None and name not in metrics and isinstance(value, (torch.Tensor, float, int)):
                metrics[name] = value
        self.run.log(metrics, step=step)
        self._fake = self._real = None

    # --- the end -------------------------------------------------------------------------
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._close(None)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._close(exception)

    def _close(self, exc: BaseException | None) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.run is not None and self._own_run and not self.run.finished:
            from ganscope.trainer.sdk_exit import ending

            self.run.finish(*ending(exc))


def _total_batches(trainer: Any) -> int | None:
    try:
        total = trainer.estimated_stepping_batches
    except Exception:  # noqa: BLE001 - an infinite or unsized loader: no total, no progress bar
        return None
    if not isinstance(total, (int, float)) or not math.isfinite(total) or total <= 0:
        return None
    # Under manual optimisation each training batch is one step of the run, whatever the optimizers do.
    return int(total)


def _first_tensor(batch: Any) -> torch.Tensor | None:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if isinstance(item, torch.Tensor) and item.dim() >= 2:
                return item
    return None


def _callback_class(base: type) -> type:
    return type("GanscopeCallback", (_GanscopeHooks, base), {"__doc__": __doc__, "__module__": __name__})


def __getattr__(name: str) -> Any:
    if name == "GanscopeCallback":
        try:
            from lightning.pytorch import Callback
        except ImportError:
            from pytorch_lightning import Callback
        cls = globals()["GanscopeCallback"] = _callback_class(Callback)
        return cls
    if name == "PLGanscopeCallback":
        from pytorch_lightning import Callback as PLCallback

        cls = globals()["PLGanscopeCallback"] = _callback_class(PLCallback)
        return cls
    raise AttributeError(name)
