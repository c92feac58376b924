"""Probes: per-layer gradients of both nets, weights, update ratios, diversity, batched hand-over."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.jobs import tiny_image_job as _img
from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.loop import train
from ganscope.trainer.models import NamedNet, build_models, parameter_count
from ganscope.trainer.probes import LayerProbe, MetricBuffer, diversity
from ganscope.trainer.sink import MemorySink

torch.set_num_threads(1)


def test_every_parameterised_layer_of_both_nets_is_reported(tmp_path: Path) -> None:
    cfg = _img(minibatch_disc=True, fm_weight=1.0)
    sink = MemorySink()
    train(cfg, sink, tmp_path)
    g, d = build_models(cfg)
    for net, key in ((g, "g"), (d, "d")):
        layers = list(net.param_layers())
        assert net.first_layer in layers and net.last_layer in layers
        for layer in layers:
            for kind in ("grad", "weight", "update"):
                steps, values = sink.series(f"{kind}/{key}/{layer}")
                assert steps == [1, 2, 3, 4, 5, 6]
                assert all(math.isfinite(v) and v > 0 for v in values), (kind, key, layer, values)
    assert "grad/d/mbd" in sink.metrics
    # The losses add up and the predictions are probabilities.
    for total, real, fake in zip(sink.values("loss/d"), sink.values("loss/d_real"), sink.values("loss/d_fake")):
        assert total == pytest.approx(real + fake, rel=1e-6)
    for name in ("pred/real", "pred/fake", "pred/fake_g"):
        assert all(0 < v < 1 for v in sink.values(name))
    assert sink.values("model/params_g") == [parameter_count(g)]
    assert sink.values("model/params_d") == [parameter_count(d)]


class _Tiny(NamedNet):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.bn1 = nn.BatchNorm1d(4)
        self.fc2 = nn.Linear(4, 1, bias=False)
        self.first_layer, self.last_layer = "fc1", "fc2"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn1(self.fc1(x))))


def test_layer_probe_equals_direct_computation() -> None:
    torch.manual_seed(0)
    net = _Tiny()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    probe = LayerProbe(net, "g")
    assert probe.names() == ["grad/g/fc1", "grad/g/bn1", "grad/g/fc2", "weight/g/fc1", "weight/g/bn1",
                             "weight/g/fc2", "update/g/fc1", "update/g/bn1", "update/g/fc2"]
    net(torch.randn(8, 3)).pow(2).mean().backward()
    before = {n: [p.detach().clone() for p in ps] for n, ps in net.param_layers().items()}
    probe.before_step()
    opt.step()
    got = probe.after_step().tolist()
    layers = net.param_layers()
    for i, (name, params) in enumerate(layers.items()):
        grad = math.sqrt(sum(p.grad.norm().item() ** 2 for p in params))
        weight = math.sqrt(sum(p.norm().item() ** 2 for p in params))
        delta = math.sqrt(sum((p - b).norm().item() ** 2 for p, b in zip(params, before[name])))
        assert got[i] == pytest.approx(grad, rel=1e-5)
        assert got[3 + i] == pytest.approx(weight, rel=1e-5)
        assert got[6 + i] == pytest.approx(delta / weight, rel=1e-4)


def test_diversity_measures_batch_spread() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(256, 3, 8, 8, generator=gen)
    same_dist = torch.randn(256, 3, 8, 8, generator=gen)
    collapsed = real[:1].repeat(256, 1, 1, 1)
    narrow = 0.1 * same_dist
    assert diversity(same_dist, real).item() == pytest.approx(1.0, abs=0.05)
    assert diversity(collapsed, real).item() == pytest.approx(0.0, abs=1e-6)
    assert diversity(narrow, real).item() == pytest.approx(0.1, abs=0.01)


def test_metric_buffer_keeps_steps_values_and_non_finite_values() -> None:
    buf = MetricBuffer()
    buf.define("a", ["x", "y"])
    buf.record("a", 1, torch.tensor([1.0, float("nan")]))
    buf.record("a", 2, torch.tensor([float("inf"), 4.0]))
    buf.record_host("h", 2, 0.5)
    assert buf.pending() == 3
    out = buf.drain()
    assert out["x"][0] == [1, 2] and out["x"][1][0] == 1.0 and out["x"][1][1] == math.inf
    assert out["y"][0] == [1, 2] and math.isnan(out["y"][1][0]) and out["y"][1][1] == 4.0
    assert out["h"] == ([2], [0.5])
    assert buf.drain() == {} and buf.pending() == 0


def test_metrics_are_handed_over_in_batches(tmp_path: Path) -> None:
    sink = MemorySink()
    train(_img(steps=12, flush_every=5), sink, tmp_path)
    assert sink.flushes == 3                                     # steps 5, 10 and the end
    assert sink.series("loss/d")[0] == list(range(1, 13))
    assert sink.series("perf/step_s")[0] == [5, 10, 12]
    assert all(v > 0 for v in sink.values("perf/img_s"))


def test_probe_every_thins_the_per_layer_probes(tmp_path: Path) -> None:
    sink = MemorySink()
    train(_img(steps=9, probe_every=3), sink, tmp_path)
    assert sink.series("loss/d")[0] == list(range(1, 10))
    assert sink.series("grad/g/convT1")[0] == [3, 6, 9]
    assert sink.series("sample/diversity")[0] == [3, 6, 9]


def test_probes_off_trains_the_same_and_reports_nothing(tmp_path: Path) -> None:
    on, off = MemorySink(), MemorySink()
    train(_img(steps=5), on, tmp_path / "on")
    train(_img(steps=5), off, tmp_path / "off", probes=False)
    assert off.metrics == {} and on.metrics
    a, b = (ckpt_io.load(s.checkpoints[-1][1]) for s in (on, off))
    for key in a["g"]:
        assert torch.equal(a["g"][key], b["g"][key])      # measuring never changes the training


def _count_host_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Wrap every Tensor method that forces a device → host read; record calls made from trainer code."""
    calls: list[str] = []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _orig=original, _name=name, **kw):
            caller = sys._getframe(1).f_code.co_filename
            if "/trainer/" in caller.replace("\\", "/"):
                calls.append(f"{_name} from {Path(caller).name}:{sys._getframe(1).f_lineno}")
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_no_host_read_per_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Same flushes, three times the steps: the number of device -> host reads must not grow.
    counts = []
    for steps in (10, 30):
        calls = _count_host_reads(monkeypatch)
        train(_img(steps=steps, flush_every=1000, fm_weight=1.0, d_steps=2), MemorySink(), tmp_path / str(steps))
        counts.append(list(calls))
        monkeypatch.undo()
    assert counts[0] and len(counts[0]) == len(counts[1]), counts


