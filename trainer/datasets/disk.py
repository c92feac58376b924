"""Disk datasets, read from a local folder and never downloaded.

Layouts accepted (``<dir>`` is the job's dataset folder: the data root joined with
``cfg.data_root``):

* ``mnist`` / ``fashion_mnist`` — torchvision's layout, ``<dir>/MNIST/raw`` or
  ``<dir>/FashionMNIST/raw`` holding ``train-images-idx3-ubyte`` (raw or ``.gz``); the
  same file directly in ``<dir>/raw`` or ``<dir>`` works too. Only the training images
  are read (labels are not needed to train a GAN). The idx files are parsed here rather
  than through `torchvision.datasets.MNIST`, which insists on all four files (test
  split and labels) and reports a bad one only as "Dataset not found".
* ``cifar10`` — torchvision's ``<dir>/cifar-10-batches-py/data_batch_1..5`` pickles (or
  the batches directly in ``<dir>``); every training batch present is used. Parsed with a
  restricted unpickler that admits only numpy arrays, so a planted pickle cannot run code
  (torchvision's loader also md5-checks, which would reject any subset).
* ``celeba`` — a folder of aligned JPEGs: ``<dir>/celeba/img_align_celeba/`` (torchvision's
  layout), ``<dir>/img_align_celeba/``, or JPEGs directly in ``<dir>``. Attribute and
  split files are not needed.
* ``folder`` — the user's images in ``<dir>``: in class subfolders (torchvision
  ImageFolder's layout) or flat; searched recursively, sorted for determinism.

Images are resized (shorter side to ``image_size``, antialiased) and centre-cropped to a
square, then scaled to [-1, 1]. Array sets (MNIST, CIFAR) stay in memory at native
resolution and are resized per batch; file sets are decoded lazily on first use and the
resized result is cached in memory up to a budget.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ganscope.trainer.config import DATASET_CHANNELS, JobConfig
from ganscope.trainer.datasets.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
CACHE_BYTES = 512 << 20        # resized file images kept in memory (CelebA at 64 px: ~43k images)

_TORCHVISION_NAME = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}


# --- in-memory array sets (MNIST, CIFAR-10) -------------------------------------------------------

def resize_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """(n, C, h, w) float -> (n, C, size, size): shorter side to `size`, centre crop."""
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[..., top:top + size, left:left + size]
    return x


@dataclass
class ArrayImages:
    """A whole dataset as one uint8 tensor (N, C, h, w) at native resolution."""

    data: torch.Tensor
    image_size: int
    kind: str = "image"
    shape: tuple[int, ...] = field(init=False)
    length: int | None = field(init=False)

    def __post_init__(self) -> None:
        self.shape = (int(self.data.shape[1]), self.image_size, self.image_size)
        self.length = int(self.data.shape[0])

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, int(self.data.shape[0]), (n,), generator=generator)
        x = resize_crop(self.data[idx].float(), self.image_size)
        return x.div_(127.5).sub_(1.0).clamp_(-1.0, 1.0).contiguous()


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DatasetError(f"cannot read {path}: {e} (corrupt or truncated; fetch it again)") from e
    return raw


def read_idx_images(path: Path) -> torch.Tensor:
    """An idx3-ubyte image file (MNIST format) as uint8 (N, 1, H, W)."""
    raw = _read_bytes(path)
    if len(raw) < 16 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08 or raw[3] != 3:
        raise DatasetError(f"{path} is not an idx3-ubyte image file (bad header): corrupt; fetch it again")
    n, h, w = struct.unpack(">III", raw[4:16])
    expected = n * h * w
    if len(raw) - 16 != expected:
        raise DatasetError(
            f"{path} is truncated or corrupt: header says {n} images of {h}x{w} ({expected} bytes), "
            f"file holds {len(raw) - 16} bytes; fetch it again")
    if n == 0 or h == 0 or w == 0:
        raise DatasetError(f"{path} holds no images")
    arr = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, h, w)
    return torch.from_numpy(arr.copy())


def load_mnist_like(cfg: JobConfig, folder: Path) -> ArrayImages:
    name = _TORCHVISION_NAME[cfg.dataset]
    stem = "train-images-idx3-ubyte"
    for d in (folder / name / "raw", folder / "raw", folder):
        for fname in (stem, stem + ".gz"):
            if (d / fname).is_file() and _confined(d / fname, folder):
                return ArrayImages(data=read_idx_images(d / fname), image_size=cfg.image_size)
    raise DatasetError(
        f"{name} not found: put {stem} (or {stem}.gz) in {folder / name / 'raw'}. ganscope never downloads; "
        f"on a machine with internet run python -c \"import torchvision; torchvision.datasets.{name}('data', "
        f"download=True)\" and copy data/{name} into {folder}")


class _ArrayUnpickler(pickle.Unpickler):
    """Admits only what a pickled numpy array needs, so loading a pickle cannot run code."""

    # (module with numpy.core spelled numpy._core, name). Protocol <= 4 pickles rebuild arrays with
    # _reconstruct + ndarray.__setstate__; protocol 5 ones with numeric._frombuffer.
    _ALLOWED = {
        ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),   # protocol-2 pickles written by Python 3 carry bytes this way
    }

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core."):
            module = "numpy._core." + module[len("numpy.core."):]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> torch.Tensor:
    """One CIFAR-10 python batch as uint8 (N, 3, 32, 32)."""
    raw = _read_bytes(path)
    try:
        # latin1 decodes the Python 2 strings of the original pickles, as torchvision does.
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, ImportError, MemoryError, struct.error) as e:
        raise DatasetError(
            f"{path} is not a readable CIFAR-10 batch ({e}): corrupt or truncated; fetch it again") from e
    data = None
    if isinstance(obj, dict):
        data = obj.get("data", obj.get(b"data"))
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise DatasetError(f"{path} is not a CIFAR-10 batch: expected a dict with 'data' as uint8 (N, 3072)")
    if data.shape[0] == 0:
        raise DatasetError(f"{path} holds no images")
    return torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())


def load_cifar10(cfg: JobConfig, folder: Path) -> ArrayImages:
    for d in (folder / "cifar-10-batches-py", folder):
        files = sorted(d.glob("data_batch_*")) if d.is_dir() else []
        files = [f for f in files if f.is_file() and _confined(f, folder)]
        if files:
            data = torch.cat([read_cifar_batch(f) for f in files])
            return ArrayImages(data=data, image_size=cfg.image_size)
    raise DatasetError(
        f"CIFAR-10 not found: put data_batch_1 .. data_batch_5 in {folder / 'cifar-10-batches-py'}. ganscope "
        f"never downloads; on a machine with internet run python -c \"import torchvision; "
        f"torchvision.datasets.CIFAR10('data', download=True)\" and copy data/cifar-10-batches-py into {folder}")


# --- file sets (CelebA, the user's folder) ---------------------------------------------------------

def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive, hidden entries skipped), sorted."""
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS):
                path = Path(dirpath) / f
                if _confined(path, folder):
                    out.append(path)
    return sorted(out)


