"""Loss-aware detectors on synthetic series: hinge and WGAN-GP runs, mean-reduced D losses, declared layers.

Rules that read BCE-scale values (loss/d near 0 or 2·ln 2, pred/* as probabilities) must read the run's
own loss: under hinge and WGAN-GP they judge the critic's scores or stay silent, never misfire because
the scale differs; a D loss logged as the mean of its terms (ln 2 at chance) is recognised, declared or
inferred; the first layer is the first of the declared `layers`, not the first name in sorted order.
"""

from __future__ import annotations

import math

import numpy as np

from ganscope.server.detectors import catalog, rules
from ganscope.server.detectors.engine import RunDetector
from ganscope.server.detectors.rules import Context

LN4 = 2 * math.log(2)
LN2 = math.log(2)
RNG = np.random.default_rng(7)


def series(values, start: int = 1) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    return np.arange(start, start + v.size, dtype=np.int64), v


def noisy(level: float, n: int, sd: float) -> np.ndarray:
    return level + sd * RNG.standard_normal(n)


def judge(sig: str, recent: dict, cfg: dict | None = None, kind: str = "job"):
    th = catalog.thresholds_for(sig, None)
    return rules.RULES[sig](recent, recent, th, Context.from_config(cfg or {}, kind))


def fired(recent: dict, cfg: dict, kind: str = "job") -> set[str]:
    return {sig for sig in ("d_overpowering", "d_not_learning", "oscillation", "mode_collapse", "vanishing_g_grad")
            if judge(sig, recent, cfg, kind) is not None}


# --- hinge ------------------------------------------------------------------------------------------

def hinge(n: int, real: float, fake: float, sd: float) -> dict:
    """Scores and the hinge loss they give (mean relu(1 − D(x)) + mean relu(1 + D(G(z))), batch-level)."""
    sr, sf = noisy(real, n, sd), noisy(fake, n, sd)
    lr, lf = np.maximum(0, 1 - sr), np.maximum(0, 1 + sf)
    return {"score/real": series(sr), "score/fake": series(sf), "score/fake_g": series(sf),
            "loss/d_real": series(lr), "loss/d_fake": series(lf), "loss/d": series(lr + lf),
            "loss/g": series(-sf)}


def test_hinge_healthy_is_silent_even_with_bce_like_values():
    cfg = {"loss": "hinge"}
    assert fired(hinge(400, 0.4, -0.3, 0.3), cfg) == set()
    # Spiky critic losses are not judged on BCE's nats scale.
    spiky = hinge(400, 0.4, -0.3, 0.3)
    s, v = spiky["loss/d"]
    v = v.copy()
    v[np.arange(60, 400, 12)] += 3.0
    spiky["loss/d"] = (s, v)
    assert judge("oscillation", spiky, cfg) is None


def test_hinge_provoked_dominance_and_chance_are_flagged():
    won = judge("d_overpowering", hinge(200, 3.0, -3.0, 0.2), {"loss": "hinge"})
    assert won is not None and "hinge" in won.message
    assert won.evidence["observed"]["score/real − score/fake"]["median"] > 2
    frozen = hinge(200, 0.0, 0.0, 1e-5)  # a D whose output is one constant: hinge loss 2, scores alike
    f = judge("d_not_learning", frozen, {"loss": "hinge"})
    assert f is not None and f.evidence["cause"] == "chance"
    assert f.evidence["observed"]["loss/d"]["chance"] == 2.0


# --- WGAN-GP ----------------------------------------------------------------------------------------

def wgan_gp(n: int, w: np.ndarray, level: float, sd: float, gp: float = 0.05) -> dict:
    """Critic scores with Wasserstein estimate w; loss/d = −mean D(x) + mean D(G(z)) + 10·gp."""
    sr = level + w / 2 + sd * RNG.standard_normal(n)
    sf = level - w / 2 + sd * RNG.standard_normal(n)
    gpv = np.abs(noisy(gp, n, gp / 3))
    return {"score/real": series(sr), "score/fake": series(sf), "loss/d_real": series(-sr),
            "loss/d_fake": series(sf), "loss/gp": series(gpv), "loss/d": series(-sr + sf + 10 * gpv),
            "loss/g": series(-sf)}


