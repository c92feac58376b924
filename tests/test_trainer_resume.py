"""Resume continues exactly as the uninterrupted run would (bit-for-bit on CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import train
from ganscope.trainer.sink import MemorySink

torch.set_num_threads(1)


def _cfg(**kw) -> JobConfig:
    base = dict(image_size=16, ngf=8, ndf=8, nz=16, batch_size=16, steps=40, flush_every=5, flush_seconds=3600,
                sample_every=7, checkpoint_every=1000, toy_every=10, device="cpu", seed=3)
    base.update(kw)
    return JobConfig(**base)


def _merged(*sinks: MemorySink) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for sink in sinks:
        for name, (steps, values) in sink.metrics.items():
            if name.startswith("perf/"):
                continue  # wall-clock timings are the one thing allowed to differ
            series = out.setdefault(name, {})
            for s, v in zip(steps, values):
                assert s not in series, f"{name} reported twice at step {s}"
                series[s] = v
    return out


@pytest.mark.parametrize("knobs", [
    # images: batch norm, feature matching with warm-up, two D updates per step
    dict(dataset="shapes", fm_weight=0.5, fm_warmup_steps=30, d_steps=2, label_smoothing=0.9),
    # toy: minibatch discrimination, minimax loss, two G updates; toy/modes every 10 steps
    dict(dataset="ring8", toy_hidden=16, toy_layers=2, minibatch_disc=True, loss="minimax", g_steps=2),
    # stabilisers: spectral norm in both nets (its power-iteration vectors), EMA of G, lazy R1 across the
    # interruption, DiffAugment's draws, the hinge loss
    dict(dataset="shapes", loss="hinge", spectral_norm="both", ema_g=0.95, r1_gamma=1.0, r1_every=3,
         diffaugment="color,translation,cutout"),
    # toy: WGAN-GP's interpolates, spectral norm in D, EMA snapshots
    dict(dataset="ring8", toy_hidden=16, toy_layers=2, loss="wgan_gp", spectral_norm="d", ema_g=0.9, r1_gamma=0.5,
         r1_every=4),
])
def test_interrupted_and_resumed_run_equals_straight_run(tmp_path: Path, knobs: dict) -> None:
    cfg = _cfg(**knobs)
    straight = MemorySink()
    assert train(cfg, straight, tmp_path / "a").status == "succeeded"

    # Interrupted the way a worker is: control() answers "handback" after step 20 is reported.
    first = MemorySink(control_after=(20, "handback"))
    r1 = train(cfg, first, tmp_path / "b")
    assert (r1.status, r1.step) == ("handback", 20)
    step, path = first.checkpoints[-1]
    assert step == 20 and path.exists()

    second = MemorySink()
    r2 = train(cfg, second, tmp_path / "c", resume=path)
    assert (r2.status, r2.step) == ("succeeded", 40)
    assert min(second.series("loss/d")[0]) == 21  # nothing before the checkpoint is re-reported

    want, got = _merged(straight), _merged(first, second)
    assert sorted(want) == sorted(got)
    if cfg.is_toy:
        assert set(want["toy/modes"]) >= {10, 20, 30, 40}
    for name in want:
        assert got[name] == want[name], f"{name} differs after resume"
    # Samples too (drawn from G's moving average when on): the same pictures at the same steps.
    grids = {s.step: s.png for s in straight.samples_of("grid")}
    resumed = {s.step: s.png for s in first.samples_of("grid") + second.samples_of("grid")}
    assert grids == resumed

    # And the final weights and optimizer moments are the same bits.
    a = ckpt_io.load(straight.checkpoints[-1][1])
    c = ckpt_io.load(second.checkpoints[-1][1])
    assert ("g_ema" in a) == (cfg.ema_g > 0) == ("g_ema" in c)
    for net in ("g", "d", "g_ema") if cfg.ema_g > 0 else ("g", "d"):
        for key, tensor in a[net].items():
            assert torch.equal(tensor, c[net][key]), f"{net}.{key}"
    for opt in ("opt_g", "opt_d"):
        for idx, st in a[opt]["state"].items():
            for key, tensor in st.items():
                assert torch.equal(tensor, c[opt]["state"][idx][key]), f"{opt}[{idx}].{key}"


def test_resume_refuses_a_checkpoint_of_different_networks(tmp_path: Path) -> None:
    sink = MemorySink()
    train(_cfg(dataset="shapes", steps=3), sink, tmp_path / "a")
    path = sink.checkpoints[-1][1]
    with pytest.raises(ckpt_io.CheckpointError, match="ngf"):
        train(_cfg(dataset="shapes", steps=6, ngf=16), MemorySink(), tmp_path / "b", resume=path)


def test_a_corrupt_checkpoint_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt_io.CheckpointError, match="bad.pt"):
        train(_cfg(dataset="shapes", steps=3), MemorySink(), tmp_path / "w", resume=bad)
