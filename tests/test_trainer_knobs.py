"""Each job knob does what it says, observed through the metrics, the nets or the checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.jobs import tiny_image_job as _img
from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import train
from ganscope.trainer.models import build_models
from ganscope.trainer.sink import MemorySink

torch.set_num_threads(1)


def _toy(**kw) -> JobConfig:
    base = dict(dataset="ring8", toy_hidden=32, toy_layers=2, nz=8, batch_size=32, steps=150, flush_every=200,
                flush_seconds=3600, toy_every=1000, checkpoint_every=1000, device="cpu")
    base.update(kw)
    return JobConfig(**base)


def _run(cfg: JobConfig, tmp_path: Path, name: str = "w") -> MemorySink:
    sink = MemorySink()
    assert train(cfg, sink, tmp_path / name).status == "succeeded"
    return sink


def test_label_smoothing_moves_ds_real_target(tmp_path: Path) -> None:
    # A D that wins outright (fast D, frozen G): with target 1 its real loss goes to 0; with target 0.9
    # BCE cannot fall below the entropy H(0.9) and D's output on real data settles at 0.9, not 1.
    strong_d = dict(lr_d=2e-3, lr_g=1e-5, d_steps=3, steps=100)
    hard = _run(_toy(**strong_d), tmp_path, "hard")
    soft = _run(_toy(**strong_d, label_smoothing=0.9), tmp_path, "soft")
    floor = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert hard.last("loss/d_real") < 0.01
    assert hard.last("pred/real") > 0.99
    assert min(soft.values("loss/d_real")) >= floor - 1e-4
    assert soft.last("loss/d_real") < floor + 0.02
    assert abs(soft.last("pred/real") - 0.9) < 0.03


def test_feature_matching_adds_loss_g_fm_with_a_warm_up_ramp(tmp_path: Path) -> None:
    plain = _run(_img(), tmp_path, "plain")
    assert "loss/g_fm" not in plain.metrics
    assert plain.values("loss/g") == plain.values("loss/g_adv")

    fm = _run(_img(fm_weight=2.0, fm_warmup_steps=4), tmp_path, "fm")
    steps, g_fm = fm.series("loss/g_fm")
    assert all(v > 0 for v in g_fm)
    for step, total, adv, f in zip(steps, fm.values("loss/g"), fm.values("loss/g_adv"), g_fm):
        weight = 2.0 * min(1.0, step / 4)        # adversarial term first, feature matching ramps in
        assert total == pytest.approx(adv + weight * f, rel=1e-5, abs=1e-6)


def test_d_steps_and_g_steps_set_the_update_counts(tmp_path: Path) -> None:
    sink = _run(_img(steps=4, d_steps=3, g_steps=2), tmp_path)
    ckpt = ckpt_io.load(sink.checkpoints[-1][1])
    d_updates = {int(s["step"]) for s in ckpt["opt_d"]["state"].values()}
    g_updates = {int(s["step"]) for s in ckpt["opt_g"]["state"].values()}
    assert d_updates == {12} and g_updates == {8}
    assert ckpt["step"] == 4


def test_avgpool_replaces_strided_convolutions() -> None:
    _, strided = build_models(_img(image_size=32))
    _, pooled = build_models(_img(image_size=32, d_downsample="avgpool"))
    s_convs = [m for m in strided.modules() if isinstance(m, nn.Conv2d)]
    p_convs = [m for m in pooled.modules() if isinstance(m, nn.Conv2d)]
    assert [m.stride for m in s_convs[:-1]] == [(2, 2)] * 3
    assert [m.stride for m in p_convs[:-1]] == [(1, 1)] * 3
    assert not [m for m in strided.modules() if isinstance(m, nn.AvgPool2d)]
    assert len([m for m in pooled.modules() if isinstance(m, nn.AvgPool2d)]) == 3
    logits, _ = pooled(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2,)


def test_avgpool_trains(tmp_path: Path) -> None:
    sink = _run(_img(d_downsample="avgpool", steps=3), tmp_path)
    assert len(sink.values("grad/d/conv1")) == 3


def test_batch_norm_off_removes_bn_layers_and_momentum_is_passed(tmp_path: Path) -> None:
    g, d = build_models(_img(bn_momentum=0.3))
    bns = [m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.3 for m in bns)
    g, d = build_models(_img(batch_norm=False))
    assert not [m for net in (g, d) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    sink = _run(_img(batch_norm=False, steps=2), tmp_path)
    assert not [n for n in sink.names() if "/bn" in n]


def test_init_std_sets_the_weight_spread(tmp_path: Path) -> None:
    for std in (0.02, 0.2):
        g, d = build_models(_img(init_std=std))
        w = g.param_layers()["convT2"][0]
        assert w.std().item() == pytest.approx(std, rel=0.05)
    g_x, _ = build_models(_img(init="xavier"))
    g_d, _ = build_models(_img(init="default"))
    assert g_x.param_layers()["convT2"][0].std().item() != pytest.approx(0.02, rel=0.2)
    assert g_d.param_layers()["convT2"][0].std().item() != pytest.approx(0.02, rel=0.2)
    # ...and it shows in the reported weight norms (10x the std: ~10x the norm).
    small = _run(_img(init_std=0.02, steps=1), tmp_path, "a").values("weight/g/convT2")[0]
    big = _run(_img(init_std=0.2, steps=1), tmp_path, "b").values("weight/g/convT2")[0]
    assert 8 < big / small < 12


def test_activation_knobs() -> None:
    g, d = build_models(_img(g_act="leaky_relu", d_act="relu", leaky_slope=0.1))
    g_acts = [m for m in g.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    d_acts = [m for m in d.modules() if isinstance(m, (nn.ReLU, nn.LeakyReLU))]
    assert g_acts and all(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1 for m in g_acts)
    assert d_acts and all(type(m) is nn.ReLU for m in d_acts)


def test_minimax_and_nonsaturating_losses(tmp_path: Path) -> None:
    ns = _run(_img(loss="nonsaturating"), tmp_path, "ns")
    mm = _run(_img(loss="minimax"), tmp_path, "mm")
    # Same seed: the first G step sees the same D(G(z)) under both losses...
    assert ns.values("pred/fake_g")[0] == mm.values("pred/fake_g")[0]
    # ...but G minimises -log D(G(z)) (> 0) in one and log(1 - D(G(z))) (< 0) in the other.
    assert all(v > 0 for v in ns.values("loss/g_adv"))
    assert all(v < 0 for v in mm.values("loss/g_adv"))
    p = ns.values("pred/fake_g")[0]
    # With D undecided at init, both are close to ±log 2 and consistent with the mean probability.
    assert ns.values("loss/g_adv")[0] == pytest.approx(-math.log(p), abs=0.05)
    assert mm.values("loss/g_adv")[0] == pytest.approx(math.log(1 - p), abs=0.05)
    assert ns.values("grad/g/convT1")[0] != mm.values("grad/g/convT1")[0]


def test_learning_rates_are_reported_and_used(tmp_path: Path) -> None:
    sink = _run(_img(lr_d=3e-4, lr_g=1e-4, steps=2), tmp_path)
    assert sink.values("lr/d") == [3e-4] and sink.values("lr/g") == [1e-4]
    fast = sink.values("update/d/conv1")[0]
    slow = _run(_img(lr_d=3e-5, lr_g=1e-4, steps=2), tmp_path, "slow").values("update/d/conv1")[0]
    assert 5 < fast / slow < 20    # Adam's first step is ~lr per weight: the ratio follows lr


def test_seed_makes_runs_repeatable(tmp_path: Path) -> None:
    a = _run(_img(seed=5), tmp_path, "a")
    b = _run(_img(seed=5), tmp_path, "b")
    c = _run(_img(seed=6), tmp_path, "c")
    assert a.values("loss/d") == b.values("loss/d")
    assert a.values("grad/g/convT1") == b.values("grad/g/convT1")
    assert a.values("loss/d") != c.values("loss/d")


def test_epochs_count_passes_over_a_finite_dataset(tmp_path: Path) -> None:
    cfg = _img(epochs=1, steps=1, batch_size=512)  # the 16px shapes bank: a few steps per pass
    from ganscope.trainer.data import build_data
    length = build_data(cfg).length
    sink = _run(cfg, tmp_path)
    assert sink.last_step() == math.ceil(length / cfg.batch_size)
