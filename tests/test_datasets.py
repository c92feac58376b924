"""Datasets: built-in sets, and disk sets read from tiny files written here (never downloaded)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganscope.trainer.config import JobConfig
from ganscope.trainer.data import DataSource, DatasetError, build_data

torch.set_num_threads(1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_image_source(src: DataSource, channels: int, size: int) -> torch.Tensor:
    """Common image-set checks; returns one batch."""
    assert isinstance(src, DataSource)
    assert src.kind == "image"
    assert src.shape == (channels, size, size)
    x = src.batch(6, gen(1))
    assert x.shape == (6, channels, size, size)
    assert x.dtype == torch.float32 and x.device.type == "cpu"
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    assert torch.equal(x, src.batch(6, gen(1))), "same generator state must give the same batch"
    assert not torch.equal(x, src.batch(6, gen(2))), "another seed must give another batch"
    return x


# --- built-in sets --------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [16, 32])
def test_shapes_bank(size: int) -> None:
    src = build_data(JobConfig(dataset="shapes", image_size=size, seed=3))
    x = check_image_source(src, 3, size)
    assert src.length is not None and 1000 <= src.length <= 4096
    # Real images, not noise or a constant: a spread of values reaching both ends of the range.
    assert float(x.std()) > 0.2
    assert float(x.max()) > 0.9 and float(x.min()) < -0.5
    # The bank depends on the seed, so two jobs with different seeds see different images.
    other = build_data(JobConfig(dataset="shapes", image_size=size, seed=4))
    assert not torch.equal(src.batch(4, gen(0)), other.batch(4, gen(0)))


def test_shapes_generator_resumes_exactly() -> None:
    """A saved generator state replays the same batches (what checkpoint/resume relies on)."""
    src = build_data(JobConfig(dataset="shapes", image_size=16))
    g = gen(7)
    src.batch(5, g)
    state = g.get_state()
    a = src.batch(5, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(a, src.batch(5, g2))


@pytest.mark.parametrize("name,dim", [("ring8", 2), ("grid25", 2), ("gauss1d", 1), ("bimodal1d", 1),
                                      ("trimodal1d", 1), ("poisson1d", 1)])
def test_toy_sources(name: str, dim: int) -> None:
    src = build_data(JobConfig(dataset=name))
    assert src.kind == "toy" and src.shape == (dim,) and src.length is None
    x = src.batch(400, gen(0))
    assert x.shape == (400, dim) and x.dtype == torch.float32
    assert torch.equal(x, src.batch(400, gen(0)))
    assert not torch.equal(x, src.batch(400, gen(1)))


def test_toy_source_statistics() -> None:
    g = gen(0)
    x = build_data(JobConfig(dataset="gauss1d")).batch(4000, g)
    assert abs(float(x.mean()) - 4.0) < 0.05 and abs(float(x.std()) - 0.4) < 0.03
    ring = build_data(JobConfig(dataset="ring8")).batch(2000, g)
    radius = ring.norm(dim=1)
    assert abs(float(radius.mean()) - 2.0) < 0.01 and float(radius.std()) < 0.05
    p = build_data(JobConfig(dataset="poisson1d")).batch(4000, g)
    assert torch.equal(p, p.round()) and float(p.min()) >= 0
    assert abs(float(p.mean()) - 4.0) < 0.15
    tri = build_data(JobConfig(dataset="trimodal1d")).batch(3000, g)
    nearest = (tri - torch.tensor([[-4.0, 0.0, 4.0]])).abs().argmin(dim=1)
    shares = torch.bincount(nearest, minlength=3).float() / 3000
    assert float(shares.min()) > 0.28


# --- MNIST / Fashion-MNIST --------------------------------------------------------------------------

def write_idx(path: Path, images: np.ndarray, compress: bool = False, truncate: int = 0) -> None:
    n, h, w = images.shape
    raw = struct.pack(">BBBBIII", 0, 0, 0x08, 3, n, h, w) + images.astype(np.uint8).tobytes()
    if truncate:
        raw = raw[:-truncate]
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)


def digits(n: int = 10) -> np.ndarray:
    rng = np.random.default_rng(0)
    imgs = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        imgs[i, 4 + i:14 + i, 6:20] = 255        # a bar at a different place in each image
    return np.maximum(imgs, rng.integers(0, 30, imgs.shape).astype(np.uint8))


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_from_idx(tmp_path: Path, compress: bool) -> None:
    write_idx(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte", digits(), compress=compress)
    src = build_data(JobConfig(dataset="mnist", image_size=32), data_root=tmp_path)
    assert src.length == 10
    x = check_image_source(src, 1, 32)
    assert float(x.max()) > 0.9 and float(x.min()) < -0.9   # white bar on black survives the resize


def test_fashion_mnist_under_cfg_data_root(tmp_path: Path) -> None:
    """cfg.data_root is a folder inside the dataset root."""
    write_idx(tmp_path / "sets" / "FashionMNIST" / "raw" / "train-images-idx3-ubyte", digits(4))
    cfg = JobConfig(dataset="fashion_mnist", image_size=16, data_root="sets")
    src = build_data(cfg, data_root=tmp_path)
    check_image_source(src, 1, 16)
    assert src.length == 4


def test_mnist_missing_names_folder_and_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as e:
        build_data(JobConfig(dataset="mnist"), data_root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "download=True" in msg


@pytest.mark.parametrize("damage", ["truncated", "bad_header", "bad_gzip"])
def test_mnist_corrupt_names_file(tmp_path: Path, damage: str) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    if damage == "truncated":
        write_idx(raw_dir / "train-images-idx3-ubyte", digits(), truncate=100)
        bad = raw_dir / "train-images-idx3-ubyte"
    elif damage == "bad_header":
        raw_dir.mkdir(parents=True)
        bad = raw_dir / "train-images-idx3-ubyte"
        bad.write_bytes(b"<html>not found</html>" * 10)
    else:
        raw_dir.mkdir(parents=True)
        bad = raw_dir / "train-images-idx3-ubyte.gz"
        bad.write_bytes(gzip.compress(b"x" * 500)[:20])
    with pytest.raises(DatasetError) as e:
        build_data(JobConfig(dataset="mnist"), data_root=tmp_path)
    assert str(bad) in str(e.value)


def test_data_root_cannot_escape(tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    write_idx(tmp_path / "outside" / "MNIST" / "raw" / "train-images-idx3-ubyte", digits(2))
    root = tmp_path / "root"
    root.mkdir()
    # An absolute-looking data_root stays inside the root instead of reaching the real path.
    cfg = JobConfig(dataset="mnist", data_root=str(tmp_path / "outside"))
    with pytest.raises(DatasetError) as e:
        build_data(cfg, data_root=root)
    assert str(root) in str(e.value)


# --- CIFAR-10 ---------------------------------------------------------------------------------------

def write_cifar_batch(path: Path, n: int, protocol: int = 2) -> None:
    rng = np.random.default_rng(n)
    data = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump({"batch_label": "training batch", "labels": list(range(n)), "data": data}, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar10_batches(tmp_path: Path, protocol: int) -> None:
    d = tmp_path / "cifar-10-batches-py"
    write_cifar_batch(d / "data_batch_1", 5, protocol)
    write_cifar_batch(d / "data_batch_2", 3, protocol)
    src = build_data(JobConfig(dataset="cifar10", image_size=32), data_root=tmp_path)
    assert src.length == 8
    check_image_source(src, 3, 32)


def test_cifar10_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as e:
        build_data(JobConfig(dataset="cifar10"), data_root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value) and "CIFAR10" in str(e.value)
    d = tmp_path / "cifar-10-batches-py"
    write_cifar_batch(d / "data_batch_1", 4)
    raw = (d / "data_batch_1").read_bytes()
    (d / "data_batch_1").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError) as e:
        build_data(JobConfig(dataset="cifar10"), data_root=tmp_path)
    assert str(d / "data_batch_1") in str(e.value)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_cifar10_pickle_cannot_run_code(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "data_batch_1").write_bytes(pickle.dumps({"data": _Boom()}))
    with pytest.raises(DatasetError) as e:
        build_data(JobConfig(dataset="cifar10"), data_root=tmp_path)
    assert "refusing" in str(e.value)


# --- image folders (folder, celeba) ---------------------------------------------------------------

def write_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_folder_class_subfolders_and_flat(tmp_path: Path) -> None:
    write_png(tmp_path / "pics" / "cats" / "a.png", (255, 0, 0))
    write_png(tmp_path / "pics" / "dogs" / "b.png", (0, 255, 0), size=(20, 50))
    write_png(tmp_path / "pics" / "c.png", (0, 0, 255))
    (tmp_path / "pics" / "notes.txt").write_text("not an image")
    src = build_data(JobConfig(dataset="folder", data_root="pics", image_size=16), data_root=tmp_path)
    assert src.length == 3
    x = check_image_source(src, 3, 16)
    # Solid colours come through exactly (up to resampling): each image is one of the three.
    means = x.mean(dim=(2, 3))
    for m in means:
        assert float(m.max()) > 0.95 and float(m.min()) < -0.95


def test_folder_missing_empty_corrupt(tmp_path: Path) -> None:
    cfg = JobConfig(dataset="folder", data_root="mine", image_size=16)
    with pytest.raises(DatasetError) as e:
        build_data(cfg, data_root=tmp_path)
    assert str(tmp_path / "mine") in str(e.value) and "does not exist" in str(e.value)
    (tmp_path / "mine").mkdir()
    with pytest.raises(DatasetError) as e:
        build_data(cfg, data_root=tmp_path)
    assert "holds no images" in str(e.value)
    # A broken first image fails at build time, naming the file.
    (tmp_path / "mine" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError) as e:
        build_data(cfg, data_root=tmp_path)
    assert str(tmp_path / "mine" / "a.png") in str(e.value)


def test_folder_truncated_image_fails_on_use(tmp_path: Path) -> None:
    write_png(tmp_path / "mine" / "a.png", (10, 20, 30))
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "mine" / "b.jpg", quality=90)
    raw = (tmp_path / "mine" / "b.jpg").read_bytes()
    (tmp_path / "mine" / "b.jpg").write_bytes(raw[: len(raw) // 2])
    src = build_data(JobConfig(dataset="folder", data_root="mine", image_size=16), data_root=tmp_path)
    with pytest.raises(DatasetError) as e:
        src.batch(32, gen(0))   # 32 draws from 2 images: b.jpg is drawn
    assert str(tmp_path / "mine" / "b.jpg") in str(e.value)


def test_celeba_layouts(tmp_path: Path) -> None:
    cfg = JobConfig(dataset="celeba", image_size=16)
    with pytest.raises(DatasetError) as e:
        build_data(cfg, data_root=tmp_path)
    assert str(tmp_path / "celeba" / "img_align_celeba") in str(e.value)
    for i in range(3):
        img = Image.new("RGB", (178, 218), (60 * i, 100, 200))
        (tmp_path / "celeba" / "img_align_celeba").mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "celeba" / "img_align_celeba" / f"{i:06d}.jpg")
    src = build_data(cfg, data_root=tmp_path)
    assert src.length == 3
    check_image_source(src, 3, 16)