def test_wgan_gp_healthy_is_silent_whatever_its_loss_scale():
    cfg = {"loss": "wgan_gp"}
    n = 400
    w = np.linspace(5.0, 0.3, n)
    assert fired(wgan_gp(n, w, 20.0, 0.5), cfg) == set()
    # Near convergence: loss/d around 0 (what BCE rules would call "D has won") and spiky: still silent.
    late = wgan_gp(n, np.full(n, 0.3), -15.0, 0.4)
    s, v = late["loss/d"]
    late["loss/d"] = (s, v + np.where(np.arange(n) % 10 == 0, 3.0, 0.0))
    assert fired(late, cfg) == set()


def test_wgan_gp_frozen_critic_is_flagged():
    cfg = {"loss": "wgan_gp"}
    n = 200
    frozen = wgan_gp(n, np.zeros(n), 0.01, 1e-6, gp=1.0)  # a critic that outputs a constant: W ≈ 0, gp ≈ 1
    f = judge("d_not_learning", frozen, cfg)
    assert f is not None and f.evidence["cause"] == "chance" and "Wasserstein" in f.message
    assert f.evidence["observed"]["loss/gp"]["median"] > 0.5  # the penalty says D's gradient is ~0
    # frozen weights count too, without BCE's "loss/d above 0.5" (a critic's loss has no such scale)
    still = {**wgan_gp(n, np.linspace(2, 1, n), 3.0, 0.2), "update/d/fc1": series(np.full(n, 1e-7)),
             "update/d/fc2": series(np.full(n, 2e-7))}
    still["loss/d"] = (still["loss/d"][0], still["loss/d"][1] - 10)  # a negative critic loss
    f = judge("d_not_learning", still, cfg)
    assert f is not None and f.evidence["cause"] == "frozen"


def test_undeclared_critic_scores_keep_bce_rules_silent():
    """An SDK run that declares no loss and logs scores, not probabilities: BCE rules do not guess."""
    crit = wgan_gp(200, np.full(200, 0.01), 0.0, 0.001)
    crit["loss/d"] = (crit["loss/d"][0], np.full(200, 0.01))  # would be "D has won" on a BCE scale
    assert judge("d_overpowering", crit, {}, kind="sdk") is None
    assert judge("oscillation", crit, {}, kind="sdk") is None


# --- reduction of loss/d ----------------------------------------------------------------------------

def bce(n: int, real_term: float, fake_term: float, mean: bool, sd: float = 0.0, pr=0.5, pf=0.5) -> dict:
    r, f = noisy(real_term, n, sd), noisy(fake_term, n, sd)
    return {"loss/d_real": series(r), "loss/d_fake": series(f), "loss/d": series((r + f) / (2 if mean else 1)),
            "pred/real": series(np.full(n, pr)), "pred/fake": series(np.full(n, pf))}


def test_mean_reduced_loss_at_ln2_is_chance_when_declared_or_inferred():
    frozen = bce(150, LN2, LN2, mean=True, sd=1e-6)
    declared = judge("d_not_learning", frozen, {"loss_d_reduction": "mean"}, kind="sdk")
    assert declared is not None and declared.evidence["loss_scale"]["loss_d_reduction"] == "mean"
    inferred = judge("d_not_learning", frozen, {}, kind="sdk")
    assert inferred is not None and "inferred" in inferred.evidence["loss_scale"]["how"]
    # The built-in trainer logs the sum: a loss of ln 2 there is a D that learns, not one at chance.
    live = bce(150, LN2 / 2, LN2 / 2, mean=False, sd=1e-6, pr=0.7, pf=0.3)
    assert judge("d_not_learning", live, {"dataset": "ring8"}) is None


def test_unknown_reduction_accepts_both_chance_values_and_says_so():
    only = {k: v for k, v in bce(150, LN2, LN2, mean=True, sd=1e-6).items() if not k.startswith("loss/d_")}
    f = judge("d_not_learning", only, {}, kind="sdk")
    assert f is not None and f.evidence["loss_scale"]["loss_d_reduction"] == "unknown"
    assert "both" in f.evidence["loss_scale"]["how"] and abs(f.evidence["observed"]["loss/d"]["chance"] - LN2) < 1e-9


