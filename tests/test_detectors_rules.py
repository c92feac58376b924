"""Detector rules, catalog and engine on synthetic series (no server, no training).

Each rule is called directly, as ingest's engine calls it, with windows built here; the
engine tests feed batches and check the alert lifecycle (open, update, close), health,
per-job threshold overrides and the cost of judging one batch.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from ganscope.server.detectors import arch, catalog, rules
from ganscope.server.detectors.engine import RunDetector
from ganscope.server.detectors.rules import Context
from ganscope.trainer.config import JobConfig

LN4 = 2 * math.log(2)
RNG = np.random.default_rng(0)
DESIGN_IDS = {"d_overpowering", "vanishing_g_grad", "exploding_grad", "nonfinite", "mode_collapse",
              "oscillation", "d_not_learning", "poor_init", "capacity_imbalance"}


def series(values, start: int = 1) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    return np.arange(start, start + v.size, dtype=np.int64), v


def noisy(level: float, n: int, sd: float) -> np.ndarray:
    return level + sd * RNG.standard_normal(n)


def judge(sig: str, recent: dict, early: dict | None = None, cfg: dict | None = None, **over):
    th = catalog.thresholds_for(sig, {sig: over} if over else None)
    return rules.RULES[sig](recent, early if early is not None else recent, th, Context.from_config(cfg or {}))


# --- catalog -----------------------------------------------------------------------------------

def test_catalog_covers_design_ids_with_reasons_remedies_and_sources():
    cat = {s["id"]: s for s in catalog.catalog()}
    assert DESIGN_IDS <= set(cat)
    for s in cat.values():
        assert s["severity"] in ("warning", "failing") and s["meaning"] and s["rule"] and s["persistence"]
        assert s["thresholds"] and all(t["why"] and isinstance(t["default"], float | int) for t in s["thresholds"])
        assert s["remedy"]["config"] and s["remedy"]["sources"] and s["remedy"]["text"]
        JobConfig(**s["remedy"]["config"])  # every remedy key is a valid JobConfig field and value


@pytest.mark.parametrize("cfg", [{}, {"dataset": "ring8", "lr_d": 2e-3, "lr_g": 1e-5, "d_steps": 3},
                                 {"init_std": 1.0, "label_smoothing": 0.9, "ngf": 2, "ndf": 64}])
def test_tailored_remedies_apply_to_the_runs_config(cfg):
    base = JobConfig(**cfg).model_dump(mode="json")
    for sig in catalog.IDS:
        remedy = catalog.remedy_for(sig, base)
        JobConfig(**{**base, **remedy["config"]})  # the dashboard's "relaunch with the remedy" stays valid
    over = catalog.remedy_for("d_overpowering", JobConfig(**cfg).model_dump())["config"]
    assert over.get("lr_d", base["lr_d"]) <= min(base["lr_d"], 2e-4) and over.get("d_steps", 1) == 1


def test_overrides_apply_and_unknown_names_are_reported():
    th = catalog.thresholds_for("d_overpowering", {"d_overpowering": {"loss_d_max": 0.3, "bogus": 1}})
    assert th["loss_d_max"] == 0.3 and "bogus" not in th
    errs = catalog.validate_overrides({"d_overpowering": {"bogus": 1}, "nope": {}})
    assert len(errs) == 2 and "bogus" in errs[0] and "nope" in errs[1]


def test_arch_counts_match_the_trainers_networks():
    from ganscope.trainer.models import build_models

    for kw in [{}, {"image_size": 16, "ngf": 8, "ndf": 8, "minibatch_disc": True},
               {"image_size": 32, "batch_norm": False, "d_downsample": "avgpool", "dataset": "mnist"},
               {"dataset": "ring8", "toy_hidden": 32}, {"dataset": "gauss1d", "toy_layers": 1, "minibatch_disc": True}]:
        cfg = JobConfig(**kw)
        g, d = build_models(cfg)
        mine = arch.layers(cfg.model_dump())
        for key, net in (("g", g), ("d", d)):
            real = {k: sum(p.numel() for p in ps) for k, ps in net.param_layers().items()}
            assert real == {k: v.total for k, v in mine[key].items()}, (kw, key)


# --- rules ---------------------------------------------------------------------------------------

def test_d_overpowering_needs_persistence_and_respects_label_smoothing():
    n = 120
    healthy = noisy(0.9, n, 0.1)
    won = np.concatenate([healthy[:60], noisy(0.002, 60, 1e-4)])
    pf = np.concatenate([noisy(0.3, 60, 0.02), noisy(0.001, 60, 1e-4)])
    f = judge("d_overpowering", {"loss/d": series(won), "pred/fake": series(pf)})
    assert f is not None and 55 <= f.first_step <= 65 and f.evidence["observed"]["loss/d"]["median"] < 0.05
    dip = healthy.copy()
    dip[80:100] = 0.001  # a 20-step dip inside a 50-step window is not a failure
    pf_dip = np.full(n, 0.3)
    pf_dip[80:100] = 0.001
    assert judge("d_overpowering", {"loss/d": series(dip), "pred/fake": series(pf_dip)}) is None
    # With a 0.9 real target the smallest D loss is H(0.9) ≈ 0.325: 0.33 is a D that has won.
    smooth = np.full(n, 0.33)
    assert judge("d_overpowering", {"loss/d": series(smooth)}, cfg={"label_smoothing": 0.9}) is not None
    assert judge("d_overpowering", {"loss/d": series(smooth)}) is None


def test_d_overpowering_classifies_exact_saturation():
    n = 80
    f = judge("d_overpowering", {"loss/d": series(np.full(n, 0.3)), "loss/d_fake": series(np.zeros(n)),
                                 "pred/fake": series(np.zeros(n))})
    assert f is not None and f.evidence["saturated_points"] >= 50


def test_vanishing_g_grad_against_early_level_and_autotrainer():
    early = {"grad/g/fc1": series(noisy(0.05, 60, 0.005)), "grad/g/fc4": series(noisy(1.0, 60, 0.1))}
    collapsed = {"grad/g/fc1": series(noisy(2e-5, 80, 1e-6), start=200),
                 "grad/g/fc4": series(noisy(0.5, 80, 0.05), start=200)}
    f = judge("vanishing_g_grad", collapsed, early, {"dataset": "ring8"})
    assert f is not None and f.evidence["metrics"][0] == "grad/g/fc1"
    alive = {"grad/g/fc1": series(noisy(0.03, 80, 0.003), start=200),
             "grad/g/fc4": series(noisy(0.5, 80, 0.05), start=200)}
    assert judge("vanishing_g_grad", alive, early, {"dataset": "ring8"}) is None
    # No gradient reaches G at all (saturated tanh): both norms exactly zero from the start.
    zero = {"grad/g/convT1": series(np.zeros(60)), "grad/g/convT3": series(np.zeros(60)),
            "grad/g/bn1": series(np.ones(60))}
    f = judge("vanishing_g_grad", zero, zero, {"dataset": "shapes", "image_size": 16})
    assert f is not None and f.evidence["metrics"] == ["grad/g/convT1", "grad/g/convT3"]


def test_exploding_grad_absolute_and_sudden_growth_but_not_a_single_spike():
    base = noisy(1.0, 300, 0.1)
    spike = base.copy()
    spike[290] = 1e4
    assert judge("exploding_grad", {"grad/d/conv1": series(spike)}) is None
    high = base.copy()
    high[280:] = 250.0
    f = judge("exploding_grad", {"grad/d/conv1": series(high)})
    assert f is not None and f.evidence["metrics"] == ["grad/d/conv1"] and f.first_step >= 270
    jump = noisy(0.1, 300, 0.01)
    jump[285:] = 40.0  # 400x its level just before, below ganhacks' 100
    assert judge("exploding_grad", {"grad/g/fc2": series(jump)}) is not None
    assert judge("exploding_grad", {"grad/g/fc2": series(jump)}, growth=1000) is None


def test_nonfinite_fires_at_once_and_names_the_metric():
    v = noisy(1.0, 30, 0.1)
    v[17] = np.nan
    f = judge("nonfinite", {"loss/d": series(np.ones(30)), "grad/g/fc1": series(v)})
    assert f is not None and f.first_step == 18 and f.evidence["metrics"] == ["grad/g/fc1"]
    assert judge("nonfinite", {"loss/d": series(np.ones(30))}) is None


def test_mode_collapse_fires_when_losses_look_ideal():
    n = 300
    calm = {"loss/d": series(noisy(LN4, n, 0.02)), "sample/diversity": series(noisy(0.004, n, 0.0005))}
    f = judge("mode_collapse", calm)
    assert f is not None and "calm" in f.message and f.evidence["observed"]["loss/d"]["median"] == pytest.approx(LN4, abs=0.02)
    healthy = {"loss/d": series(noisy(LN4, n, 0.02)), "sample/diversity": series(noisy(0.8, n, 0.1))}
    assert judge("mode_collapse", healthy) is None
    # Before warm-up a near-constant G is just an initialised one.
    assert judge("mode_collapse", {"sample/diversity": series(np.full(140, 1e-4))}) is None


def test_mode_collapse_on_toy_coverage_needs_good_samples_on_few_modes():
    steps = np.arange(0, 401, 20, dtype=np.int64)
    one = {"toy/modes": (steps, np.ones(steps.size)), "toy/quality": (steps, np.full(steps.size, 0.97))}
    f = judge("mode_collapse", one, cfg={"dataset": "ring8"})
    assert f is not None and f.evidence["observed"]["toy/modes"]["modes_total"] == 8
    junk = {"toy/modes": (steps, np.ones(steps.size)), "toy/quality": (steps, np.full(steps.size, 0.05))}
    assert judge("mode_collapse", junk, cfg={"dataset": "ring8"}) is None
    most = {"toy/modes": (steps, np.full(steps.size, 7.0)), "toy/quality": (steps, np.full(steps.size, 0.9))}
    assert judge("mode_collapse", most, cfg={"dataset": "ring8"}) is None


def test_oscillation_spikes_not_descent_nor_noise():
    n = 400
    spiky = noisy(0.8, n, 0.05)
    spiky[np.arange(60, n, 15)] += 3.0  # a spike every 15 steps
    f = judge("oscillation", {"loss/d": series(spiky)})
    assert f is not None and f.evidence["observed"]["loss/d"]["spike_frac"] > 0.04
    descent = np.concatenate([np.linspace(1.4, 0.01, 60), noisy(0.01, n - 60, 0.001)])
    assert judge("oscillation", {"loss/d": series(descent)}) is None
    assert judge("oscillation", {"loss/d": series(noisy(0.8, n, 0.15))}) is None
    # G's loss, -log D(G(z)), swings by nats once D is ahead (D(G(z)) jittering between 0.01 and 0.1):
    # with D's loss calm that is not oscillation (it was a false alarm on `make up`'s healthy demo run)
    pf = np.clip(np.random.default_rng(3).lognormal(np.log(0.04), 0.6, n), 1e-3, 0.9)
    g_swings = {"loss/d": series(noisy(0.1, n, 0.03)), "loss/g": series(-np.log(pf))}
    assert np.ptp(np.percentile(g_swings["loss/g"][1], [5, 95])) > 1.5
    assert judge("oscillation", g_swings) is None


def test_d_not_learning_frozen_at_chance_but_not_a_live_equilibrium():
    n = 120
    frozen = {"loss/d": series(LN4 + 1e-5 * RNG.standard_normal(n)), "pred/real": series(np.full(n, 0.5)),
              "pred/fake": series(np.full(n, 0.5))}
    f = judge("d_not_learning", frozen)
    assert f is not None and f.first_step == 1 and f.evidence["cause"] == "chance"
    live = {"loss/d": series(noisy(LN4, n, 0.03)), "pred/real": series(noisy(0.5, n, 0.002)),
            "pred/fake": series(noisy(0.5, n, 0.002))}
    assert judge("d_not_learning", live) is None
    still = {"loss/d": series(noisy(1.6, n, 0.05)), "update/d/conv1": series(np.full(n, 3e-6)),
             "update/d/conv2": series(np.full(n, 5e-6))}
    f = judge("d_not_learning", still, cfg={"image_size": 16})
    assert f is not None and f.evidence["cause"] == "frozen"
    clamp = {"loss/d": series(np.full(n, 100.0)), "loss/d_fake": series(np.full(n, 100.0))}
    assert judge("d_not_learning", clamp).evidence["cause"] == "clamp:loss/d_fake"


def _weights(cfg: dict, std: float) -> dict:
    """weight/<net>/<layer> as the probes log it (L2 norm) for weights drawn with `std`."""
    out = {}
    for net, layers in arch.layers(cfg).items():
        for name, layer in layers.items():
            norm = math.sqrt(layer.weights) * (1.0 if layer.kind == "bn" else std)
            out[f"weight/{net}/{name}"] = series(np.full(10, norm))
    return out


def test_poor_init_against_the_config_and_dcgan():
    cfg = {"dataset": "shapes", "image_size": 16, "ngf": 8, "ndf": 8}
    assert judge("poor_init", _weights(cfg, 0.02), cfg=cfg) is None
    f = judge("poor_init", _weights(cfg, 1.0), cfg=cfg)
    assert f is not None and f.evidence["observed"]["weight/g/* std"]["median"] == pytest.approx(1.0, rel=0.01)
    # Asked for 0.2 but got 0.02: the weights are not what the config intends.
    f = judge("poor_init", _weights(cfg, 0.02), cfg={**cfg, "init_std": 0.2})
    assert f is not None and "init_std 0.2" in f.message
    assert judge("poor_init", _weights(cfg, 1.0), cfg={**cfg, "init": "xavier"}) is None


def test_capacity_imbalance_from_params_or_architecture():
    pts = {"loss/d": series(np.ones(5))}
    logged = {**pts, "model/params_g": series([1e3], start=0), "model/params_d": series([1e6], start=0)}
    assert judge("capacity_imbalance", logged).evidence["observed"]["ratio"]["value"] == pytest.approx(1e-3)
    assert judge("capacity_imbalance", pts, cfg={"image_size": 16, "ngf": 1, "ndf": 64}) is not None
    assert judge("capacity_imbalance", pts, cfg={"image_size": 16, "ngf": 8, "ndf": 8}) is None


# --- engine --------------------------------------------------------------------------------------

def _batches(values: dict[str, np.ndarray], size: int = 50):
    n = len(next(iter(values.values())))
    for lo in range(0, n, size):
        yield {k: (np.arange(lo + 1, min(lo + size, n) + 1), v[lo:lo + size]) for k, v in values.items()}


def test_engine_opens_updates_and_closes_with_health():
    n = 600
    ld = noisy(0.9, n, 0.1)
    pf = noisy(0.3, n, 0.02)
    ld[100:300], pf[100:300] = 0.001, 0.001  # D wins for 200 steps, then recovers
    det = RunDetector({"dataset": "ring8"})
    kinds = []
    health = []
    for b in _batches({"loss/d": ld, "pred/fake": pf}):
        kinds += [(c.kind, c.alert.signature) for c in det.feed(b)]
        health.append(det.health)
    assert kinds[0] == ("open", "d_overpowering") and ("update", "d_overpowering") in kinds
    assert kinds[-1] == ("close", "d_overpowering") and "failing" in health and health[-1] == "healthy"
    a = det.history[0]
    assert a.status == "closed" and 95 <= a.first_step <= 110 and 290 <= a.last_step <= 310
    assert a.remedy["config"]["label_smoothing"] == 0.9


def test_engine_applies_job_overrides_and_merges_out_of_order_batches():
    ld = np.full(200, 0.3)
    assert not any(RunDetector({}).feed(b) for b in _batches({"loss/d": ld}))
    det = RunDetector({"detectors": {"d_overpowering": {"loss_d_max": 0.5}}})
    assert any(c.alert.signature == "d_overpowering" for b in _batches({"loss/d": ld}) for c in det.feed(b))
    det = RunDetector({})
    b = list(_batches({"loss/d": np.arange(100.0)}))
    det.feed(b[1])
    det.feed(b[0])
    det.feed({"loss/d": (np.array([5]), np.array([-1.0]))})  # a replayed step: the first value wins
    s, v = det.recent["loss/d"]
    assert list(s) == list(range(1, 101)) and v[4] == 4.0


def test_engine_judges_a_batch_cheaply():
    cfg = JobConfig(dataset="shapes", image_size=16, ngf=8, ndf=8).model_dump()
    names = ["loss/d", "loss/d_real", "loss/d_fake", "loss/g", "pred/real", "pred/fake", "sample/diversity"]
    names += [f"{k}/{net}/{layer}" for k in ("grad", "weight", "update")
              for net, layers in arch.layers(cfg).items() for layer in layers]
    data = {n: noisy(1.0, 2000, 0.1) for n in names}
    det = RunDetector(cfg)
    batches = list(_batches(data))
    for b in batches[:10]:
        det.feed(b)  # fill the windows
    t = time.process_time()  # CPU time: other processes on a shared machine do not count
    for b in batches[10:]:
        det.feed(b)
    per_batch = (time.process_time() - t) / len(batches[10:])
    # 50 steps x 40 series per batch: ~1 ms on an idle core; storing such a batch costs tens of ms
    assert per_batch < 0.01, f"{per_batch * 1e3:.1f} ms per batch"


def test_engine_ingest_filter_keeps_what_the_rules_read():
    """Ingest queues `relevant(batch)`: once the early-window verdicts are final it drops series no rule
    reads (weights, G's updates, lr, perf) from finite batches — and judging must not change."""
    cfg = {"dataset": "shapes", "image_size": 16, "ngf": 8, "ndf": 8, "init_std": 0.2}  # poor_init will fire
    n = 600
    cols = {k: np.full(n, v[0]) for k, (_, v) in _weights(cfg, 1.0).items()}
    cols |= {"loss/d": noisy(0.9, n, 0.1), "pred/fake": noisy(0.3, n, 0.02), "lr/d": np.full(n, 2e-4)}
    cols["loss/d"][300:500] = 0.001
    cols["pred/fake"][300:500] = 0.001  # D wins mid-run
    cols["weight/g/convT1"][550] = math.inf  # a non-finite point in a series no windowed rule reads
    full, filtered = RunDetector(cfg), RunDetector(cfg)
    dropped = set()
    for b in _batches(cols):
        full.feed(b)
        finite = all(np.isfinite(v).all() for _, v in b.values())
        kept = filtered.relevant(b, finite)
        dropped |= set(b) - set(kept)
        filtered.feed(kept, finite=finite)
    assert "weight/g/convT1" in dropped and "lr/d" in dropped and "loss/d" not in dropped
    assert [(a.signature, a.first_step, a.last_step, a.status) for a in full.history] == \
        [(a.signature, a.first_step, a.last_step, a.status) for a in filtered.history]
    assert {"poor_init", "d_overpowering", "nonfinite"} <= set(filtered.fired())