def _confined(path: Path, folder: Path) -> bool:
    """A file reached through a symlink pointing out of the dataset folder is not read (os.walk does not
    follow linked folders; linked files are checked here)."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


def load_image(path: Path, size: int, channels: int) -> torch.Tensor:
    """One image file as uint8 (channels, size, size): shorter side to size, centre crop."""
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as im:
            im.draft(mode, (size, size))          # JPEG: decode at a reduced scale when large
            im = im.convert(mode)
            w, h = im.size
            scale = size / min(w, h)
            nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
            im = im.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot decode image {path}: {e} (corrupt or truncated; replace or remove it)") from e
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


@dataclass
class FileImages:
    """Images decoded lazily from files; the resized uint8 result is cached up to CACHE_BYTES."""

    paths: list[Path]
    image_size: int
    channels: int
    kind: str = "image"
    shape: tuple[int, ...] = field(init=False)
    length: int | None = field(init=False)
    _cache: dict[int, torch.Tensor] = field(init=False, default_factory=dict, repr=False)
    _cache_cap: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.shape = (self.channels, self.image_size, self.image_size)
        self.length = len(self.paths)
        self._cache_cap = max(1, CACHE_BYTES // (self.channels * self.image_size ** 2))

    def item(self, i: int) -> torch.Tensor:
        hit = self._cache.get(i)
        if hit is not None:
            return hit
        img = load_image(self.paths[i], self.image_size, self.channels)
        # No eviction: once full, further images are decoded each time (simple and bounded).
        if len(self._cache) < self._cache_cap:
            self._cache[i] = img
        return img

    def batch(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(self.paths), (n,), generator=generator).tolist()
        x = torch.stack([self.item(i) for i in idx])
        return x.float().div_(127.5).sub_(1.0)


def _file_set(paths: list[Path], cfg: JobConfig) -> FileImages:
    src = FileImages(paths=paths, image_size=cfg.image_size, channels=DATASET_CHANNELS[cfg.dataset])
    src.item(0)   # decode one now: a folder of non-images fails when the job starts, not mid-run
    return src


def load_folder(cfg: JobConfig, folder: Path) -> FileImages:
    if not folder.is_dir():
        raise DatasetError(
            f"image folder {folder} does not exist: put your images there, flat or in class "
            f"subfolders (torchvision ImageFolder's layout)")
    paths = list_images(folder)
    if not paths:
        raise DatasetError(
            f"image folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)}), searched recursively")
    return _file_set(paths, cfg)


def load_celeba(cfg: JobConfig, folder: Path) -> FileImages:
    for d in (folder / "celeba" / "img_align_celeba", folder / "img_align_celeba", folder):
        if d.is_dir():
            paths = list_images(d)
            if paths:
                return _file_set(paths, cfg)
    raise DatasetError(
        f"CelebA not found: put the aligned JPEGs (img_align_celeba/*.jpg) in "
        f"{folder / 'celeba' / 'img_align_celeba'}. ganscope never downloads; fetch img_align_celeba.zip "
        f"(torchvision.datasets.CelebA('data', download=True) on a machine with internet, or the CelebA "
        f"site) and unzip it there")


def load_disk_dataset(cfg: JobConfig, folder: Path) -> ArrayImages | FileImages:
    if cfg.dataset in _TORCHVISION_NAME:
        return load_mnist_like(cfg, folder)
    if cfg.dataset == "cifar10":
        return load_cifar10(cfg, folder)
    if cfg.dataset == "celeba":
        return load_celeba(cfg, folder)
    if cfg.dataset == "folder":
        return load_folder(cfg, folder)
    raise DatasetError(f"{cfg.dataset!r} is not a disk dataset")