def test_mean_reduced_d_loss_is_judged_on_the_summed_scale():
    # one-sided target 0.9: the summed floor is H(0.9) ≈ 0.325, logged mean-reduced as ≈ 0.1625
    cfg = {"loss_d_reduction": "mean", "label_smoothing": 0.9}
    won = bce(150, 0.33, 0.001, mean=True, pf=0.001)  # logged ≈ 0.166: at the floor, D has won
    f = judge("d_overpowering", won, cfg, kind="sdk")
    assert f is not None and 0.3 < f.evidence["observed"]["loss/d"]["median"] < 0.4  # shown on the summed scale
    near = bce(150, 0.38, 0.02, mean=True, pf=0.001)  # logged 0.2 = summed 0.4: 0.075 above the floor
    assert judge("d_overpowering", near, cfg, kind="sdk") is None
    # the same numbers read as a sum would sit below the floor: a false "D has won"
    assert judge("d_overpowering", near, {**cfg, "loss_d_reduction": "sum"}, kind="sdk") is not None


def test_engine_infers_the_reduction_once_and_reports_it():
    det = RunDetector({}, kind="sdk")
    data = bce(300, LN2, LN2, mean=True, sd=1e-6)
    for lo in range(0, 300, 50):
        det.feed({k: (s[lo:lo + 50], v[lo:lo + 50]) for k, (s, v) in data.items()})
    [a] = [a for a in det.history if a.signature == "d_not_learning"]
    assert a.evidence["loss_scale"]["loss_d_reduction"] == "mean"


# --- declared layer order ---------------------------------------------------------------------------

def test_declared_layers_order_the_first_layer():
    """PyTorch-GAN names G's input layer `l1` and the rest `conv_blocks.*`: sorted names put l1 last."""
    n = 120
    grads = {"grad/g/l1": series(np.zeros(n)), "grad/g/conv_blocks.0": series(noisy(0.5, n, 0.05)),
             "grad/g/conv_blocks.3": series(noisy(0.5, n, 0.05)), "grad/g/conv_blocks.6": series(noisy(1.0, n, 0.1))}
    layers = {"g": ["l1", "conv_blocks.0", "conv_blocks.3", "conv_blocks.6"], "d": ["model.0"]}
    f = judge("vanishing_g_grad", grads, {"layers": layers}, kind="sdk")
    assert f is not None and f.evidence["metrics"][0] == "grad/g/l1"
    assert judge("vanishing_g_grad", grads, {}, kind="sdk") is None  # natural order: conv_blocks.0 first


def test_forgetting_a_run_rebuilds_its_state_with_the_new_config(tmp_path):
    """An SDK run declares its layer order mid-run: after hook.forget the next batch reads the new config."""
    from ganscope.server.db import Database
    from ganscope.server.detectors import hook
    from ganscope.server.live import Broker
    from ganscope.server.schema import Run
    from ganscope.server.store import metrics, runs
    from ganscope.server.store.migrate import migrate
    from ganscope.trainer.config import JobConfig

    db = Database(f"sqlite:///{tmp_path / 'f.db'}")
    migrate(db)
    with db.write() as s:
        run_id = runs.create_job(s, JobConfig(dataset="ring8")).id
    broker = Broker()
    batch = {"loss/d": (np.arange(1, 51, dtype=np.int64), np.full(50, 0.9))}
    with db.write() as s:
        metrics.append(s, run_id, batch)
    hook.process_ingest(db, broker, run_id, batch)
    assert hook.engine_for(db).get(run_id).ctx.layers is None
    with db.write() as s:
        s.get(Run, run_id).config = {**s.get(Run, run_id).config, "layers": {"g": ["l1", "conv_blocks.0"]}}
    hook.forget(db, run_id)
    assert hook.engine_for(db).get(run_id) is None
    nxt = {"loss/d": (np.arange(51, 101, dtype=np.int64), np.full(50, 0.9))}
    with db.write() as s:
        metrics.append(s, run_id, nxt)
    hook.process_ingest(db, broker, run_id, nxt)
    det = hook.engine_for(db).get(run_id)
    assert det.ctx.layers == {"g": ["l1", "conv_blocks.0"]} and det.recent["loss/d"][0][0] == 1  # history reloaded
    db.dispose()
