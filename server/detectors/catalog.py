"""The catalog of failure signatures: what each means, its rule, thresholds (with why), remedy, source.

This module is data plus two small helpers. The rules themselves live in `rules.py`;
the thresholds they read come from here, merged with a job's `detectors` overrides.
Every remedy's `config` holds JobConfig fields only, so the dashboard's "relaunch
with the remedy" can apply it to the run's config unchanged (a test checks that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

LN4 = 2 * math.log(2)  # summed BCE of a D at chance (D(x) = D(G(z)) = 0.5): 2·ln 2 ≈ 1.386

SEVERITY_RANK = {"healthy": 0, "warning": 1, "failing": 2}

# Mode counts of the toy sets, fixed by trainer/toy.py (the server may not import it: it imports torch).
TOY_MODES = {"ring8": 8, "grid25": 25, "gauss1d": 1, "bimodal1d": 2, "trimodal1d": 3}

SOURCES = {
    "dcgan": "Radford, Metz, Chintala 2015, 'Unsupervised Representation Learning with DCGANs' (DCGAN paper)",
    "salimans": "Salimans et al. 2016, 'Improved Techniques for Training GANs'",
    "ganhacks": "soumith/ganhacks, 'How to Train a GAN?' (§6 soft labels, §10 track failures early)",
    "seeds": "GAN-NOTES.md, the seed write-ups' takeaways (init N(0, 0.02), BN momentum, FM, "
             "label smoothing 0.9, lr 2e-5 for late instability, equal layer counts, G/D parameter ratio)",
    "autotrainer": "Zhang et al., ICSE 2021, 'AUTOTRAINER' (gradient ratio and magnitude checks)",
    "deepdiagnosis": "Wardat et al., ICSE 2022, 'DeepDiagnosis' (NaN/Inf, unchanged weights; stop at detection)",
    "goodfellow": "Goodfellow et al. 2014, 'Generative Adversarial Nets' (equilibrium D = 1/2; non-saturating G loss)",
}


@dataclass(frozen=True)
class Threshold:
    name: str
    default: float
    why: str


@dataclass(frozen=True)
class Signature:
    id: str
    title: str
    meaning: str
    rule: str
    severity: str  # "warning" | "failing"
    persistence: str  # in words; the numeric window is the `window` threshold
    thresholds: tuple[Threshold, ...]
    remedy_text: str
    remedy_config: dict[str, Any]  # catalog default; alerts tailor it to the run's config (remedy_for)
    sources: tuple[str, ...]
    metrics: tuple[str, ...] = field(default=())

    def defaults(self) -> dict[str, float]:
        return {t.name: t.default for t in self.thresholds}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "meaning": self.meaning, "rule": self.rule,
            "severity": self.severity, "persistence": self.persistence,
            "thresholds": [{"name": t.name, "default": t.default, "why": t.why} for t in self.thresholds],
            "metrics": list(self.metrics),
            "remedy": {"text": self.remedy_text, "config": dict(self.remedy_config),
                       "sources": [SOURCES[s] for s in self.sources]},
        }


T = Threshold
SIGNATURES: tuple[Signature, ...] = (
    Signature(
        id="nonfinite", title="Non-finite values",
        meaning="A loss, prediction, gradient or weight statistic became NaN or ±Inf: the weights are "
                "(or are about to be) garbage and nothing after this point is meaningful.",
        rule="any logged value is NaN or ±Inf (null on the wire); failing at the first such point, no persistence",
        severity="failing", persistence="none: fails at the first non-finite point",
        thresholds=(
            T("clear_steps", 200, "A NaN poisons Adam's moments and the weights, so the alert only closes after "
              "this many steps of finite values (e.g. a bf16 overflow the scaler skipped)."),
        ),
        remedy_text="Lower both learning rates ten-fold and re-initialise from N(0, 0.02); turn off mixed "
                    "precision while diagnosing. AUTOTRAINER and DeepDiagnosis both stop at the first NaN.",
        remedy_config={"lr_d": 2e-5, "lr_g": 2e-5, "init": "normal", "init_std": 0.02, "amp": False},
        sources=("autotrainer", "deepdiagnosis", "dcgan"), metrics=("*",),
    ),
    Signature(
        id="d_overpowering", title="Discriminator overpowering",
        meaning="D separates real from fake with certainty: loss/d near zero, D(x)→1, D(G(z))→0. Under the "
                "minimax loss G's gradient vanishes; under the non-saturating loss it saturates; samples stop improving.",
        rule="over the last `window` steps, at ≥ `hold_frac` of points: loss/d − floor < `loss_d_max` "
             "(floor = the BCE entropy of the one-sided real target, 0 without smoothing) and "
             "D(G(z)) < `pred_fake_max`; a D saturated at float precision (a BCE term exactly 0, D(G(z)) "
             "exactly 0 — beyond what the loss can measure) counts as holding",
        severity="failing", persistence="the condition held at 90% of the points of a 50-step window",
        thresholds=(
            T("loss_d_max", 0.05, "ganhacks §10: 'D loss → 0 is a failure mode'. At chance the loss is 2·ln 2 ≈ "
              "1.39; healthy 16–32px DCGANs measured dip to 0.07 at single steps but never hold below 0.05, while "
              "the provoked runs hold at 1e-4–2e-2."),
            T("pred_fake_max", 0.02, "D(G(z)) < 0.02 means D rejects fakes at 98% confidence: the classic picture "
              "of D(x)→1, D(G(z))→0. Healthy runs measured dip to 0.03 at single steps."),
            T("window", 50, "A transient dip is not a failure; 50 steps is one flush of the trainer and well "
              "inside the 100-step detection budget."),
            T("hold_frac", 0.9, "Tolerates a stray point inside the window (a lucky G batch) without missing a "
              "D that has won."),
        ),
        remedy_text="Let D learn slower and stop over-training it: one D step per G step, D's learning rate "
                    "no higher than 2e-4 (halved), one-sided label smoothing (real target 0.9) and N(0, 0.02) init.",
        remedy_config={"d_steps": 1, "lr_d": 1e-4, "label_smoothing": 0.9},
        sources=("ganhacks", "seeds", "salimans", "dcgan"),
        metrics=("loss/d", "loss/d_real", "loss/d_fake", "pred/real", "pred/fake"),
    ),
    Signature(
        id="vanishing_g_grad", title="Vanishing generator gradient",
        meaning="G no longer receives a learning signal from D: its first-layer gradient is flat at zero (dead "
                "ReLUs, a saturated tanh) or, under the minimax loss, scaled away by a D that rejects every fake "
                "(the seed plots show it flat near zero while D's loss goes to ~0).",
        rule="over the last `window` steps at ≥ `hold_frac` of points: G's first-layer gradient norm exactly 0; "
             "or, under the minimax loss, D(G(z)) on G's step below `signal_min`; or, after `warmup_steps`, G's "
             "first-layer norm below `drop_ratio` × its early level (median of the first `early_steps` steps), "
             "or AUTOTRAINER's test ‖g_first‖/‖g_last‖ < `ratio_max` with ‖g_first‖ < `abs_max`",
        severity="failing", persistence="the condition held at 90% of the points of a 50-step window",
        thresholds=(
            T("drop_ratio", 0.01, "A hundred-fold fall against the run's own level while it learned: a G that "
              "receives a hundredth of the signal it used to is no longer trained by D."),
            T("ratio_max", 1e-3, "AUTOTRAINER's vanishing-gradient ratio of first- to last-layer gradient norm."),
            T("abs_max", 1e-4, "AUTOTRAINER's absolute floor on the first layer's gradient norm."),
            T("early_steps", 100, "The early level: G's first-layer gradient over the run's first 100 steps."),
            T("warmup_steps", 100, "Under N(0, 0.02) init G's first-layer gradient is ~1e-8 until D has learned "
              "something (the first ~50 steps of healthy toy runs measured), which is youth, not vanishing. "
              "A norm of exactly zero counts from the start."),
            T("signal_min", 0.01, "Minimax loss only: the gradient at D's logit is −D(G(z)) (Goodfellow et al. "
              "2014), so D(G(z)) < 0.01 on G's step scales G's whole learning signal below 1% — the saturation "
              "the non-saturating loss was introduced to avoid."),
            T("window", 50, "One trainer flush; a momentary small gradient (a D step that happened to agree) is "
              "not a failure."),
            T("hold_frac", 0.9, "Tolerates a stray point inside the window."),
        ),
        remedy_text="Initialise from N(0, 0.02) (xavier and N(0, 0.2) failed in the seed write-up), keep batch "
                    "norm in both nets, and use the non-saturating G loss, which keeps G's gradient alive when D wins.",
        remedy_config={"init": "normal", "init_std": 0.02, "batch_norm": True, "loss": "nonsaturating"},
        sources=("seeds", "dcgan", "goodfellow", "autotrainer"),
        metrics=("grad/g/<first>", "grad/g/<last>", "pred/fake_g"),
    ),
    Signature(
        id="exploding_grad", title="Exploding gradients",
        meaning="Some layer's gradient norm is huge or jumped by orders of magnitude; NaNs usually follow.",
        rule="over the last `window` steps at ≥ `hold_frac` of points: the largest per-layer gradient norm "
             "of either net exceeds `abs_max`, or a layer's norm exceeds both `growth` × its median over the "
             "`baseline_steps` before the window and `growth_floor`",
        severity="failing", persistence="the condition held at 60% of the points of a 20-step window",
        thresholds=(
            T("abs_max", 100.0, "ganhacks §10: 'check norms of gradients: if they are over 100 things are "
              "screwing up'. The largest per-layer norm measured on healthy runs was ~70 (G's output layer "
              "of a 16px DCGAN)."),
            T("growth", 100.0, "A hundred-fold jump against the layer's own recent level: healthy runs measured "
              "at most 25× (56× at single steps inside ring8's late instability)."),
            T("growth_floor", 10.0, "A jump only counts once the norm is also this large: a gradient growing "
              "from 1e-6 to 1e-4 is a net waking up, not exploding."),
            T("baseline_steps", 200, "The level a jump is measured against: the layer's median just before."),
            T("window", 20, "Explosions run away within a few steps, so the window is short."),
            T("hold_frac", 0.6, "A single huge spike is tolerated; a majority of the window is not."),
        ),
        remedy_text="Lower the learning rates ten-fold (the seed write-up cured late instability with lr 2e-5), "
                    "keep batch norm on and Adam's beta1 at 0.5; re-initialise from N(0, 0.02).",
        remedy_config={"lr_d": 2e-5, "lr_g": 2e-5, "batch_norm": True, "beta1": 0.5},
        sources=("ganhacks", "seeds", "autotrainer", "dcgan"), metrics=("grad/d/*", "grad/g/*"),
    ),
    Signature(
        id="mode_collapse", title="Mode collapse",
        meaning="G maps many z to few outputs. The losses can look ideal (D near 2·ln 2): D is confused by a "
                "G that covers one mode well, so only the sample spread and mode coverage reveal it.",
        rule="after `warmup_steps`, at ≥ `hold_frac` of the points: sample/diversity (G's batch spread ÷ the real "
             "batch's) below `diversity_min` over the last `diversity_window` steps; or, on toy mixtures, over the "
             "last `window` steps, G's good samples (toy/quality ≥ `quality_min`) cover at least one and at most "
             "`modes_frac` × the set's modes",
        severity="failing", persistence="the condition held at 80% of the points of the last 50 steps (sample "
                                        "spread, at least five measurements) or 100 steps (toy coverage, at "
                                        "least two measurements)",
        thresholds=(
            T("diversity_min", 0.01, "G's spread at 1% of the real batch's: all samples one point or one image. "
              "Collapsed toy runs measured 0–0.003; on 16px shapes a G without batch norm that D pulls ahead of "
              "settled at 0.001–0.006 (the corpus's shapes_collapse, 9 of 10 seeds). Healthy runs after warm-up: "
              "16px with batch norm ≥ 0.22 (8 seeds, and the bench's wider, 32px, smoothed and fast variants), "
              "without batch norm ≥ 0.016 (8 of 9 runs at DCGAN's learning rates; the ninth collapsed the same "
              "way from step ~300); a healthy ring8 run contracted to 0.005–0.07 for ~100 steps before "
              "spreading, yet below 0.01 at no more than 14% of any 100 steps (28% of any 50). Against the "
              "run's own peak the margin is thinner — healthy runs without batch norm dipped to 0.22–0.38 of "
              "theirs, collapsed ones settled at 0.05–0.21 — so the line stays absolute."),
            T("modes_frac", 0.5, "Losing at least half the modes of a mixture is collapse however the losses look "
              "(bimodal on one mode, ring8 on four or fewer)."),
            T("quality_min", 0.5, "Collapse means G's samples sit on few modes: at least half of them good "
              "(within 3σ of a mode). A G still mostly off every mode (healthy grid25 runs at 0.3–0.45 after "
              "600–800 steps here) has not collapsed, it has not arrived; a G hovering around one mode measured "
              "0.6–1.0."),
            T("warmup_steps", 150, "Under N(0, 0.02) init G starts as a near-constant map (spread ~1e-4 of the "
                                   "data's) and healthy toy runs need up to ~130 steps to spread out."),
            T("diversity_window", 50, "Spread is measured on every probed batch: 50 steps are 50 measurements "
              "(sparse probing widens the window to five). An image collapse decays over ~100 steps: judged over "
              "100 steps, with metrics flushed every 50, the alert came 84–121 steps after the spread's level "
              "crossed diversity_min; over 50 steps, 43–86 (shapes_collapse, 9 seeds). Healthy runs had at "
              "most 56% of any 50 steps below the line (a trimodal run still spreading out at warm-up)."),
            T("window", 100, "Coverage is measured every toy_every steps on one batch and is noisy; 100 steps is "
              "several measurements and the detection budget. An alert closes once the rule stayed quiet as long."),
            T("hold_frac", 0.8, "Tolerates a lucky batch."),
        ),
        remedy_text="Add minibatch discrimination and feature matching (Salimans et al. 2016), the adversarial "
                    "term dominating early; don't let G's learning rate or step count outrun D's. On images keep "
                    "batch norm in G: without it, a G that D pulled ahead of contracted to one image here.",
        remedy_config={"minibatch_disc": True, "fm_weight": 1.0, "fm_warmup_steps": 200},
        sources=("salimans", "ganhacks", "seeds"), metrics=("sample/diversity", "toy/modes", "toy/quality"),
    ),
    Signature(
        id="oscillation", title="Oscillating losses",
        meaning="D and G chase each other: the losses swing in large spikes and cycles instead of settling "
                "(ganhacks: a failing D loss 'has huge variance and spikes'; the seed write-up's late instability).",
        rule="over the last `window` steps (after `warmup_steps`): loss/d swings by more than "
             "`spread_min` nats between its 5th and 95th percentile, and more than `spike_frac` of its points "
             "spike over `spike_nats` above the local level (an 11-step rolling median, so a steady descent is "
             "no spike)",
        severity="warning", persistence="measured over a 200-step window",
        thresholds=(
            T("spread_min", 1.5, "Healthy runs' D loss measured swing by up to 1.4 nats, rarely 2 as ring8 nears "
              "its late instability; once unstable it swings by 2–5. G's loss is not judged: −log D(G(z)) magnifies "
              "D(G(z))'s ordinary jitter once D is ahead, and `make up`'s healthy demo run (32px) swung by 2.4 nats "
              "with 16% of its points spiking — it raised this warning until G's loss was dropped from the rule."),
            T("spike_nats", 0.5, "A spike is half a nat above the local level: far beyond batch-to-batch noise."),
            T("spike_frac", 0.04, "Spikes recur (over 4% of steps), not one bad batch; healthy runs measured ≤ 2.5%, "
              "oscillating ones 6–18%."),
            T("warmup_steps", 50, "D's first steps take its loss from 2·ln 2 down steeply; that is not oscillation."),
            T("window", 200, "Cycles take tens of steps; a window of 200 sees several of them. The rule waits "
              "until 80% of it is covered after warm-up, so spikes from step ~50 are flagged by ~250 (the corpus's "
              "one 195-step delay); judging on 100 steps of evidence cut that to 95 but alarmed on a healthy 16px "
              "run at lr 1e-3 (bench/detect.py's shapes_fast_lr), so the window stays."),
        ),
        remedy_text="Lower the learning rates (the seed write-up: 'decrease the learning rate to 2e-5' for late "
                    "instability) and keep Adam's beta1 at 0.5.",
        remedy_config={"lr_g": 2e-5, "lr_d": 2e-5, "beta1": 0.5},
        sources=("ganhacks", "seeds", "dcgan"), metrics=("loss/d",),
    ),
    Signature(
        id="d_not_learning", title="Discriminator not learning",
        meaning="D is stuck: it outputs the same for real and fake (loss/d frozen at 2·ln 2, D(x) = D(G(z))), "
                "its weights do not move, or its sigmoid sits at BCE's clamp where the gradient is zero. G then "
                "trains against a critic that tells it nothing.",
        rule="over the last `window` steps at ≥ `hold_frac` of points, one of: |loss/d − 2·ln 2| < `chance_band` "
             "and |D(x) − D(G(z))| < `pred_gap` with loss/d's IQR over the window < `flat_iqr`; or D's largest "
             "update-to-weight ratio < `update_max` while loss/d > `loss_d_min`; or loss/d_real or loss/d_fake "
             "pinned at BCE's clamp (`clamp_loss`)",
        severity="failing", persistence="the condition held at 90% of the points of an 80-step window",
        thresholds=(
            T("chance_band", 0.01, "At chance the summed BCE is 2·ln 2; a D that learns leaves this band within "
              "~70 steps in every healthy run measured, a stuck one never does."),
            T("pred_gap", 0.005, "D(x) − D(G(z)) is the margin by which D tells real from fake; below 0.005 it "
              "tells nothing."),
            T("flat_iqr", 0.002, "A live D's loss jitters from batch to batch (IQR ≥ 0.0048 over 80 steps even "
              "when still near chance in the measured healthy runs); a frozen one varies by < 0.0002. This keeps "
              "a converged run, where D is at chance but alive, out of this signature."),
            T("update_max", 1e-5, "Adam moves each weight by about lr per step, so a learning D's "
              "update-to-weight ratio is ~1e-3–1e-2; 1e-5 is DeepDiagnosis's 'unchanged weights' in relative form."),
            T("loss_d_min", 0.5, "A D whose weights stopped moving because it has already won is d_overpowering."),
            T("clamp_loss", 100.0, "nn.BCELoss clamps log at −100: a term pinned at 100 means D's sigmoid output "
              "is exactly 0 or 1 on that side, where its gradient is zero."),
            T("window", 80, "Healthy D's stay near chance for up to ~80 steps from N(0, 0.02) init (measured); "
              "flatness over the same span separates them from stuck ones and keeps detection inside 100 steps."),
            T("hold_frac", 0.9, "Tolerates a stray point inside the window."),
        ),
        remedy_text="Give D a usable learning rate (DCGAN: 2e-4, at least G's) and an init that does not "
                    "saturate its sigmoid (N(0, 0.02)).",
        remedy_config={"lr_d": 2e-4, "init": "normal", "init_std": 0.02},
        sources=("dcgan", "deepdiagnosis", "goodfellow"),
        metrics=("loss/d", "pred/real", "pred/fake", "update/d/*", "loss/d_real", "loss/d_fake"),
    ),
    Signature(
        id="poor_init", title="Poor initialisation",
        meaning="The weights' spread at the start is far from what the config intends, or (normal init) far "
                "from DCGAN's N(0, 0.02): the seed write-up saw xavier and N(0, 0.2) fail where 0.02 worked.",
        rule="at the first logged step (within `first_steps`), the median over conv/linear layers of the weight "
             "std — weight/<net>/<layer> (an L2 norm) ÷ √(weights in the layer) — of G or D is more than `factor` × "
             "away from the config's init_std (init 'normal'), or from 0.02",
        severity="warning", persistence="none: judged once on the first steps' weights",
        thresholds=(
            T("factor", 4.0, "Batch statistics and the first Adam steps move the measured std by a few percent; "
              "a factor of 4 (0.08 or 0.005 against 0.02) is a different init, not noise."),
            T("reference_std", 0.02, "DCGAN's init: 'all weights initialized from a zero-centered Normal with "
              "standard deviation 0.02'."),
            T("first_steps", 5, "Only the weights of the first steps say what the init was."),
            T("max_update", 0.2, "A layer whose first update already changed its weights by over 20% (huge "
              "learning rates) no longer shows its init, so it is not judged."),
        ),
        remedy_text="Initialise conv/linear weights from N(0, 0.02) as DCGAN does.",
        remedy_config={"init": "normal", "init_std": 0.02},
        sources=("dcgan", "seeds"), metrics=("weight/g/*", "weight/d/*"),
    ),
    Signature(
        id="capacity_imbalance", title="Capacity imbalance",
        meaning="One net is starved of parameters: the weaker side cannot keep up and the game tips "
                "(a tiny G against a big D loses; a tiny D cannot guide G).",
        rule="G/D parameter ratio (model/params_g ÷ model/params_d, logged at step 0; else counted from the "
             "config's architecture) below `ratio_min` or above `ratio_max`",
        severity="warning", persistence="none: a fact of the config, judged at the start",
        thresholds=(
            T("ratio_min", 0.05, "The seed write-up reports a ratio around 0.5 working; a tenth of that "
              "starves G."),
            T("ratio_max", 20.0, "DCGAN at equal widths measures 1.3 at 64px but up to 10 at 16px, where G's "
              "first layer projecting z (nz = 100) dominates; twice that is a starved D, not the architecture."),
        ),
        remedy_text="Balance the nets: equal layer counts (the trainer's are by construction) and equal widths, "
                    "as DCGAN uses (ngf = ndf = 64).",
        remedy_config={"ngf": 64, "ndf": 64},
        sources=("seeds", "dcgan"), metrics=("model/params_g", "model/params_d"),
    ),
)

BY_ID = {s.id: s for s in SIGNATURES}
IDS = tuple(BY_ID)


def catalog() -> list[dict[str, Any]]:
    return [s.to_dict() for s in SIGNATURES]


def thresholds_for(sig_id: str, overrides: dict[str, dict[str, float]] | None) -> dict[str, float]:
    """Default thresholds of a signature with a job's `detectors` overrides applied (unknown names ignored)."""
    th = BY_ID[sig_id].defaults()
    for k, v in ((overrides or {}).get(sig_id) or {}).items():
        if k in th:
            th[k] = float(v)
    return th


