"""The modern stabilisers do what they say: hinge and WGAN-GP losses, spectral norm, lazy R1, an EMA
of G that draws the samples, DiffAugment — and with every one off the trainer is unchanged."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganscope.trainer import checkpoint as ckpt_io
from ganscope.trainer.augment import OPS, DiffAugment
from ganscope.trainer.config import JobConfig
from ganscope.trainer.data import build_data
from ganscope.trainer.ema import EmaGenerator
from ganscope.trainer.losses import gradient_penalty, r1_penalty
from ganscope.trainer.loop import _EVAL_SALT, _NOISE_SALT, TOY_EVAL_N, Trainer, make_adam, train
from ganscope.trainer.models import build_generator, build_models, z_shape
from ganscope.trainer.probes import LayerProbe
from ganscope.trainer.samples import checkpoint_figures, generate, images_png, load_generator
from ganscope.trainer.sink import MemorySink
from tests.harness import ServerProc, start_server
from tests.jobs import tiny_image_job as _img
from tests.test_trainer_probes import _count_host_reads

torch.set_num_threads(1)
CPU = torch.device("cpu")


def _toy(**kw) -> JobConfig:
    base = dict(dataset="ring8", toy_hidden=32, toy_layers=2, nz=8, batch_size=64, steps=200, flush_every=1000,
                flush_seconds=3600, toy_every=100, checkpoint_every=10_000, device="cpu")
    return JobConfig(**{**base, **kw})


def _run(cfg: JobConfig, tmp_path: Path, name: str = "w") -> MemorySink:
    sink = MemorySink()
    assert train(cfg, sink, tmp_path / name).status == "succeeded"
    return sink


def _first_batch(cfg: JobConfig, tmp_path: Path) -> tuple[Trainer, torch.Tensor, torch.Tensor]:
    """A fresh trainer of the same job and the real batch and z its first D update draws."""
    t = Trainer(cfg, MemorySink(), tmp_path / "ref")
    return t, t.real_batch(), t.noise(cfg.batch_size)


def _sigma(m: nn.Module) -> float:
    """Largest singular value of a layer's effective weight, reshaped as spectral norm does."""
    w = m.weight.detach()
    if isinstance(m, nn.ConvTranspose2d):
        w = w.transpose(0, 1)           # output channels are dim 1 of a transposed conv's weight
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()


def _linear_layers(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]


# --- with every knob off, nothing changes -----------------------------------------------------------

def test_defaults_train_exactly_as_the_plain_dcgan_step(tmp_path: Path) -> None:
    cfg = _img(steps=5)
    sink = _run(cfg, tmp_path)
    assert not {"loss/gp", "loss/r1"} & set(sink.metrics)

    # The DCGAN step written out from the building blocks, with the trainer's seeds and streams.
    g, d = build_models(cfg)
    data = build_data(cfg)
    opt_g, opt_d = make_adam(g, cfg.lr_g, cfg, CPU), make_adam(d, cfg.lr_d, cfg, CPU)
    data_gen = torch.Generator().manual_seed(cfg.seed)
    noise_gen = torch.Generator().manual_seed(cfg.seed + _NOISE_SALT)
    ones, zeros = torch.ones(cfg.batch_size), torch.zeros(cfg.batch_size)
    want: dict[str, list[float]] = {k: [] for k in ("loss/d", "loss/g", "pred/real", "pred/fake_g", "score/fake")}
    for _ in range(cfg.steps):
        real = data.batch(cfg.batch_size, data_gen)
        fake = g(torch.randn(z_shape(cfg, cfg.batch_size), generator=noise_gen))
        d.requires_grad_(True)
        s_real, s_fake = d(real)[0], d(fake.detach())[0]
        loss_d = F.binary_cross_entropy_with_logits(s_real, ones) + F.binary_cross_entropy_with_logits(s_fake, zeros)
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        d.requires_grad_(False)
        s_gen = d(fake)[0]
        loss_g = F.binary_cross_entropy_with_logits(s_gen, ones)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        for name, v in zip(want, (loss_d, loss_g, torch.sigmoid(s_real).mean(), torch.sigmoid(s_gen).mean(),
                                  s_fake.mean())):
            want[name].append(v.item())
    for name, values in want.items():
        assert sink.values(name) == values, name          # the same bits, step by step
    final = ckpt_io.load(sink.checkpoints[-1][1])
    for key, tensor in g.state_dict().items():
        assert torch.equal(final["g"][key], tensor), key
    assert "g_ema" not in final


