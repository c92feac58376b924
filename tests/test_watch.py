"""run.watch(G, D) on a script's own nets: the right numbers, any optimizer arrangement, no change to training,
no host read per step."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from ganscope.trainer import sdk
from ganscope.trainer.probes import module_layers
from ganscope.trainer.watch import DeviceLog, Watch
from tests.harness import ServerProc

torch.set_num_threads(1)


def nets(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    g = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 2))
    d = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    return g, d


def gan_steps(g: nn.Module, d: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer, n: int,
              run: sdk.Run | None = None, d_steps: int = 1) -> None:
    """A plain GAN loop; with a run, the helpers are called too (they must not change anything either)."""
    bce = nn.BCEWithLogitsLoss()
    for step in range(n):
        for _ in range(d_steps):
            real = torch.randn(32, 2) + 2
            fake = g(torch.randn(32, 4))
            out_r, out_f = d(real), d(fake.detach())
            loss_d = bce(out_r, torch.ones_like(out_r)) + bce(out_f, torch.zeros_like(out_f))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        out_g = d(fake)
        loss_g = bce(out_g, torch.ones_like(out_g))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if run is not None:
            run.log_gan(step, loss_d=loss_d, loss_g=loss_g, d_real=out_r, d_fake=out_f, d_fake_g=out_g,
                        fake=fake, real=real)


@pytest.fixture
def open_run(server: ServerProc, tmp_path: Path) -> Iterator[sdk.Run]:
    run = sdk.init(server.url, name="watch", spool_dir=tmp_path / "spool", quiet=True)
    yield run
    run.finish()


def test_watching_does_not_change_training_bit_for_bit(open_run: sdk.Run) -> None:
    results = []
    for watched in (False, True):
        g, d = nets()
        opt_g, opt_d = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
        torch.manual_seed(1)
        if watched:
            open_run.watch(g, d)
        gan_steps(g, d, opt_g, opt_d, 25, open_run if watched else None)
        results.append(([p.detach().clone() for p in [*g.parameters(), *d.parameters()]],
                        [b.clone() for b in g.buffers()], torch.get_rng_state()))
    (pa, ba, ra), (pb, bb, rb) = results
    assert all(torch.equal(x, y) for x, y in zip(pa, pb)) and all(torch.equal(x, y) for x, y in zip(ba, bb))
    assert torch.equal(ra, rb)  # no random draw either


def test_layers_in_registration_order_and_the_declared_part(server: ServerProc, open_run: sdk.Run) -> None:
    class Gen(nn.Module):  # registration order differs from the names' sort order
        def __init__(self) -> None:
            super().__init__()
            self.zeta = nn.Linear(4, 8)
            self.norm = nn.LayerNorm(8)
            self.alpha = nn.Linear(8, 2)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.alpha(torch.relu(self.norm(self.zeta(z))))

    g, d = Gen(), nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1))
    assert list(module_layers(g)) == ["zeta", "norm", "alpha"]
    open_run.watch(g, d)
    opt = torch.optim.SGD([*g.parameters(), *d.parameters()], lr=0.1)
    (d(g(torch.randn(8, 4))).mean()).backward()
    opt.step()
    open_run.log({"loss/g": 1.0}, step=0)
    open_run.finish()
    c = server.client()
    run = c.get(f"/api/runs/{open_run.id}").json()
    assert run["config"]["layers"] == {"g": ["zeta", "alpha"], "d": ["0", "2"]}  # weight layers, first = input side
    names = set(run["metric_names"])
    for kind in ("grad", "weight", "update"):
        assert {f"{kind}/g/zeta", f"{kind}/g/norm", f"{kind}/g/alpha", f"{kind}/d/0", f"{kind}/d/2"} <= names
    assert run["last"]["model/params_g"] == sum(p.numel() for p in g.parameters())
    assert run["last"]["params/g/zeta"] == 32 and run["last"]["params/d/2"] == 8
    assert run["last"]["lr/g"] == run["last"]["lr/d"] == 0.1  # the optimizer's learning rate at the step


def _manual(net: nn.Module, before: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    out = {}
    for layer, params in module_layers(net).items():
        grad = torch.sqrt(sum(p.grad.pow(2).sum() for p in params))
        weight = torch.sqrt(sum(p.detach().pow(2).sum() for p in params))
        delta = torch.sqrt(sum((p.detach() - b).pow(2).sum() for p, b in zip(params, before[layer])))
        out[f"grad/{layer}"], out[f"weight/{layer}"], out[f"update/{layer}"] = float(grad), float(weight), \
            float(delta / weight)
    return out


@pytest.mark.parametrize("arrangement", ["one optimizer each", "one for both", "made after watch",
                                         "G split over two", "D stepped 3 times"])
def test_values_equal_a_direct_computation_whatever_the_optimizers(arrangement: str) -> None:
    g, d = nets()
    log = DeviceLog(flush_every=10_000, flush_seconds=1e9)
    made_after = arrangement == "made after watch"
    if not made_after:
        watch = Watch(log, {"g": g, "d": d})
    if arrangement == "one for both":
        both = torch.optim.Adam([*g.parameters(), *d.parameters()], 1e-2)
        opt_g = opt_d = both
    elif arrangement == "G split over two":
        first, second = torch.optim.Adam(g[0].parameters(), 1e-2), torch.optim.SGD(
            [*g[1].parameters(), *g[3].parameters()], 0.1)
        opt_d = torch.optim.Adam(d.parameters(), 1e-2)
    else:
        opt_g, opt_d = torch.optim.Adam(g.parameters(), 1e-2), torch.optim.Adam(d.parameters(), 1e-2)
    if made_after:
        watch = Watch(log, {"g": g, "d": d})
    try:
        for step in range(3):
            for _ in range(3 if arrangement == "D stepped 3 times" else 1):
                before_d = {k: [p.detach().clone() for p in ps] for k, ps in module_layers(d).items()}
                loss = d(g(torch.randn(16, 4)).detach()).mean() - d(torch.randn(16, 2)).mean()
                opt_d.zero_grad()
                loss.backward()
                opt_d.step()
                want_d = _manual(d, before_d)
            before_g = {k: [p.detach().clone() for p in ps] for k, ps in module_layers(g).items()}
            loss = -d(g(torch.randn(16, 4))).mean()
            if arrangement == "G split over two":
                first.zero_grad(), second.zero_grad()
                loss.backward()
                first.step()
                second.step()
            else:
                opt_g.zero_grad()
                d.zero_grad()
                loss.backward()
                opt_g.step()
            if arrangement != "one for both":
                want_g = _manual(g, before_g)
            log.commit(step)
        got = log.drain()
    finally:
        watch.close()
    if arrangement == "one for both":
        # One step moves both nets: D's row is that last step's (its grads are those of G's loss), as is G's.
        assert set(got) >= {"grad/g/0", "grad/d/0"} and got["grad/d/0"][0] == [0, 1, 2]
        return
    for name, value in {**{f"{k.split('/')[0]}/d/{k.split('/')[1]}": v for k, v in want_d.items()},
                        **{f"{k.split('/')[0]}/g/{k.split('/')[1]}": v for k, v in want_g.items()}}.items():
        steps, values = got[name]
        assert steps == [0, 1, 2], name  # one point per logged step: D's last update when it took several
        assert values[-1] == pytest.approx(value, rel=1e-4, abs=1e-7), name


def test_every_thins_the_measurements_and_finish_removes_the_hooks() -> None:
    g, d = nets()
    log = DeviceLog(flush_every=10_000, flush_seconds=1e9)
    watch = Watch(log, {"g": g, "d": d}, every=3)
    opt_d = torch.optim.SGD(d.parameters(), 0.1)
    for step in range(9):
        d(torch.randn(4, 2)).mean().backward()
        opt_d.step()
        log.commit(step)
    assert log.drain()["grad/d/0"][0] == [0, 3, 6]
    watch.close()
    d(torch.randn(4, 2)).mean().backward()
    opt_d.step()
    log.commit(9)
    assert log.drain() == {}


def test_a_net_converted_after_watch_is_still_measured() -> None:
    g, d = nets()
    log = DeviceLog()
    watch = Watch(log, {"g": g, "d": d})
    d.double()  # what a script may do after setting things up
    opt = torch.optim.SGD(d.parameters(), 0.1)
    d(torch.randn(4, 2, dtype=torch.float64)).mean().backward()
    opt.step()
    log.commit(0)
    assert log.drain()["weight/d/0"][1][0] > 0
    watch.close()


def test_d_outputs_as_probabilities_or_logits_and_critics() -> None:
    log = DeviceLog()
    logits = torch.tensor([[-2.0], [0.0], [2.0]])
    probs = torch.sigmoid(logits)
    log.d_outputs({"real": logits}, logits=True, critic=False, step=0)
    log.d_outputs({"real": probs}, logits=False, critic=False, step=1)
    log.d_outputs({"fake_g": logits}, logits=True, critic=True, step=2)
    got = log.drain()
    assert got["score/real"][1] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert got["pred/real"][1] == pytest.approx([float(probs.mean())] * 2)
    assert "pred/fake_g" not in got and got["score/fake_g"] == ([2], [pytest.approx(0.0)])  # a critic: score only


def _count_host_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every Tensor method that forces a device → host read, called from ganscope's trainer package."""
    calls: list[str] = []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _orig=original, _name=name, **kw):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if "/trainer/" in caller:
                calls.append(f"{_name} from {Path(caller).name}:{sys._getframe(1).f_lineno}")
            return _orig(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return calls


def test_no_host_read_per_step(server: ServerProc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = []
    for n in (10, 30):
        g, d = nets()
        opt_g, opt_d = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
        run = sdk.init(server.url, spool_dir=tmp_path / f"spool{n}", flush_every=1000, flush_seconds=1e9, quiet=True)
        run.watch(g, d)
        calls = _count_host_reads(monkeypatch)
        gan_steps(g, d, opt_g, opt_d, n, run, d_steps=2)
        run.finish()
        counts.append(list(calls))
        monkeypatch.undo()
        got = server.client().get(f"/api/runs/{run.id}/metrics", params={"names": "grad/d/0,pred/fake_g,loss/d",
                                                                         "max_points": 1000}).json()["metrics"]
        assert all(v["steps"] == list(range(n)) for v in got.values()) and len(got) == 3
    assert counts[0] and len(counts[0]) == len(counts[1]), counts