@pytest.mark.parametrize("dataset", ["shapes", "ring8"])
def test_a_diverged_run_keeps_reporting_non_finite_values(tmp_path: Path, dataset: str) -> None:
    from ganscope.trainer.loop import Trainer

    sink = MemorySink()
    cfg = _img(dataset=dataset, toy_hidden=16, steps=8, sample_every=2, toy_every=2, checkpoint_every=4)
    trainer = Trainer(cfg, sink, tmp_path)
    assert trainer.start() is None
    trainer.advance()
    with torch.no_grad():                       # what a blow-up leaves behind
        next(iter(trainer.state.g.param_layers().values()))[0].fill_(float("nan"))
    while trainer.state.step < trainer.total:
        trainer.advance()
    trainer.flush()
    assert math.isfinite(sink.values("loss/g")[0])
    assert all(math.isnan(v) for v in sink.values("loss/g")[1:])       # kept as NaN, never dropped
    first = "grad/g/" + trainer.state.g.first_layer
    assert all(math.isnan(v) for v in sink.values(first)[1:])
    assert sink.series("loss/d")[0] == list(range(1, 9))
    if dataset == "ring8":
        assert sink.values("toy/modes")[-1] == 0 and sink.snapshots[-1].step == 8
    else:
        assert sink.samples_of("grid")[-1].step == 8