# --- losses -------------------------------------------------------------------------------------------

def test_hinge_losses_have_their_definition_on_ds_outputs(tmp_path: Path) -> None:
    cfg = _img(loss="hinge", steps=3)
    sink = _run(cfg, tmp_path)
    t, real, z = _first_batch(cfg, tmp_path)
    with torch.no_grad():
        fake = t.state.g(z)
        s_real, s_fake = t.state.d(real)[0], t.state.d(fake)[0]
    d_real = torch.clamp(1 - s_real, min=0).mean().item()
    d_fake = torch.clamp(1 + s_fake, min=0).mean().item()
    assert sink.values("loss/d_real")[0] == pytest.approx(d_real, rel=1e-5)
    assert sink.values("loss/d_fake")[0] == pytest.approx(d_fake, rel=1e-5)
    assert sink.values("score/real")[0] == pytest.approx(s_real.mean().item(), rel=1e-5, abs=1e-7)
    assert sink.values("score/fake")[0] == pytest.approx(s_fake.mean().item(), rel=1e-5, abs=1e-7)
    for total, a, b in zip(sink.values("loss/d"), sink.values("loss/d_real"), sink.values("loss/d_fake")):
        assert total == pytest.approx(a + b, rel=1e-6)
    assert sink.values("loss/g_adv") == [-v for v in sink.values("score/fake_g")]   # G: -mean D(G(z))
    assert not [n for n in sink.metrics if n.startswith("pred/")]                    # no sigmoid of a critic


def test_wgan_gp_losses_and_penalty_have_their_definition(tmp_path: Path) -> None:
    cfg = _img(loss="wgan_gp", steps=3)
    sink = _run(cfg, tmp_path)
    t, real, z = _first_batch(cfg, tmp_path)
    d = t.state.d
    with torch.no_grad():
        fake = t.state.g(z)
        s_real, s_fake = d(real)[0], d(fake)[0]
    # The penalty written out: one epsilon per sample, the next draw of the noise stream after z.
    eps = torch.rand((cfg.batch_size, 1, 1, 1), generator=t.state.noise_gen)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(d(x_hat)[0].sum(), x_hat)
    gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean().item()

    assert sink.values("loss/gp")[0] == pytest.approx(gp, rel=1e-4)
    assert sink.values("loss/d_real")[0] == pytest.approx(-s_real.mean().item(), rel=1e-5, abs=1e-7)
    assert sink.values("loss/d_fake")[0] == pytest.approx(s_fake.mean().item(), rel=1e-5, abs=1e-7)
    for total, a, b, p in zip(*(sink.values(n) for n in ("loss/d", "loss/d_real", "loss/d_fake", "loss/gp"))):
        assert total == pytest.approx(a + b + cfg.gp_weight * p, rel=1e-5)
    assert sink.values("loss/d_real") == [-v for v in sink.values("score/real")]
    assert sink.values("loss/g_adv") == [-v for v in sink.values("score/fake_g")]
    assert not [n for n in sink.metrics if n.startswith("pred/")]
    # Per-sample penalty: D's batch norm became layer norm (ln*), G keeps its batch norm.
    assert not [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [m for m in d.modules() if isinstance(m, nn.GroupNorm)]
    assert [m for m in t.state.g.modules() if isinstance(m, nn.BatchNorm2d)]
    assert "grad/d/ln2" in sink.metrics and "grad/d/bn2" not in sink.metrics


def test_gradient_penalty_is_zero_for_a_1_lipschitz_critic_and_positive_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    real, fake = torch.randn(32, 3, 4, 4, generator=gen), torch.randn(32, 3, 4, 4, generator=gen)
    w = torch.randn(48, generator=gen)
    w = w / w.norm()
    assert gradient_penalty(lambda x: x.flatten(1) @ w, real, fake, gen).item() < 1e-8      # |grad| = 1
    assert gradient_penalty(lambda x: x.flatten(1).norm(dim=1), real, fake, gen).item() < 1e-8
    assert gradient_penalty(lambda x: x.flatten(1) @ (3 * w), real, fake, gen).item() == pytest.approx(4.0)
    assert gradient_penalty(lambda x: 0.5 * x.flatten(1).norm(dim=1), real, fake, gen).item() == pytest.approx(0.25)
    # ...and it trains the critic: its gradient reaches the critic's weights.
    critic = nn.Linear(48, 1)
    gradient_penalty(lambda x: critic(x.flatten(1)).flatten(), real, fake, gen).backward()
    assert critic.weight.grad is not None and critic.weight.grad.norm() > 0


def test_r1_penalty_is_the_squared_input_gradient_on_real_data() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 4, 4, generator=gen).requires_grad_(True)
    w = torch.randn(48, generator=gen)
    assert r1_penalty(x.flatten(1) @ w, x).item() == pytest.approx(w.pow(2).sum().item(), rel=1e-6)
    # D(x) = ‖x‖²: ∇ = 2x, so R1 = 4 · mean ‖x‖².
    want = 4 * x.detach().pow(2).sum(dim=(1, 2, 3)).mean().item()
    assert r1_penalty((x.flatten(1) ** 2).sum(1), x).item() == pytest.approx(want, rel=1e-5)


