"""Failure recipes produce their symptoms at tiny size on ring8 (the detectors rely on them).

Every recipe is a plain JobConfig (`RECIPES`), run through the real training loop on the
8-Gaussian ring (sigma 0.02, radius 2). Sizes are the tests' own (MLPs of 64-128 units,
latent 16) so each runs in seconds on one CPU thread.
"""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from ganscope.trainer.config import JobConfig
from ganscope.trainer.loop import train
from ganscope.trainer.sink import MemorySink

torch.set_num_threads(1)

TWO_LN2 = 2 * math.log(2)
_SMALL = dict(dataset="ring8", nz=16, toy_hidden=64, batch_size=64, flush_every=100, flush_seconds=3600,
              checkpoint_every=10**6, toy_every=100, device="cpu")

RECIPES: dict[str, dict] = {
    # D wins outright: fast D, three D updates per G update, G barely moving.
    "d_overpowering": dict(_SMALL, lr_d=2e-3, lr_g=1e-5, d_steps=3, steps=300),
    # The same fight under the minimax loss: log(1 - D(G(z))) saturates as D(G(z)) -> 0 (Goodfellow 2014).
    "vanishing_g_grad": dict(_SMALL, lr_d=2e-3, lr_g=1e-5, d_steps=3, loss="minimax", init="xavier", steps=300),
    # ...and the non-saturating loss on that same fight keeps G's gradient alive (the control).
    "d_overpowering_nonsaturating": dict(_SMALL, lr_d=2e-3, lr_g=1e-5, d_steps=3, init="xavier", steps=300),
    # Weights from N(0, 1) in these MLPs (no batch norm to rescale): huge activations and gradients.
    "poor_init_exploding": dict(_SMALL, init_std=1.0, steps=100),
    # Fast G, slow D: D stays undecided (loss at 2 ln 2) while G's samples huddle together.
    "mode_collapse": dict(_SMALL, lr_g=3e-3, lr_d=1e-4, steps=600, seed=1, probe_every=5),
    # D's learning rate ~0: D never learns, G fools it completely.
    "d_not_learning": dict(_SMALL, toy_hidden=128, batch_size=128, lr_d=1e-6, lr_g=1e-3, init="xavier", steps=300),
    # A healthy run: every mode of the ring is found.
    "healthy": dict(_SMALL, toy_hidden=128, batch_size=128, lr_d=1e-3, lr_g=1e-3, init="xavier", steps=600,
                    seed=1, probe_every=5),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, MemorySink]:
    class Runs(dict):
        def __missing__(self, name: str) -> MemorySink:
            sink = MemorySink()
            result = train(JobConfig(**RECIPES[name]), sink, tmp_path_factory.mktemp(name))
            assert result.status == "succeeded"
            self[name] = sink
            return sink

    return Runs()


def _after(sink: MemorySink, name: str, step: int) -> list[float]:
    return [v for s, v in zip(*sink.series(name)) if s > step]


def _first_step(sink: MemorySink, name: str, pred) -> int | None:
    return next((s for s, v in zip(*sink.series(name)) if pred(v)), None)


def test_d_overpowering_drives_d_loss_to_zero(runs) -> None:
    sink = runs["d_overpowering"]
    reached = _first_step(sink, "loss/d", lambda v: v < 0.01)
    assert reached is not None and reached <= 150, reached
    assert sink.last("pred/real") > 0.99 and sink.last("pred/fake") < 0.01
    assert max(sink.values("loss/d")[reached:]) < 0.01          # and it stays there


def test_minimax_against_a_winning_d_makes_gs_first_layer_gradient_vanish(runs) -> None:
    mm = runs["vanishing_g_grad"]
    ns = runs["d_overpowering_nonsaturating"]
    first, last = mm.values("grad/g/fc1"), mm.values("grad/g/fc4")
    assert max(first[:20]) > 0.05                                 # alive at the start
    tail = slice(-50, None)
    assert statistics.median(first[tail]) < 1e-4                  # below AUTOTRAINER's 1e-4 floor...
    assert statistics.median(last[tail]) < 1e-3 * max(last[:20])  # ...with the whole net starved
    # ...and the loss is to blame, not the fight: the same run under -log D(G(z)) keeps G's gradient.
    assert statistics.median(ns.values("grad/g/fc1")[tail]) > 0.5
    assert ns.last("loss/d") < 0.01                               # D has won there too


def test_init_std_one_gives_huge_losses_and_gradients(runs) -> None:
    sink = runs["poor_init_exploding"]
    assert sink.values("loss/d")[0] > 100
    assert min(sink.values("grad/d/fc1")[:50]) > 100
    assert statistics.median(sink.values("grad/g/fc1")) > 100


def test_fast_g_slow_d_collapses_while_d_loss_looks_healthy(runs) -> None:
    sink = runs["mode_collapse"]
    loss_d = sink.values("loss/d")
    assert abs(statistics.mean(loss_d[len(loss_d) // 2:]) - TWO_LN2) < 0.02
    assert max(sink.values("toy/modes")) <= 2
    assert statistics.median(sink.values("sample/diversity")) < 0.5
    healthy = runs["healthy"]
    assert statistics.median(_after(healthy, "sample/diversity", 500)) > 0.7


def test_a_d_that_does_not_learn(runs) -> None:
    sink = runs["d_not_learning"]
    assert all(abs(v - 0.5) < 0.05 for v in sink.values("pred/real"))
    assert max(sink.values("update/d/fc1")) < 1e-4
    assert sink.last("pred/fake") > 0.95 and sink.last("loss/d") > 3


def test_healthy_run_reaches_every_mode(runs) -> None:
    sink = runs["healthy"]
    assert max(sink.values("toy/modes")) == 8
    loss_d = _after(sink, "loss/d", 200)
    assert min(loss_d) > 0.3 and statistics.mean(loss_d) < 1.6
    assert max(_after(sink, "grad/g/fc1", 200)) < 100
