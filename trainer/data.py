"""Datasets behind every job: one small interface, `DataSource`, for images and toy sets.

All randomness of `batch()` comes from the generator passed in (a CPU `torch.Generator`),
so a checkpointed generator state resumes the exact same batch sequence. Batches are CPU
float32; images are (n, C, H, W) in [-1, 1], toy samples (n, dim).

Built-in sets need no download (`shapes`, the toy sets); disk sets (`mnist`,
`fashion_mnist`, `cifar10`, `celeba`, `folder`) are read from a local folder and never
downloaded — a missing or broken one raises `DatasetError` naming the folder or file and
how to get the data. See `trainer/datasets/disk.py` for the layouts accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from ganscope.trainer.config import DISK_DATASETS, JobConfig
from ganscope.trainer.datasets.errors import DatasetError
from ganscope.trainer.datasets.shapes import bank_size, render_bank
from ganscope.trainer.toy import POISSON_RATE, Mixture, mixture_for

__all__ = ["DataSource", "DatasetError", "ShapesSource", "ToySource", "build_data", "resolve_data_dir"]


@runtime_checkable
class DataSource(Protocol):
    kind: str                     # "image" or "toy"
    shape: tuple[int, ...]        # one sample: (C, H, W) or (dim,)
    length: int | None            # finite size, None for endless generators

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


@dataclass
class ShapesSource:
    """The pre-rendered `shapes` bank; batches sample indices with replacement."""

    bank: torch.Tensor                     # (N, 3, H, W) uint8, shared: never written to
    kind: str = "image"
    shape: tuple[int, ...] = field(init=False)
    length: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.shape = tuple(self.bank.shape[1:])
        self.length = int(self.bank.shape[0])

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, int(self.bank.shape[0]), (n,), generator=generator)
        return self.bank[idx].float().div_(127.5).sub_(1.0)


@dataclass
class ToySource:
    """An endless toy distribution: a Gaussian mixture, or Poisson counts when `mixture` is None."""

    dim: int
    mixture: Mixture | None
    rate: float = POISSON_RATE
    kind: str = "toy"
    shape: tuple[int, ...] = field(init=False)
    length: int | None = None

    def __post_init__(self) -> None:
        self.shape = (self.dim,)

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.mixture is not None:
            return self.mixture.sample(n, generator)
        rates = torch.full((n, self.dim), float(self.rate))
        return torch.poisson(rates, generator=generator)


def default_data_root() -> Path:
    """The worker's dataset root when none is passed: the server's rule (GANSCOPE_DATA_ROOT,
    else $GANSCOPE_HOME/datasets, else ./ganscope-data/datasets)."""
    env = os.environ.get("GANSCOPE_DATA_ROOT")
    if env:
        return Path(env)
    return Path(os.environ.get("GANSCOPE_HOME", "./ganscope-data")) / "datasets"


def resolve_data_dir(cfg: JobConfig, data_root: Path | None) -> Path:
    """The dataset folder: `cfg.data_root` inside the root, never outside it.

    A leading slash in `cfg.data_root` is taken as relative to the root (the config
    validator already rejects '..'), so a job cannot name an arbitrary path on the worker.
    """
    root = Path(data_root) if data_root is not None else default_data_root()
    base = root.resolve()
    if not cfg.data_root:
        return base
    rel = cfg.data_root.replace("\\", "/").lstrip("/")
    # resolve(): symlinks followed, so a link inside the root that points outside it is caught too.
    target = (base / rel).resolve()
    if not is_inside(target, base):
        raise DatasetError(f"data_root {cfg.data_root!r} leaves the dataset root (a symlink points outside it?)")
    return target


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, is `root` or below it (root already resolved)."""
    real = Path(os.path.realpath(path))
    return real == root or root in real.parents


def public_message(text: str, *roots: Path | str | None) -> str:
    """`text` with each root's absolute path (as given and resolved) shown as <data root>-style names:
    error messages reach the dashboard's anonymous readers, who have no business with the worker's paths."""
    for root, label in zip(roots, ("<data root>", "<worker dir>", "<home>")):
        if not root:
            continue
        for form in sorted({str(Path(root).resolve()), os.path.abspath(root), str(root)}, key=len, reverse=True):
            if len(form) > 1:
                text = text.replace(form, label)
    return text


def build_data(cfg: JobConfig, data_root: Path | None = None) -> DataSource:
    """The data source for a job. `data_root` is the dataset root; `cfg.data_root` is relative to it."""
    if cfg.dataset == "shapes":
        return ShapesSource(bank=render_bank(cfg.seed, cfg.image_size, bank_size(cfg.image_size)))
    if cfg.is_toy:
        return ToySource(dim=cfg.data_dim, mixture=mixture_for(cfg))
    if cfg.dataset in DISK_DATASETS:
        # Imported here: PIL and the readers are only needed for disk sets.
        from ganscope.trainer.datasets.disk import load_disk_dataset

        return load_disk_dataset(cfg, resolve_data_dir(cfg, data_root))
    raise DatasetError(f"unknown dataset {cfg.dataset!r}")
