"""Checkpoints: everything a run needs to continue exactly as if it had never stopped.

A checkpoint holds both nets (with batch-norm buffers and spectral norm's vectors), the
moving average of G when ``ema_g`` is on (key ``g_ema``), both optimizers, the step,
every RNG the loop draws from (torch's global CPU and CUDA generators, the data
generator, the noise generator), the job config and the fixed sample z. Loading uses
``weights_only=True``: checkpoints travel through the server, and unpickling
arbitrary objects from one would run code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from ganscope.trainer.config import JobConfig

FORMAT = "ganscope-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a ganscope checkpoint, or one that does not fit this job."""


class Averaged(Protocol):
    """What a checkpoint needs of G's moving average (`trainer.ema.EmaGenerator`)."""

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def reset_to(self, g: nn.Module) -> None: ...


@dataclass
class TrainState:
    """The mutable state of a run; `train()` owns it, checkpoints copy it."""

    cfg: JobConfig
    step: int
    g: nn.Module
    d: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    data_gen: torch.Generator
    noise_gen: torch.Generator
    fixed_z: torch.Tensor
    g_ema: Averaged | None = None   # G's moving average, when ema_g is on


def checkpoint_dir(workdir: Path) -> Path:
    return Path(workdir) / "checkpoints"


def checkpoint_path(workdir: Path, step: int) -> Path:
    return checkpoint_dir(workdir) / f"step_{step:08d}.pt"


def save(state: TrainState, path: Path) -> Path:
    """Write atomically (temp file + rename) so a crash never leaves half a checkpoint behind."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "step": state.step,
        "config": state.cfg.model_dump(mode="json"),
        "g": state.g.state_dict(),
        "d": state.d.state_dict(),
        "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(),
        "rng": {
            "torch_cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "data": state.data_gen.get_state(),
            "noise": state.noise_gen.get_state(),
            "noise_device": str(state.noise_gen.device),
        },
        "fixed_z": state.fixed_z.detach().cpu(),
    }
    if state.g_ema is not None:
        payload["g_ema"] = state.g_ema.state_dict()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load(path: Path) -> dict[str, Any]:
    """The checkpoint's contents on CPU; CheckpointError when it is not one of ours."""
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a ganscope checkpoint")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {ckpt.get('version')}, this trainer reads {VERSION}")
    return ckpt


def config_of(ckpt: dict[str, Any]) -> JobConfig:
    return JobConfig.model_validate(ckpt["config"])


# Knobs that shape the nets or the data stream: resuming under different values cannot be exact.
# Spectral norm is one: switching it divides every layer by its sigma at once, a different D, not
# the same run continued. `d_norm` is D's normalisation (loss wgan_gp swaps batch for layer norm).
_SHAPE_KNOBS = ("dataset", "image_size", "nz", "ngf", "ndf", "d_downsample", "batch_norm", "g_act", "d_act",
                "minibatch_disc", "toy_hidden", "toy_layers", "batch_size", "seed", "spectral_norm", "d_norm")
_KNOB_LABEL = {"d_norm": "D's normalisation (loss wgan_gp uses layer norm where batch norm was)"}


def shape_diff(a: JobConfig, b: JobConfig) -> list[str]:
    """The knobs that keep a checkpoint written under `a` from being restored under `b`."""
    return [k for k in _SHAPE_KNOBS if getattr(a, k) != getattr(b, k)]


def restore(state: TrainState, ckpt: dict[str, Any]) -> None:
    """Put a loaded checkpoint into `state` in place (nets and optimizers already on their device)."""
    saved = config_of(ckpt)
    diff = shape_diff(saved, state.cfg)
    if diff:
        raise CheckpointError("checkpoint was written under different " + ", ".join(
            f"{_KNOB_LABEL.get(k, k)} ({getattr(saved, k)!r} vs {getattr(state.cfg, k)!r})" for k in diff))
    state.g.load_state_dict(ckpt["g"])
    state.d.load_state_dict(ckpt["d"])
    if state.g_ema is not None:
        # A run that turns the average on at resume starts it from G as it stands.
        if "g_ema" in ckpt:
            state.g_ema.load_state_dict(ckpt["g_ema"])
        else:
            state.g_ema.reset_to(state.g)
    state.opt_g.load_state_dict(ckpt["opt_g"])
    state.opt_d.load_state_dict(ckpt["opt_d"])
    # The config decides the hyperparameters (a healed run resumes under a patched lr); the moments come
    # from the checkpoint. For a plain resume the two agree.
    for opt, lr in ((state.opt_g, state.cfg.lr_g), (state.opt_d, state.cfg.lr_d)):
        for group in opt.param_groups:
            group["lr"], group["betas"] = lr, (state.cfg.beta1, state.cfg.beta2)
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch_cpu"])
    if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state.data_gen.set_state(rng["data"])
    if rng.get("noise_device") == str(state.noise_gen.device):
        state.noise_gen.set_state(rng["noise"])
    else:
        # CPU and CUDA generators have different state formats: a run moved across device types
        # continues with fresh noise from a seed derived from the step (reproducible, not identical).
        state.noise_gen.manual_seed(state.cfg.seed * 1_000_003 + int(ckpt["step"]))
    state.fixed_z = ckpt["fixed_z"].to(state.fixed_z.device)
    state.step = int(ckpt["step"])


def prune(workdir: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoint files (the sink has had two checkpoint periods to copy older ones)."""
    files = sorted(checkpoint_dir(workdir).glob("step_*.pt"))
    for old in files[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
