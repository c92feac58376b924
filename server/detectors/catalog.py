"""The catalog of failure signatures: what each means, its rule, thresholds (with why), remedy, source.

This module is data plus small helpers. The rules live in rules*.py and read their thresholds from
here, merged with a job's `detectors` overrides; remedies.py tailors each signature's remedy to a
run. Sources are full references (sources.py); docs/signatures.md is generated from this module
(`python -m ganscope.server.detectors.docs`) and a test fails when it is stale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ganscope.server.detectors.sources import SOURCES

LN4 = 2 * math.log(2)  # summed BCE of a D at chance (D(x) = D(G(z)) = 0.5): 2·ln 2 ≈ 1.386

SEVERITY_RANK = {"healthy": 0, "warning": 1, "failing": 2}

# Mode counts of the toy sets, fixed by trainer/toy.py (the server may not import it: it imports torch).
TOY_MODES = {"ring8": 8, "grid25": 25, "gauss1d": 1, "bimodal1d": 2, "trimodal1d": 3}


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
    remedy_config: dict[str, Any]  # catalog default (the first line); alerts tailor it (remedies.remedy_for)
    sources: tuple[str, ...]
    metrics: tuple[str, ...] = field(default=())
    losses: str = "every loss"  # which losses the rule judges, in words

    def defaults(self) -> dict[str, float]:
        return {t.name: t.default for t in self.thresholds}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "title": self.title, "meaning": self.meaning, "rule": self.rule,
            "severity": self.severity, "persistence": self.persistence, "losses": self.losses,
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
                "minimax loss G's gradient vanishes; under the non-saturating loss it saturates; samples stop "
                "improving. What decides is whether G still learns: with quality measures logged, a dominant D "
                "while G's quality keeps improving (or G already fits the data) is a warning, not a failure.",
        rule="BCE losses: over the last `window` steps, at ≥ `hold_frac` of points, loss/d − floor < `loss_d_max` "
             "(loss/d on the summed scale — a mean-reduced loss is doubled; floor = the BCE entropy of the "
             "one-sided real target, 0 without smoothing) and D(G(z)) < `pred_fake_max`; a D saturated at float "
             "precision (a BCE term exactly 0, D(G(z)) exactly 0) counts as holding. Hinge: loss/d < `loss_d_max` "
             "with score/real − score/fake ≥ `score_gap_min`. Then, when a quality trend exists: improving (or a "
             "good fit) makes it a warning; stalled, regressing or unknown keeps it failing",
        severity="failing", persistence="the condition held at 90% of the points of a 50-step window",
        losses="BCE (nonsaturating, minimax) and hinge; silent under WGAN losses, whose critic is meant to be "
               "trained to optimality (Arjovsky et al. 2017; Gulrajani et al. 2017 train it 5 steps per G step)",
        thresholds=(
            T("loss_d_max", 0.05, "ganhacks §10: 'D loss → 0 is a failure mode'. At chance the summed BCE is 2·ln 2 ≈ "
              "1.39; healthy 16–32px DCGANs measured dip to 0.07 at single steps but never hold below 0.05, while "
              "the provoked runs hold at 1e-4–2e-2. Under the hinge loss 0.05 means both margins are met on all "
              "but a few samples: D no longer learns from them (BigGAN saw D's loss sink to 0 before collapse)."),
            T("pred_fake_max", 0.02, "D(G(z)) < 0.02 means D rejects fakes at 98% confidence: the classic picture "
              "of D(x)→1, D(G(z))→0. Healthy runs measured dip to 0.03 at single steps."),
            T("score_gap_min", 2.0, "Hinge only: real scores above +1 and fake ones below −1 put the mean scores "
              "at least 2 apart — both margins met, which is what a hinge loss of 0 means."),
            T("window", 50, "A transient dip is not a failure; 50 steps is one flush of the trainer and well "
              "inside the 100-step detection budget."),
            T("hold_frac", 0.9, "Tolerates a stray point inside the window (a lucky G batch) without missing a "
              "D that has won."),
        ),
        remedy_text="Slow D down relative to G and stop over-training it: one D step per G step, both learning "
                    "rates at DCGAN's 2e-4 (D's no faster than G's), one-sided label smoothing (real target 0.9). "
                    "If that is already the config: spectral normalisation in D, then R1 or DiffAugment.",
        remedy_config={"d_steps": 1, "lr_d": 1e-4, "label_smoothing": 0.9},
        sources=("ganhacks", "salimans", "dcgan", "sngan", "r1", "diffaugment"),
        metrics=("loss/d", "loss/d_real", "loss/d_fake", "pred/real", "pred/fake", "score/real", "score/fake"),
    ),
    Signature(
        id="vanishing_g_grad", title="Vanishing generator gradient",
        meaning="G no longer receives a learning signal from D: its first-layer gradient is flat at zero (dead "
                "ReLUs, a saturated tanh) or, under the minimax loss, scaled away by a D that rejects every fake.",
        rule="over the last `window` steps at ≥ `hold_frac` of points: G's first-layer gradient norm exactly 0; "
             "or, under the minimax loss, D(G(z)) on G's step below `signal_min`; or, after `warmup_steps`, G's "
             "first-layer norm below `drop_ratio` × its early level (median of the first `early_steps` steps), "
             "or AUTOTRAINER's test ‖g_first‖/‖g_last‖ < `ratio_max` with ‖g_first‖ < `abs_max`. The first layer "
             "is the first of the run's declared `layers`, else the trainer's architecture, else the natural "
             "order of the names",
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
        remedy_text="Initialise from N(0, 0.02), keep batch norm in both nets and use the non-saturating G loss, "
                    "which keeps G's gradient alive when D wins; a G whose ReLUs died needs leaky ReLUs and a "
                    "lower learning rate.",
        remedy_config={"init": "normal", "init_std": 0.02, "batch_norm": True, "loss": "nonsaturating"},
        sources=("dcgan", "goodfellow", "ioffe", "maas", "autotrainer"),
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
        remedy_text="Lower the learning rates ten-fold, keep batch norm on and Adam's beta1 at 0.5 (DCGAN), "
                    "re-initialise from N(0, 0.02); if that is the config already, bound D's Lipschitz constant "
                    "with spectral normalisation.",
        remedy_config={"lr_d": 2e-5, "lr_g": 2e-5, "batch_norm": True, "beta1": 0.5},
        sources=("ganhacks", "dcgan", "autotrainer", "sngan"), metrics=("grad/d/*", "grad/g/*"),
    ),
    Signature(
        id="mode_collapse", title="Mode collapse",
        meaning="G maps many z to few outputs. The losses can look ideal (D at chance): D is confused by a "
                "G that covers one mode well, so only the sample spread and mode coverage reveal it.",
        rule="after `warmup_steps`, at ≥ `hold_frac` of the points: sample/diversity (G's batch spread ÷ the real "
             "batch's) below `diversity_min` over the last `diversity_window` steps, unless it doubled over twice that "
             "span (`expanding_ratio`: still spreading out); or, where modes are counted "
             "(toy/modes on mixtures, quality/modes of quality/modes_total on `shapes`), over the last `window` "
             "steps G's samples cover at least one and at most `modes_frac` of the modes while they are "
             "concentrated — mostly good (toy/quality or quality/recognisable ≥ `quality_min`) or spread under "
             "`spread_concentrated` of the data's. Once open the alert stays open while coverage stays at most "
             "`modes_frac` (whatever the quality), or the spread stays under `exit_factor` × `diversity_min`",
        severity="failing", persistence="the condition held at 80% of the points of the last 50 steps (sample "
                                        "spread, at least five measurements) or 100 steps (coverage, at least "
                                        "two measurements); it closes only after as long without it",
        thresholds=(
            T("diversity_min", 0.01, "G's spread at 1% of the real batch's: all samples one point or one image. "
              "Collapsed toy runs measured 0–0.003; on 16px shapes a G without batch norm that D pulls ahead of "
              "settled at 0.001–0.006 (the corpus's shapes_collapse, 9 of 10 seeds). Healthy runs after warm-up: "
              "16px with batch norm ≥ 0.22, without ≥ 0.016 (8 of 9 runs); a healthy ring8 run contracted to "
              "0.005–0.07 for ~100 steps before spreading, yet below 0.01 at no more than 28% of any 50 steps."),
            T("modes_frac", 0.5, "Losing at least half the modes of a mixture is collapse however the losses look "
              "(bimodal on one mode, ring8 on four or fewer, 1 of 3 on trimodal)."),
            T("quality_min", 0.5, "Samples mostly good (within 3σ of a mode, or recognised) yet on few modes: they "
              "collapsed onto those. A G mostly off every mode with a wide spread has not found the modes — a bad "
              "fit, which quality_stalled reports — unless its spread is concentrated (below)."),
            T("spread_concentrated", 0.1, "Samples within a tenth of the data's spread are concentrated whatever "
              "their quality: a 1-D G at 1 of 3 modes with a spread of 0.012 measured only 10–40% good samples, "
              "and was collapsed. Healthy toy runs spread past 0.1 within ~100 steps of warm-up."),
            T("expanding_ratio", 2.0, "A spread that doubled over the last two spread windows is a G still "
              "spreading out of its near-constant init, not one collapsing: WGAN-GP with five critic steps per G "
              "step at lr 1e-4 grew its ring8 spread from 0.004 to 0.05 over steps 60–400, doubling every ~60 "
              "steps. Collapsing spreads fall or stay flat."),
            T("exit_factor", 3.0, "Hysteresis: an open spread alert closes only once the spread is back above 3× "
              "the line; a spread creeping from 0.009 to 0.012 has not recovered."),
            T("warmup_steps", 150, "Under N(0, 0.02) init G starts as a near-constant map (spread ~1e-4 of the "
                                   "data's) and healthy toy runs need up to ~130 steps to spread out."),
            T("diversity_window", 50, "Spread is measured on every probed batch: 50 steps are 50 measurements "
              "(sparse probing widens the window to five). An image collapse decays over ~100 steps: judged over "
              "50 steps with 50-step flushes, the alert came 43–86 steps after the spread crossed the line "
              "(shapes_collapse, 9 seeds)."),
            T("window", 100, "Coverage is measured every toy_every / eval_every steps on one batch and is noisy; "
              "100 steps (at least two measurements) is the detection budget. An alert closes once the rule stayed "
              "quiet as long."),
            T("hold_frac", 0.8, "Tolerates a lucky batch."),
        ),
        remedy_text="Add minibatch discrimination and feature matching (Salimans et al. 2016), the adversarial "
                    "term dominating early; don't let G's learning rate or step count outrun D's; keep batch norm "
                    "in G. If that is the config already: spectral normalisation in D, then a faster D (two "
                    "time-scale update rule).",
        remedy_config={"minibatch_disc": True, "fm_weight": 1.0, "fm_warmup_steps": 200},
        sources=("salimans", "ganhacks", "sngan", "ttur", "veegan"),
        metrics=("sample/diversity", "toy/modes", "toy/quality", "quality/modes", "quality/modes_total",
                 "quality/recognisable"),
    ),
    Signature(
        id="oscillation", title="Oscillating losses",
        meaning="D and G chase each other: the losses swing in large spikes and cycles instead of settling "
                "(ganhacks: a failing D loss 'has huge variance and spikes'). Mescheder et al. 2018 show plain "
                "simultaneous gradient steps circle around the equilibrium unless the step is small or D is "
                "regularised.",
        rule="over the last `window` steps (after `warmup_steps`): loss/d (on the summed scale) swings by more "
             "than `spread_min` nats between its 5th and 95th percentile, and more than `spike_frac` of its points "
             "spike over `spike_nats` above the local level (an 11-step rolling median, so a steady descent is "
             "no spike)",
        severity="warning", persistence="measured over a 200-step window",
        losses="BCE only: the thresholds are nats of a BCE loss; hinge and Wasserstein losses live on scales "
               "they were never measured on, so the rule is silent there",
        thresholds=(
            T("spread_min", 1.5, "Healthy runs' D loss measured swing by up to 1.4 nats, rarely 2 as ring8 nears "
              "its late instability; once unstable it swings by 2–5. G's loss is not judged: −log D(G(z)) magnifies "
              "D(G(z))'s ordinary jitter once D is ahead, and `make up`'s healthy demo run (32px) swung by 2.4 nats "
              "with 16% of its points spiking."),
            T("spike_nats", 0.5, "A spike is half a nat above the local level: far beyond batch-to-batch noise."),
            T("spike_frac", 0.04, "Spikes recur (over 4% of steps), not one bad batch; healthy runs measured ≤ 2.5%, "
              "oscillating ones 6–18%."),
            T("warmup_steps", 50, "D's first steps take its loss from 2·ln 2 down steeply; that is not oscillation."),
            T("window", 200, "Cycles take tens of steps; a window of 200 sees several of them. The rule waits "
              "until 80% of it is covered after warm-up, so spikes from step ~50 are flagged by ~250; judging on "
              "100 steps cut that to 95 but alarmed on a healthy 16px run at lr 1e-3, so the window stays."),
        ),
        remedy_text="Keep Adam's beta1 at 0.5 (DCGAN) and lower the learning rates; if that is the config already, "
                    "regularise D with R1 (Mescheder et al. 2018), which makes the iterates converge instead of "
                    "circling, and average G's weights (EMA).",
        remedy_config={"lr_g": 1e-4, "lr_d": 1e-4, "beta1": 0.5},
        sources=("ganhacks", "dcgan", "r1", "ema"), metrics=("loss/d",),
    ),
    Signature(
        id="d_not_learning", title="Discriminator not learning",
        meaning="D cannot tell real from fake while G does not match the data, or D is stuck: weights that do "
                "not move, a sigmoid pinned at BCE's clamp. G then trains against a critic that tells it nothing. "
                "D at chance is the goal once G matches the data: with a fit measure saying so, it is healthy.",
        rule="over the last `window` steps at ≥ `hold_frac` of points, one of: D at chance — BCE: loss/d (summed "
             "scale; both 2·ln 2 and ln 2 accepted when the reduction is unknown) within `chance_band` of chance "
             "and |D(x) − D(G(z))| < `pred_gap`; hinge: loss/d within `chance_band` of 2 with |score/real − "
             "score/fake| < `score_gap`; WGAN: |score/real − score/fake| < `score_gap` — judged only when the fit "
             "measures (toy/fit, toy/modes, toy/quality, quality/*) say G does NOT match the data (then with the "
             "wider `wide_band`, `wide_gap`, 5 × `score_gap` and no flatness needed) and their trend says G is not "
             "getting closer, or when no fit measure has a level and a trend yet (then the loss must also be flat: "
             "IQR < `flat_iqr`); never when the fit is good or fair, nor while a bad fit is improving. Or "
             "D's largest update-to-weight ratio < `update_max` (BCE and hinge: while loss/d > `loss_d_min`); or "
             "loss/d_real or loss/d_fake pinned at BCE's clamp (`clamp_loss`)",
        severity="failing", persistence="the condition held at 90% of the points of an 80-step window",
        thresholds=(
            T("chance_band", 0.01, "At chance the summed BCE is 2·ln 2; a D that learns leaves this band within "
              "~70 steps in every healthy run measured, a stuck one never does."),
            T("pred_gap", 0.005, "D(x) − D(G(z)) is the margin by which D tells real from fake; below 0.005 it "
              "tells nothing."),
            T("flat_iqr", 0.002, "A live D's loss jitters from batch to batch (IQR ≥ 0.0048 over 80 steps even "
              "when still near chance in the measured healthy runs); a frozen one varies by < 0.0002. Without a "
              "fit measure this keeps a converged run, where D is at chance but alive, out of this signature."),
            T("wide_band", 0.05, "With a fit measure saying G is off the data, a D hovering within 0.05 of chance "
              "is failing to separate bad fakes from real data, frozen or not (healthy toy D's measured leave "
              "chance by 0.2–0.6 nats once G's samples are off the data)."),
            T("wide_gap", 0.02, "D's probabilities for real and fake within 0.02 of each other: no usable margin."),
            T("score_gap", 0.02, "Hinge and WGAN: the critic's mean scores for real and fake within 0.02 — on the "
              "logit scale, where a probability gap of 0.005 near 0.5 is 0.02 — it ranks them alike."),
            T("update_max", 1e-5, "Adam moves each weight by about lr per step, so a learning D's "
              "update-to-weight ratio is ~1e-3–1e-2; 1e-5 is DeepDiagnosis's 'unchanged weights' in relative form."),
            T("loss_d_min", 0.5, "A D whose weights stopped moving because it has already won is d_overpowering."),
            T("clamp_loss", 100.0, "nn.BCELoss clamps log at −100: a term pinned at 100 means D's sigmoid output "
              "is exactly 0 or 1 on that side, where its gradient is zero."),
            T("window", 80, "Healthy D's stay near chance for up to ~80 steps from N(0, 0.02) init (measured); "
              "flatness over the same span separates them from stuck ones and keeps detection inside 100 steps."),
            T("hold_frac", 0.9, "Tolerates a stray point inside the window."),
        ),
        remedy_text="Depends on why D is stuck: a frozen D needs a usable learning rate (DCGAN's 2e-4, at least "
                    "G's); a D washed out by a huge rate needs it lowered; a D at chance against a G that is off "
                    "the data needs to learn faster than G (two time-scale update rule) or more often.",
        remedy_config={"lr_d": 2e-4, "init": "normal", "init_std": 0.02},
        sources=("dcgan", "ttur", "deepdiagnosis", "goodfellow"),
        metrics=("loss/d", "pred/real", "pred/fake", "score/real", "score/fake", "loss/gp", "update/d/*", "loss/d_real",
                 "loss/d_fake", "toy/fit", "toy/modes", "toy/quality", "quality/*"),
    ),
    Signature(
        id="poor_init", title="Poor initialisation",
        meaning="The weights' spread at the start is far from what the config intends, or (normal init) far "
                "from DCGAN's N(0, 0.02).",
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
        sources=("dcgan",), metrics=("weight/g/*", "weight/d/*"),
    ),
    Signature(
        id="capacity_imbalance", title="Capacity imbalance",
        meaning="One net is starved of parameters: the weaker side cannot keep up and the game tips "
                "(a tiny G against a big D loses; a tiny D cannot guide G).",
        rule="G/D parameter ratio (model/params_g ÷ model/params_d, logged at step 0; else counted from the "
             "config's architecture) below `ratio_min` or above `ratio_max`",
        severity="warning", persistence="none: a fact of the config, judged at the start",
        thresholds=(
            T("ratio_min", 0.05, "DCGAN's nets at equal widths measure a G/D ratio of 1.3 at 64px (and up to 10 "
              "at 16px); a twentieth is a G starved by construction — the corpus's ngf 1 against ndf 64 is 0.02."),
            T("ratio_max", 20.0, "DCGAN at equal widths measures 1.3 at 64px but up to 10 at 16px, where G's "
              "first layer projecting z (nz = 100) dominates; twice that is a starved D, not the architecture."),
        ),
        remedy_text="Balance the nets: equal layer counts (the trainer's are by construction) and equal widths, "
                    "as DCGAN uses (ngf = ndf = 64).",
        remedy_config={"ngf": 64, "ndf": 64},
        sources=("dcgan", "measured"), metrics=("model/params_g", "model/params_d"),
    ),
    Signature(
        id="quality_stalled", title="Quality stalled",
        meaning="G's samples stopped getting better short of a good fit, or got worse than they were, while no "
                "other signature explains it — the losses can look entirely normal. Losses say who is winning "
                "the game, not whether G matches the data; the fit and quality measures do.",
        rule="on the run's primary quality measure (first present: toy/fit, quality/kid, quality/fid, "
             "quality/coverage, quality/recall, quality/recognisable, quality/modes, toy/quality), evaluations after "
             "`warmup_steps`, at least `min_evals` of them: stalled — the Theil–Sen slope over the last "
             "`window_evals` evaluations (widened to span `stall_steps`, × `fair_factor` at a fair fit) gains less than "
             "`improve_ratio` (distances, as a ratio) or `improve_abs` (fractions), while the fit measures say bad or "
             "fair (flat at a good fit is convergence; flat with no absolute measure is not judged); or regressing — the level (median of "
             "the last three) is worse than the best level by more than `regress_ratio` / `regress_abs`. Both "
             "tolerances grow with the series' own noise (σ·√(12/k) for a gain, 3σ for a fall). Silent while nonfinite, exploding_grad, vanishing_g_grad, "
             "mode_collapse or d_overpowering is open: they explain the stall (d_overpowering says so in its own "
             "message); a D at chance (d_not_learning) does not, so both are reported",
        severity="warning", persistence="judged at each evaluation over the window; failing when the fit is bad",
        thresholds=(
            T("warmup_steps", 200, "A G fresh from its init matches nothing yet: evaluations before this step say "
              "nothing about learning (healthy toy runs here reach their first modes after 100–200 steps)."),
            T("min_evals", 5, "Evaluations are noisy: five are the fewest from which a slope and a level (median of "
              "three) are both robust to one wild evaluation, so a stall or a regression needs five; a clear "
              "improvement (a gain beyond the tolerance) needs only three."),
            T("window_evals", 5, "The trend is judged over the last five evaluations..."),
            T("stall_steps", 300, "...spanning at least 300 steps, so frequent evaluations (toy_every 20) do not "
              "call a pause of a few dozen steps a stall; healthy toy runs measured gain their modes within 200–300 "
              "steps of each other."),
            T("fair_factor", 3.0, "At a fair fit (between the good and bad lines) a stall must last three times "
              "`stall_steps` before it warns: small nets climb in plateaus — trimodal1d at DCGAN's defaults paused "
              "~250 steps at 2 of 3 modes before reaching all three and 0.95 quality."),
            T("improve_ratio", 0.1, "A distance (KID, FID, toy/fit) that fell by under 10% across the window has "
              "not improved: KID on a few hundred samples moves by about that between evaluations of one G."),
            T("improve_abs", 0.02, "A fraction (coverage, recall, recognisable, modes, toy quality) that rose by "
              "under 2 points has not improved; one mode of 25 is 4 points."),
            T("regress_ratio", 0.5, "A distance 50% worse than its best level (medians of three) is a real "
              "regression: toy/fit on a healthy trimodal1d run wandered between 0.23 and 0.35 (a 1.5× span) at one "
              "G quality; the noise-scaled tolerance takes over for noisier series. A level still past the good "
              "line is never a regression."),
            T("regress_abs", 0.15, "A fraction 15 points below its best level: G lost a sixth of the data it had. "
              "Toy quality on one batch of 128 varies by ~0.04 between evaluations of one G, and the best of a "
              "dozen levels sits high by itself: a hinge run on trimodal1d wobbling between 0.67 and 0.78 "
              "measured a 0.10 fall from its best."),
            T("losses_window", 100, "The losses shown as evidence (and whether D is ahead, which picks the remedy): "
              "their medians over the last 100 steps."),
            T("window", 100, "An alert closes once the rule stayed quiet this many steps (quality improving again)."),
        ),
        remedy_text="Depends on the losses: with D ahead (D(G(z)) low), let D see augmented data (DiffAugment) or "
                    "bound it (spectral normalisation) so it keeps giving G a useful signal; with calm losses, give "
                    "the nets capacity or D a faster time-scale; when quality fell back from its best, average G's "
                    "weights (EMA) and lower the learning rates — the best evaluation's checkpoint is the one to keep.",
        remedy_config={"lr_d": 4e-4, "lr_g": 1e-4},
        sources=("diffaugment", "ada", "sngan", "ttur", "ema", "biggan"),
        metrics=("toy/fit", "toy/modes", "toy/quality", "quality/kid", "quality/fid", "quality/coverage",
                 "quality/recall", "quality/precision", "quality/recognisable", "quality/modes"),
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


def remedy_for(sig_id: str, config: dict[str, Any] | None, evidence: dict[str, Any] | None = None,
               kind: str = "job") -> dict[str, Any]:
    """The remedy of a signature tailored to a run (remedies.py): kept here for the callers that import it."""
    from ganscope.server.detectors.remedies import tailor

    return tailor(sig_id, config, evidence, kind)
