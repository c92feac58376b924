"""Fixed-z grids, checkpoint figures, toy snapshots and the CLI's sample functions."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.jobs import tiny_image_job
from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import train
from ganscope.trainer.samples import (
    interpolation_png, latent_walk_png, load_generator, random_samples_png, slerp,
)
from ganscope.trainer.sink import MemorySink

torch.set_num_threads(1)


def _img(**kw) -> JobConfig:
    return tiny_image_job(**{**dict(steps=10, sample_every=4, checkpoint_every=5), **kw})


def _png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG"
    return img


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[MemorySink, Path]:
    sink = MemorySink()
    train(_img(), sink, tmp_path_factory.mktemp("run"))
    return sink, sink.checkpoints[-1][1]


def test_fixed_z_grid_every_sample_every_steps(trained) -> None:
    sink, _ = trained
    grids = sink.samples_of("grid")
    assert [s.step for s in grids] == [0, 4, 8, 10]          # start, every 4 steps, and the last step
    img = _png(grids[0].png)
    assert img.size == (8 * 18 + 2, 8 * 18 + 2)                # 8x8 images of 16px with 2px padding
    assert len({s.png for s in grids}) == 4                     # G changed between grids


def test_checkpoints_come_with_interpolation_and_walk(trained) -> None:
    sink, _ = trained
    assert [s for s, _ in sink.checkpoints] == [5, 10]
    assert [s.step for s in sink.samples_of("interp")] == [5, 10]
    assert [s.step for s in sink.samples_of("walk")] == [5, 10]
    assert _png(sink.samples_of("interp")[0].png).size == (8 * 18 + 2, 4 * 18 + 2)   # 4 rows of 8 steps
    assert _png(sink.samples_of("walk")[0].png).size == (8 * 18 + 2, 6 * 18 + 2)     # 2 bases x 3 dims


def test_the_grid_z_is_fixed_for_the_whole_run(trained) -> None:
    sink, _ = trained
    first, last = (ckpt_io.load(p)["fixed_z"] for _, p in sink.checkpoints)
    assert first.shape == (64, 16, 1, 1) and torch.equal(first, last)


def test_sampling_never_changes_the_run(tmp_path: Path) -> None:
    often, never = MemorySink(), MemorySink()
    train(_img(sample_every=1, checkpoint_every=2), often, tmp_path / "a")
    train(_img(sample_every=1000, checkpoint_every=1000), never, tmp_path / "b")
    assert often.values("loss/d") == never.values("loss/d")
    assert often.values("grad/g/convT1") == never.values("grad/g/convT1")


def test_cli_functions_from_a_checkpoint(trained) -> None:
    _, path = trained
    lg = load_generator(path)
    assert lg.step == 10 and lg.cfg.nz == 16
    a = random_samples_png(path, n=16, seed=1)
    assert _png(a).size == (4 * 18 + 2, 4 * 18 + 2)
    assert random_samples_png(lg, n=16, seed=1) == a             # same seed, same picture
    assert random_samples_png(lg, n=16, seed=2) != a
    assert _png(interpolation_png(lg, steps=5, seed=0)).size == (5 * 18 + 2, 4 * 18 + 2)
    walk = _png(latent_walk_png(lg, dim=3, steps=6, span=2.0, seed=0, rows=2)).convert("RGB")
    assert walk.size == (6 * 18 + 2, 2 * 18 + 2)
    # Moving one latent coordinate changes the picture; a walk of zero span does not.
    tiles = [walk.crop((2 + i * 18, 2, 18 + i * 18, 18)).tobytes() for i in range(6)]
    assert len(set(tiles)) > 1
    still = _png(latent_walk_png(lg, dim=3, steps=6, span=0.0, seed=0, rows=2)).convert("RGB")
    assert len({still.crop((2 + i * 18, 2, 18 + i * 18, 18)).tobytes() for i in range(6)}) == 1
    with pytest.raises(ValueError, match="latent dimension 16"):
        latent_walk_png(lg, dim=16)


def test_slerp_ends_at_its_endpoints_and_keeps_the_norm() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 50, generator=gen), torch.randn(3, 50, generator=gen)
    path = slerp(a, b, torch.linspace(0, 1, 5))
    assert torch.allclose(path[:, 0], a, atol=1e-5) and torch.allclose(path[:, -1], b, atol=1e-5)
    norms = path.norm(dim=2)
    assert (norms > 0.8 * torch.minimum(a.norm(dim=1), b.norm(dim=1))[:, None]).all()


def test_toy_runs_emit_snapshots_not_grids(tmp_path: Path) -> None:
    sink = MemorySink()
    cfg = JobConfig(dataset="ring8", toy_hidden=16, toy_layers=2, nz=4, batch_size=32, steps=20, toy_every=10,
                    checkpoint_every=1000, device="cpu")
    train(cfg, sink, tmp_path / "ring")
    assert sink.samples == []
    assert [s.step for s in sink.snapshots] == [0, 10, 20]
    payload = sink.snapshots[-1].payload
    assert payload["dim"] == 2 and len(payload["modes"]) == 8 and payload["real"] and payload["fake"]
    assert len(payload["d_grid"]["z"]) == len(payload["d_grid"]["y"])
    assert sink.series("toy/modes")[0] == [0, 10, 20]
    assert all(0 <= v <= 8 for v in sink.values("toy/modes"))
    assert all(0 <= v <= 1 for v in sink.values("toy/quality"))
    # 1-D: densities on a shared grid with D's output; random samples render as a histogram.
    one = MemorySink()
    train(cfg.model_copy(update={"dataset": "bimodal1d", "steps": 10}), one, tmp_path / "bi")
    p1 = one.snapshots[-1].payload
    assert p1["dim"] == 1 and len(p1["x"]) == len(p1["real_density"]) == len(p1["d_output"])
    assert _png(random_samples_png(one.checkpoints[-1][1], n=200)).size == (320, 320)
    with pytest.raises(ValueError, match="image dataset"):
        interpolation_png(one.checkpoints[-1][1])


def test_image_runs_upload_one_grid_of_real_images_at_the_start(tmp_path: Path) -> None:
    sink = MemorySink()
    cfg = JobConfig(dataset="shapes", image_size=16, ngf=8, ndf=8, nz=8, batch_size=8, steps=4, sample_every=2,
                    checkpoint_every=1000, device="cpu")
    train(cfg, sink, tmp_path / "a")
    real = sink.samples_of("real")
    assert [s.step for s in real] == [0]
    assert _png(real[0].png).size == (8 * 18 + 2, 8 * 18 + 2)  # 64 images, 8 x 8, like G's grid
    assert real[0].png != sink.samples_of("grid")[0].png
    # Drawn with a generator of its own, so a resumed run still repeats an uninterrupted one
    # (tests/test_trainer_resume.py); a toy run has no images to show (test above).