def validate_overrides(overrides: dict[str, dict[str, float]]) -> list[str]:
    """Messages naming unknown signatures/thresholds in a job's `detectors` (for the jobs route's 422)."""
    errors = []
    for sig, th in overrides.items():
        if sig not in BY_ID:
            errors.append(f"unknown signature {sig!r}; known: {', '.join(IDS)}")
            continue
        known = BY_ID[sig].defaults()
        for k in th:
            if k not in known:
                errors.append(f"{sig}: unknown threshold {k!r}; known: {', '.join(known)}")
    return errors


def remedy_for(sig_id: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """The remedy of a signature tailored to a run's config: the changes that differ from what it ran with.

    The catalog's static remedy is the fallback; learning rates are scaled from the run's own values
    so a relaunch moves in the direction the literature gives, not to an absolute guess.
    """
    sig = BY_ID[sig_id]
    cfg = dict(config or {})
    lr_d = float(cfg.get("lr_d", 2e-4))
    lr_g = float(cfg.get("lr_g", 2e-4))
    change: dict[str, Any] = dict(sig.remedy_config)
    if sig_id == "d_overpowering":
        change["lr_d"] = min(lr_d / 2, 2e-4)
        change["label_smoothing"] = min(float(cfg.get("label_smoothing", 1.0)), 0.9)
        if cfg.get("init", "normal") == "normal" and float(cfg.get("init_std", 0.02)) != 0.02:
            change["init_std"] = 0.02
    elif sig_id in ("exploding_grad", "oscillation", "nonfinite"):
        change["lr_d"] = min(lr_d / 10, 2e-5)
        change["lr_g"] = min(lr_g / 10, 2e-5)
    elif sig_id == "mode_collapse":
        if lr_g > lr_d:
            change["lr_g"] = lr_d
        if int(cfg.get("g_steps", 1)) > 1:
            change["g_steps"] = 1  # G updated several times per D update settled on one mode in our runs
    elif sig_id == "d_not_learning":
        change["lr_d"] = max(lr_d, 2e-4)
        if lr_g > change["lr_d"]:
            change["lr_g"] = change["lr_d"]  # a G far faster than D kept it at chance in the measured runs
    elif sig_id == "capacity_imbalance":
        width = max(int(cfg.get("ngf", 64)), int(cfg.get("ndf", 64)))
        change = {"ngf": width, "ndf": width}
    differs = {k: v for k, v in change.items() if k not in cfg or cfg[k] != v}
    return {"text": sig.remedy_text, "config": differs or change, "sources": [SOURCES[s] for s in sig.sources]}