def test_r1_runs_every_r1_every_d_updates_and_changes_only_ds_gradients(tmp_path: Path) -> None:
    plain = _run(_img(steps=6), tmp_path, "plain")
    r1 = _run(_img(steps=6, r1_gamma=5.0, r1_every=2), tmp_path, "r1")
    steps, values = r1.series("loss/r1")
    assert steps == [2, 4, 6] and all(v > 0 for v in values)
    assert "loss/r1" not in plain.metrics
    # Identical until the first penalised update; then D's gradient changes, its reported loss does not
    # (the penalty is kept out of loss/d, which would otherwise jump every r1_every updates).
    assert r1.values("grad/d/conv1")[0] == plain.values("grad/d/conv1")[0]
    assert r1.values("loss/d")[1] == plain.values("loss/d")[1]
    assert r1.values("grad/d/conv1")[1] != plain.values("grad/d/conv1")[1]
    # Counted in D updates: with two per step, updates 3, 6, 9, 12 fall in steps 2, 3, 5, 6.
    two = _run(_img(steps=6, d_steps=2, r1_gamma=1.0, r1_every=3), tmp_path, "two")
    assert two.series("loss/r1")[0] == [2, 3, 5, 6]


def test_lazy_r1_adds_gamma_over_2_times_r1_every_times_the_penalty_to_ds_objective(tmp_path: Path) -> None:
    # Two D updates per step, R1 every 2nd: the step's last update carries the penalty, weighted 3/2 · 2.
    cfg = _img(steps=1, d_steps=2, r1_gamma=3.0, r1_every=2)
    sink = _run(cfg, tmp_path)
    t = Trainer(cfg, MemorySink(), tmp_path / "ref")
    g, d, opt = t.state.g, t.state.d, t.state.opt_d
    ones, zeros = torch.ones(cfg.batch_size), torch.zeros(cfg.batch_size)

    def bce_halves(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s_real = d(real)[0]
        return s_real, (F.binary_cross_entropy_with_logits(s_real, ones)
                        + F.binary_cross_entropy_with_logits(d(fake)[0], zeros))

    real = t.real_batch()
    fake = g(t.noise(cfg.batch_size)).detach()
    opt.zero_grad()
    bce_halves(real, fake)[1].backward()                 # update 1: no penalty
    opt.step()
    real = t.real_batch().requires_grad_(True)
    fake = g(t.noise(cfg.batch_size)).detach()
    s_real, loss = bce_halves(real, fake)
    (grad_x,) = torch.autograd.grad(s_real.sum(), real, create_graph=True)
    r1 = grad_x.pow(2).flatten(1).sum(1).mean()
    grads = torch.autograd.grad(loss + 3.0 / 2 * 2 * r1, d.param_layers()["conv1"])
    assert sink.values("loss/r1") == [pytest.approx(r1.item(), rel=1e-5)]
    assert sink.values("grad/d/conv1")[0] == pytest.approx(math.sqrt(sum(x.norm().item() ** 2 for x in grads)),
                                                           rel=1e-4)
    assert sink.values("loss/d")[0] == pytest.approx(loss.item(), rel=1e-6)      # R1 is not in loss/d


# --- spectral norm --------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["d", "both"])
def test_spectral_norm_bounds_every_layers_largest_singular_value(tmp_path: Path, where: str) -> None:
    t = Trainer(_img(spectral_norm=where, steps=20), MemorySink(), tmp_path / where)
    t.run()
    plain = Trainer(_img(steps=20), MemorySink(), tmp_path / "plain")
    plain.run()
    for net in (t.state.d, t.state.g, plain.state.d):
        net.eval()                         # read the effective weight without another power iteration
    for m in _linear_layers(t.state.d) + (_linear_layers(t.state.g) if where == "both" else []):
        assert _sigma(m) == pytest.approx(1.0, abs=0.02)
        # The optimizer trains the raw tensor; only the layer's effective weight is normalised.
        assert abs(torch.linalg.matrix_norm(
            m.parametrizations.weight.original.detach().flatten(1), ord=2).item() - 1.0) > 0.05
    assert min(_sigma(m) for m in _linear_layers(plain.state.d)) < 0.5    # DCGAN's init is far from 1
    if where == "d":
        assert min(_sigma(m) for m in _linear_layers(t.state.g)) < 0.5


def test_spectral_norm_keeps_layer_names_init_and_probes(tmp_path: Path) -> None:
    g0, d0 = build_models(_img(minibatch_disc=True))
    g1, d1 = build_models(_img(minibatch_disc=True, spectral_norm="both"))
    for plain, normed in ((g0, g1), (d0, d1)):
        layers0, layers1 = plain.param_layers(), normed.param_layers()
        assert list(layers1) == list(layers0)            # conv1, bn2, ..., mbd: not "weight"/"original"
        for name in layers0:
            assert [p.shape for p in layers1[name]] == [p.shape for p in layers0[name]]
            for a, b in zip(layers0[name], layers1[name]):
                assert torch.equal(a, b), name               # same raw init whatever spectral_norm says
    # The probe measures the tensors the optimizer updates (the raw weights and biases).
    probe = LayerProbe(d1, "d")
    assert probe.names() == LayerProbe(d0, "d").names()
    opt = torch.optim.Adam(d1.parameters(), lr=1e-3)
    d1(torch.randn(16, 3, 16, 16))[0].pow(2).mean().backward()
    before = {n: [p.detach().clone() for p in ps] for n, ps in d1.param_layers().items()}
    probe.before_step()
    opt.step()
    got = probe.after_step().tolist()
    n = len(before)
    for i, (name, params) in enumerate(d1.param_layers().items()):
        grad = math.sqrt(sum(p.grad.norm().item() ** 2 for p in params))
        weight = math.sqrt(sum(p.norm().item() ** 2 for p in params))
        delta = math.sqrt(sum((p - b).norm().item() ** 2 for p, b in zip(params, before[name])))
        assert got[i] == pytest.approx(grad, rel=1e-5) and grad > 0
        assert got[n + i] == pytest.approx(weight, rel=1e-5)
        assert got[2 * n + i] == pytest.approx(delta / weight, rel=1e-4)
    # A run reports the same per-layer series with spectral norm as without it.
    normed_run = _run(_img(spectral_norm="both", steps=2), tmp_path, "sn")
    plain_run = _run(_img(steps=2), tmp_path, "plain")
    assert set(normed_run.metrics) == set(plain_run.metrics)
    assert all(v > 0 for v in normed_run.values("weight/d/conv1") + normed_run.values("grad/g/convT1"))


# --- EMA of G -----------------------------------------------------------------------------------------------

def test_ema_update_is_the_exponential_average_of_weights_and_buffers() -> None:
    g = build_generator(_img())
    ema = EmaGenerator(g, 0.9)
    before = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
        for name, b in g.named_buffers():
            b.add_(3 if not b.is_floating_point() else 2.0)
    ema.update()
    now = g.state_dict()
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, 0.9 * before[key] + 0.1 * now[key], atol=1e-6), key
        else:
            assert torch.equal(value, now[key]), key     # counters are copied
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_ema_g_differs_from_g_and_draws_every_sample(tmp_path: Path) -> None:
    cfg = _img(ema_g=0.9, steps=6, sample_every=6, checkpoint_every=6)
    sink = _run(cfg, tmp_path)
    path = sink.checkpoints[-1][1]
    ckpt = ckpt_io.load(path)
    assert any(not torch.equal(ckpt["g"][k], ckpt["g_ema"][k]) for k in ckpt["g"] if ckpt["g"][k].is_floating_point())

    ema_net, trained = build_generator(cfg), build_generator(cfg)
    ema_net.load_state_dict(ckpt["g_ema"])
    trained.load_state_dict(ckpt["g"])
    grid = next(s.png for s in sink.samples_of("grid") if s.step == 6)
    assert images_png(generate(ema_net.train(), ckpt["fixed_z"]), nrow=8) == grid
    assert images_png(generate(trained.train(), ckpt["fixed_z"]), nrow=8) != grid
    figures = checkpoint_figures(ema_net, cfg, CPU)
    for kind in ("interp", "walk"):
        assert next(s.png for s in sink.samples_of(kind) if s.step == 6) == figures[kind]
    # The CLI's samples from a checkpoint come from the average too.
    loaded = load_generator(path)
    for key, value in loaded.net.state_dict().items():
        assert torch.equal(value, ckpt["g_ema"][key])

    on = Trainer(cfg, MemorySink(), tmp_path / "on")
    off = Trainer(_img(), MemorySink(), tmp_path / "off")
    assert on.eval_generator() is on.state.g_ema.module and on.eval_generator() is not on.state.g
    assert off.eval_generator() is off.state.g


def test_ema_toy_snapshots_come_from_the_average(tmp_path: Path) -> None:
    cfg = _toy(ema_g=0.95, steps=20, toy_every=20)
    t = Trainer(cfg, MemorySink(), tmp_path)
    t.run()
    snap = t.sink.snapshots[-1]
    z = torch.randn(z_shape(cfg, TOY_EVAL_N), generator=torch.Generator().manual_seed(
        cfg.seed * 1_000_003 + _EVAL_SALT + 20))
    for net, same in ((t.state.g_ema.module, True), (t.state.g, False)):
        fake = generate(net, z)[: len(snap.payload["fake"])].tolist()
        close = all(math.isclose(a, b, abs_tol=1e-4) for p, q in zip(fake, snap.payload["fake"]) for a, b in zip(p, q))
        assert close is same


# --- DiffAugment -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("op", sorted(OPS))
def test_each_augment_op_is_differentiable_and_changes_the_batch(op: str) -> None:
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def f(t: torch.Tensor) -> torch.Tensor:
        return OPS[op](t, torch.Generator().manual_seed(0))   # same draw on every call: a fixed function

    assert torch.autograd.gradcheck(f, (x,))
    y = f(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_translation_and_cutout_shapes() -> None:
    ones = torch.ones(64, 3, 16, 16)
    gen = torch.Generator().manual_seed(0)
    shifted = OPS["translation"](ones, gen)
    zero_rows = (shifted[:, 0] == 0).all(dim=2).sum(dim=1)      # rows emptied by a vertical shift
    zero_cols = (shifted[:, 0] == 0).all(dim=1).sum(dim=1)
    assert zero_rows.max() <= 2 and zero_cols.max() <= 2         # at most 1/8 of 16 px each way
    assert ((zero_rows > 0) | (zero_cols > 0)).any()
    assert torch.equal((shifted == 0).sum(dim=(2, 3))[:, 0], (shifted == 0).sum(dim=(2, 3))[:, 1])
    cut = OPS["cutout"](ones, gen)
    holes = (cut[:, 0] == 0)
    rows, cols = holes.any(dim=2).sum(dim=1), holes.any(dim=1).sum(dim=1)
    assert torch.equal(holes.sum(dim=(1, 2)), rows * cols)       # one axis-aligned rectangle per sample
    assert rows.min() >= 4 and rows.max() <= 8 and cols.min() >= 4 and cols.max() <= 8
    colored = OPS["color"](ones, gen)
    assert colored.flatten(1).std(dim=0).mean() > 0               # each sample its own draw


def test_diffaugment_treats_real_and_fake_alike_and_g_learns_through_it(tmp_path: Path) -> None:
    cfg = _img(diffaugment="cutout", d_steps=2, g_steps=2, steps=1)
    t = Trainer(cfg, MemorySink(), tmp_path)
    policy = t.augment
    assert isinstance(policy, DiffAugment) and policy.ops == ("cutout",)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def recording(x: torch.Tensor) -> torch.Tensor:
        out = policy(x)
        seen.append((x, out))
        return out

    t.augment = recording
    assert t.start() is None
    t.advance()
    t.flush()
    # Per D update its real and its fake batch; per G update its fake batch: 2·2 + 2.
    assert len(seen) == 2 * cfg.d_steps + cfg.g_steps
    grad_flows = [x.requires_grad for x, _ in seen]
    assert grad_flows == [False, False, False, False, True, True]    # G's batches keep G's graph
    for x, out in seen:
        # Real images never hold an exact 0 (k/127.5 − 1) nor does tanh here: every zero is the cutout.
        holes = (out.detach() == 0).all(dim=1).sum(dim=(1, 2))
        assert (holes >= 16).all() and not (x.detach() == 0).all(dim=1).any()
    assert t.sink.values("grad/g/convT1")[0] > 0
    plain = _run(_img(d_steps=2, g_steps=2, steps=1), tmp_path, "plain")
    assert plain.values("loss/d") != t.sink.values("loss/d")


# --- health, cost, resume, validation -----------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["hinge", "wgan_gp"])
@pytest.mark.parametrize("dataset", ["ring8", "shapes"])
def test_short_runs_with_each_new_loss_stay_finite(tmp_path: Path, loss: str, dataset: str) -> None:
    cfg = _toy(loss=loss) if dataset == "ring8" else _img(loss=loss, steps=40, batch_size=32)
    sink = _run(cfg, tmp_path)
    for name, (_, values) in sink.metrics.items():
        assert all(math.isfinite(v) for v in values), name
    assert max(abs(v) for n in ("score/real", "score/fake") for v in sink.values(n)) < 50   # no runaway critic
    assert min(sink.values("sample/diversity")[-10:]) > 0.05                                 # G did not collapse
    assert len(sink.values("loss/d")) == cfg.steps


def test_no_host_read_per_step_with_every_stabiliser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    knobs = dict(loss="wgan_gp", spectral_norm="both", r1_gamma=1.0, r1_every=2, ema_g=0.99,
                 diffaugment="color,translation,cutout", flush_every=1000)
    counts = []
    for steps in (6, 18):
        calls = _count_host_reads(monkeypatch)
        train(_img(steps=steps, **knobs), MemorySink(), tmp_path / str(steps))
        counts.append(list(calls))
        monkeypatch.undo()
    assert counts[0] and len(counts[0]) == len(counts[1]), counts


def test_resume_turns_the_average_on_from_g_and_refuses_a_changed_architecture(tmp_path: Path) -> None:
    sink = _run(_img(steps=3), tmp_path, "a")
    path = sink.checkpoints[-1][1]
    t = Trainer(_img(steps=6, ema_g=0.9), MemorySink(), tmp_path / "b")
    t.start(resume=path)
    for key, value in t.state.g.state_dict().items():
        assert torch.equal(t.state.g_ema.module.state_dict()[key], value)   # the average starts at G
    with pytest.raises(ckpt_io.CheckpointError, match="spectral_norm"):
        train(_img(steps=6, spectral_norm="d"), MemorySink(), tmp_path / "c", resume=path)
    with pytest.raises(ckpt_io.CheckpointError, match="normalisation"):
        train(_img(steps=6, loss="wgan_gp"), MemorySink(), tmp_path / "d", resume=path)
    # A loss that keeps D's shape may change across a resume (a remedy switching to hinge).
    assert train(_img(steps=6, loss="hinge"), MemorySink(), tmp_path / "e", resume=path).status == "succeeded"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = start_server(tmp_path_factory.mktemp("stabilisers"))
    yield s
    s.stop()


@pytest.mark.parametrize("body, field, words", [
    ({"loss": "wgan"}, "loss", "hinge"),
    ({"loss": "wgan_gp", "gp_weight": 0}, "gp_weight", "greater than 0"),
    ({"spectral_norm": "g"}, "spectral_norm", "'both'"),
    ({"r1_gamma": -1}, "r1_gamma", "greater than or equal to 0"),
    ({"r1_every": 0}, "r1_every", "greater than or equal to 1"),
    ({"ema_g": 1.0}, "ema_g", "less than 1"),
    ({"diffaugment": "color,flip"}, "diffaugment", "'flip'"),
    ({"diffaugment": "color,color"}, "diffaugment", "twice"),
    ({"dataset": "ring8", "diffaugment": "color"}, None, "toy set"),
    ({"loss": "hinge", "label_smoothing": 0.9}, None, "label_smoothing"),
    ({"loss": "wgan_gp", "minibatch_disc": True}, None, "minibatch_disc"),
])
def test_bad_stabiliser_knobs_get_a_422_naming_them(srv: ServerProc, body: dict, field: str | None,
                                                    words: str) -> None:
    with srv.client() as c:
        r = c.post("/api/jobs", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert len(detail) == 1 and words in detail[0]["msg"], detail
    if field is not None:
        assert detail[0]["loc"] == ["body", field]


def test_every_stabiliser_switches_on_through_a_config_diff(srv: ServerProc) -> None:
    base = _img().model_dump(mode="json")
    diff = {"loss": "hinge", "spectral_norm": "both", "r1_gamma": 10, "r1_every": 8, "ema_g": 0.999,
            "diffaugment": " translation, color "}
    with srv.client() as c:
        r = c.post("/api/jobs", json={**base, **diff})
        assert r.status_code == 201, r.text
        # The runs list shows the stabilisers a run has on, next to its other key knobs.
        assert {k: r.json()["key_config"].get(k) for k in ("loss", "spectral_norm", "r1_gamma", "ema_g")} == \
            {"loss": "hinge", "spectral_norm": "both", "r1_gamma": 10, "ema_g": 0.999}
        assert "spectral_norm" not in c.post("/api/jobs", json=base).json()["key_config"]
        config = c.get(f"/api/runs/{r.json()['id']}").json()["config"]
    assert {k: config[k] for k in diff} == {**diff, "diffaugment": "color,translation"}   # canonical order
    assert JobConfig.model_validate(config).augment_ops == ("color", "translation")
    knobs = {k["name"]: k for k in httpx.get(f"{srv.url}/api/knobs").json()["knobs"]}
    for name in ("gp_weight", "spectral_norm", "r1_gamma", "r1_every", "ema_g", "diffaugment"):
        assert knobs[name]["help"] and name in knobs
    assert knobs["gp_weight"]["default"] == 10 and knobs["r1_every"]["default"] == 16
