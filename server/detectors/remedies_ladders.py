"""Each signature's ladder of remedies, computed from the run's own values (remedies.py applies them).

Rates are set to targets, never scaled blindly: a rung whose target the run already meets is in place,
so a relaunch that applied it escalates instead of halving a rate again. Every value proposed differs
from the run's (remedies.py drops the rest), and none is the value that caused the symptom: a D washed
out by a huge rate is told to lower it, a frozen one to raise it.
"""

from __future__ import annotations

from typing import Any

from ganscope.server.detectors.remedies import MISSING, Change, current

DCGAN_LR = 2e-4  # Radford et al.: Adam at 2e-4 for both nets
C = Change


def _f(cfg: dict[str, Any], knob: str, kind: str, default: float) -> float:
    v = current(cfg, knob, kind)
    try:
        return float(default if v is MISSING or v is None else v)
    except (TypeError, ValueError):
        return default


def _is_image(cfg: dict[str, Any]) -> bool:
    return str(cfg.get("dataset", "shapes")) not in ("ring8", "grid25", "gauss1d", "bimodal1d", "trimodal1d",
                                                     "poisson1d")


def _bce(cfg: dict[str, Any], kind: str) -> bool:
    loss = current(cfg, "loss", kind)
    return loss is MISSING or loss in ("nonsaturating", "minimax", "bce")


def _rates_for_d_ahead(lr_d: float, lr_g: float) -> list[Change]:
    """Bring a D that outruns G back to G's pace, and a starved G up to DCGAN's rate."""
    out: list[Change] = []
    new_g = lr_g
    if lr_g < DCGAN_LR / 2:
        new_g = DCGAN_LR
        out.append(C("lr_g", new_g, f"G's rate {lr_g:g} is too slow to answer D; DCGAN trains G at 2e-4",
                     "dcgan", "raise G's learning rate towards 2e-4"))
    elif lr_g > 5 * DCGAN_LR:  # shapes_saturated_tanh: lr 1.0 for both; D's alone brought down left G's at 1.0
        new_g = DCGAN_LR
        out.append(C("lr_g", new_g, f"G's rate {lr_g:g} overshoots every step, so G cannot answer D either; "
                     "DCGAN trains G at 2e-4", "dcgan", "lower G's learning rate to 2e-4"))
    if lr_d > new_g:
        new_d = min(new_g, DCGAN_LR) if lr_d > DCGAN_LR else new_g
        out.append(C("lr_d", new_d, f"D learned {lr_d / lr_g:.3g}× as fast as G; D no faster than G", "dcgan",
                     "make D's learning rate no higher than G's"))
    elif lr_d > DCGAN_LR:
        out.append(C("lr_d", DCGAN_LR, f"D's rate {lr_d:g} is above DCGAN's 2e-4", "dcgan",
                     "lower D's learning rate to 2e-4"))
    return out


def _d_overpowering(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    lr_d, lr_g = _f(cfg, "lr_d", kind, DCGAN_LR), _f(cfg, "lr_g", kind, DCGAN_LR)
    first = []
    d_steps = _f(cfg, "d_steps", kind, 1)
    if d_steps > 1:
        first.append(C("d_steps", 1, f"{d_steps:g} D steps per G step multiply D's lead", "ganhacks",
                       "train D once per G step"))
    first += _rates_for_d_ahead(lr_d, lr_g)
    init_std = _f(cfg, "init_std", kind, 0.02)
    if current(cfg, "init", kind) in ("normal", MISSING) and init_std > 0.05:
        first.append(C("init_std", 0.02, f"weights from N(0, {init_std:g}) saturate G's output from the first "
                       "step, and D wins against a saturated G at once", "dcgan",
                       "initialise weights from N(0, 0.02)"))
    if _bce(cfg, kind):
        first.append(C("label_smoothing", 0.9, "a one-sided real target of 0.9 keeps D from certainty", "salimans",
                       "use one-sided label smoothing: real target 0.9"))
    second = [C("spectral_norm", "d", "bounding D's Lipschitz constant keeps its gradients informative as it wins",
                "sngan", "add spectral normalisation to D's layers"),
              C("lr_d", lr_g / 2, "equal rates did not hold D back; D at half G's rate", "ttur",
                "set D's learning rate to half G's", only_without="spectral_norm")]
    third = [C("r1_gamma", 10.0, "penalising D's gradient on real data stops it from sharpening without bound", "r1",
               "add an R1 penalty (γ = 10) on D's gradient at real samples")]
    if _is_image(cfg):
        third.append(C("diffaugment", "color,translation,cutout", "D that memorises the training images "
                       "dominates; the same differentiable augmentation on real and fake stops that",
                       "diffaugment", "augment real and fake images alike before D (DiffAugment)"))
    fourth = [C("loss", "hinge", "the hinge loss with a spectrally normalised D is the SN-GAN/BigGAN recipe",
                "hinge", "switch to the hinge loss"),
              C("label_smoothing", 1.0, "a hinge loss has no BCE target to smooth", "hinge",
                "drop label smoothing with the hinge loss", requires="loss")] if _bce(cfg, kind) else []
    return [first, second, third, fourth]


def _vanishing(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    lr_d, lr_g = _f(cfg, "lr_d", kind, DCGAN_LR), _f(cfg, "lr_g", kind, DCGAN_LR)
    first = [C("init", "normal", "N(0, 0.02) keeps early activations out of saturation", "dcgan",
               "initialise weights from N(0, 0.02)"),
             C("init_std", 0.02, "DCGAN's init spread", "dcgan", "initialise weights from N(0, 0.02)"),
             C("batch_norm", True, "batch norm keeps each layer's input in range, so gradients flow", "ioffe",
               "use batch norm in both nets (not on G's output nor D's input)"),
             C("loss", "nonsaturating", "−log D(G(z)) keeps G's gradient alive when D rejects its samples",
               "goodfellow", "use the non-saturating G loss, −log D(G(z))")]
    obs = ev.get("observed") or {}
    dead = any(isinstance(o, dict) and o.get("min") == 0 and o.get("max") == 0 for o in obs.values())
    if dead or max(lr_g, lr_d) > 1e-3:
        first.append(C("g_act", "leaky_relu", "G's gradient is exactly zero: its ReLUs died; leaky ones cannot",
                       "maas", "use leaky ReLUs in G"))
    for knob, lr in (("lr_g", lr_g), ("lr_d", lr_d)):
        if lr > 1e-3:
            first.append(C(knob, DCGAN_LR, f"a rate of {lr:g} kills units in a few steps", "dcgan",
                           f"lower {'G' if knob == 'lr_g' else 'D'}'s learning rate to 2e-4"))
    second = [C("spectral_norm", "d", "a D bounded by spectral normalisation cannot saturate against G", "sngan",
                "add spectral normalisation to D"),
              C("lr_d", lr_g / 2, "D at half G's rate so it saturates more slowly", "ttur",
                "set D's learning rate to half G's", only_without="spectral_norm")]
    third = [C("loss", "hinge", "the hinge loss gives G a gradient of constant size whatever D says", "hinge",
               "switch to the hinge loss"),
             C("label_smoothing", 1.0, "a hinge loss has no BCE target to smooth", "hinge",
               "drop label smoothing with the hinge loss", requires="loss")] if _bce(cfg, kind) else []
    return [first, second, third]


def _instability(cfg: dict[str, Any], ev: dict[str, Any], kind: str, nonfinite: bool) -> list[list[Change]]:
    lr_d, lr_g = _f(cfg, "lr_d", kind, DCGAN_LR), _f(cfg, "lr_g", kind, DCGAN_LR)
    first = []
    for knob, lr in (("lr_d", lr_d), ("lr_g", lr_g)):
        if lr > 2e-5:
            first.append(C(knob, min(lr / 10, 2e-5), f"a tenth of {lr:g} (at most 2e-5) keeps updates small "
                           "while the norms settle", "ganhacks", "lower both learning rates ten-fold"))
    first.append(C("beta1", 0.5, "Adam's beta1 0.5 as in DCGAN: less momentum to overshoot with", "dcgan",
                   "set Adam's beta1 to 0.5"))
    first.append(C("batch_norm", True, "batch norm keeps activations and gradients in range", "ioffe",
                   "use batch norm in both nets"))
    if _f(cfg, "init_std", kind, 0.02) > 0.05:
        first.append(C("init_std", 0.02, "the init's spread drives the first gradients' size", "dcgan",
                       "initialise weights from N(0, 0.02)"))
    if nonfinite:
        first.append(C("amp", False, "bf16 overflows first; diagnose in full precision", "deepdiagnosis",
                       "train in full precision while diagnosing"))
    second = [C("spectral_norm", "both", "spectral normalisation bounds each layer's gain, and so the gradient "
                "norms", "sngan", "add spectral normalisation to both nets")]
    third = [C("r1_gamma", 10.0, "an R1 penalty keeps D's gradients from growing on real data", "r1",
               "add an R1 penalty (γ = 10) to D's loss")]
    return [first, second, third]


def _oscillation(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    lr_d, lr_g = _f(cfg, "lr_d", kind, DCGAN_LR), _f(cfg, "lr_g", kind, DCGAN_LR)
    first = []
    if _f(cfg, "beta1", kind, 0.5) > 0.5:
        first.append(C("beta1", 0.5, "momentum 0.9 carries each player past the equilibrium; DCGAN found 0.5 "
                       "needed for stability", "dcgan", "set Adam's beta1 to 0.5"))
    for knob, lr in (("lr_d", lr_d), ("lr_g", lr_g)):
        if lr > 1e-4:
            first.append(C(knob, 1e-4, "smaller simultaneous steps spiral into the equilibrium instead of around "
                           "it", "r1", "lower both learning rates to 1e-4"))
    second = [C("r1_gamma", 10.0, "R1 makes the game locally convergent where plain steps circle", "r1",
                "add an R1 penalty (γ = 10) on D's gradient at real samples"),
              C("lr_d", min(lr_d, lr_g) / 5, "without R1 in this trainer: far smaller steps", "r1",
                "lower both learning rates five-fold", only_without="r1_gamma"),
              C("lr_g", min(lr_d, lr_g) / 5, "without R1 in this trainer: far smaller steps", "r1",
                "lower both learning rates five-fold", only_without="r1_gamma")]
    decay, over = _ema_decay(cfg, kind)
    third = [C("ema_g", decay, f"an average of G's oscillating iterates ({over}) sits nearer the equilibrium "
               "than any one",
               "ema", "keep an exponential moving average of G's weights (decay 0.999) and sample from it")]
    return [first, second, third]


def _collapse_causes(cfg: dict[str, Any], kind: str, lr_d: float, lr_g: float) -> list[Change]:
    """What in the config drove G onto one mode, undone first: minibatch discrimination and feature matching
    on top of a D already far ahead made D win outright in bench/remedy.py (grid25_g_stuck, shapes_collapse).

    The image collapse measured here (tests/scenarios.py's shapes_collapse): G without batch norm, slower
    than D, contracts to one image once D pulls ahead. A toy G starved by D's config (grid25_g_stuck: lr_d
    200× lr_g, 3 D steps) never leaves the mode it starts on."""
    out: list[Change] = []
    d_steps = _f(cfg, "d_steps", kind, 1)
    if d_steps > 1:
        out.append(C("d_steps", 1, f"{d_steps:g} D steps per G step keep D so far ahead that G cannot leave the "
                     "mode it found", "ganhacks", "train D once per G step"))
    if not _is_image(cfg):
        return out + (_rates_for_d_ahead(lr_d, lr_g) if lr_g * 4 <= lr_d else [])
    bn = current(cfg, "batch_norm", kind)
    if bn is not MISSING and not bn:
        out.append(C("batch_norm", True, "without batch norm a G that D pulled ahead of contracted to one image "
                     "here; with it G's output keeps depending on z", "measured", "use batch norm in G"))
    if lr_g < lr_d:
        out.append(C("lr_g", lr_d, f"G at {lr_g / lr_d:.2g}× D's rate fell behind and contracted to what fooled "
                     "D; G at D's rate kept its spread here (0.93 of the data's against 0.005)", "measured",
                     "give G the same learning rate as D"))
    return out


def _mode_collapse(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    lr_d, lr_g = _f(cfg, "lr_d", kind, DCGAN_LR), _f(cfg, "lr_g", kind, DCGAN_LR)
    causes = _collapse_causes(cfg, kind, lr_d, lr_g)
    first = [C("minibatch_disc", True, "D sees statistics across the batch, so a batch of near-identical fakes "
               "gives itself away", "salimans", "add a minibatch discrimination layer to D")]
    if _f(cfg, "fm_weight", kind, 0.0) == 0:
        first += [C("fm_weight", 1.0, "feature matching pulls G's batch statistics towards the data's", "salimans",
                    "add feature matching to G's loss"),
                  C("fm_warmup_steps", 200, "the adversarial term dominates early, as Salimans et al. advise",
                    "salimans", "ramp feature matching in over the first steps")]
    if _f(cfg, "g_steps", kind, 1) > 1:
        first.append(C("g_steps", 1, "several G steps per D step let G settle on what fools the current D",
                       "ganhacks", "train G once per D step"))
    if lr_g > lr_d:
        first.append(C("lr_g", lr_d, "G learned faster than D could follow", "ttur", "make G's rate no higher "
                       "than D's"))
    second = [C("spectral_norm", "d", "a spectrally normalised D gives G gradients that spread its samples",
                "sngan", "add spectral normalisation to D"),
              C("lr_d", min(2 * lr_d, 4e-4), "a faster D punishes the modes G piles onto", "ttur",
                "give D a faster learning rate than G", only_without="spectral_norm")]
    third = [C("lr_d", min(4 * lr_g, 4e-4), "two time-scales: D at up to four times G's rate", "ttur",
               "give D a learning rate up to four times G's")]
    # the causes rung stays when empty (in place), so a relaunch's rung numbers stay those of its parent
    return [causes, first, second, third]


def _d_not_learning(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    lr_d, lr_g = _f(cfg, "lr_d", kind, DCGAN_LR), _f(cfg, "lr_g", kind, DCGAN_LR)
    cause = str(ev.get("cause", "chance"))
    first: list[Change] = []
    if cause == "frozen" or lr_d < 1e-4:
        first.append(C("lr_d", max(DCGAN_LR, lr_g), f"D's rate {lr_d:g} barely moves its weights", "dcgan",
                       "raise D's learning rate to 2e-4, at least G's"))
    elif cause.startswith("clamp"):
        first += [C("init", "normal", "a saturated sigmoid at init never recovers", "dcgan",
                    "initialise weights from N(0, 0.02)"),
                  C("init_std", 0.02, "DCGAN's init spread", "dcgan", "initialise weights from N(0, 0.02)")]
        if lr_d > DCGAN_LR:
            first.append(C("lr_d", DCGAN_LR, f"a rate of {lr_d:g} drives D's sigmoid into its clamp", "dcgan",
                           "lower D's learning rate to 2e-4"))
    elif lr_d > 1e-3:
        first.append(C("lr_d", DCGAN_LR, f"at {lr_d:g} Adam's steps wash out what D learns each batch", "dcgan",
                       "lower D's learning rate to 2e-4"))
        if lr_g > 1e-3:
            first.append(C("lr_g", DCGAN_LR, f"G's {lr_g:g} is as far off", "dcgan", "lower G's learning rate to 2e-4"))
    elif lr_g > lr_d or _f(cfg, "g_steps", kind, 1) > 1:
        g_steps = _f(cfg, "g_steps", kind, 1)
        if g_steps > 1:
            first.append(C("g_steps", 1, f"{g_steps:g} G steps per D step: G moves on before D has learned "
                           "what separates its samples", "ganhacks", "train G once per D step"))
        if lr_g > lr_d:
            first.append(C("lr_g", lr_d, f"G ran {lr_g / lr_d:.3g}× faster than D, which never caught up", "ttur",
                           "make G's learning rate no higher than D's"))
            if lr_d < DCGAN_LR:  # G at D's slow rate alone left D at chance here (ring8_d_at_chance)
                first.append(C("lr_d", min(2 * lr_d, 4e-4), "and D on the faster time-scale, twice G's new rate",
                               "ttur", "give D a faster learning rate than G (two time-scales)"))
    else:
        first.append(C("lr_d", min(2 * lr_g, 4e-4), "a D on a faster time-scale than G can track it", "ttur",
                       "give D a faster learning rate than G (two time-scales)"))
    readings = (ev.get("fit") or {}).get("readings") or {}
    few_modes = any((readings.get(n) or {}).get("state") == "bad" for n in ("toy/modes", "quality/modes"))
    look_real = any((readings.get(n) or {}).get("state") in ("good", "fair")
                    for n in ("toy/quality", "quality/precision", "quality/recognisable"))
    if cause == "chance" and few_modes and look_real:
        # bimodal_collapse_calm_d: G's pace fixed alone, G stayed on one of two modes and D at chance
        first += [C("minibatch_disc", True, "G's samples sit on few modes, each one like the data: one sample at "
                    "a time D cannot tell them apart, which is why it sits at chance; statistics across the "
                    "batch show it has no spread", "salimans", "add a minibatch discrimination layer to D"),
                  C("fm_weight", 1.0, "feature matching pulls G's batch statistics towards the data's", "salimans",
                    "add feature matching to G's loss"),
                  C("fm_warmup_steps", 200, "the adversarial term dominates early", "salimans",
                    "ramp feature matching in over the first steps", requires="fm_weight")]
    second = [C("d_steps", 2, "two D steps per G step, as critics are trained more often", "wgangp",
                "train D twice per G step")]
    if _is_image(cfg):
        ndf = _f(cfg, "ndf", kind, 64)
        third = [C("ndf", int(min(2 * ndf, 128)), "a wider D can represent what separates G's samples from the data",
                   "dcgan", "make D wider")]
    else:
        h = _f(cfg, "toy_hidden", kind, 128)
        third = [C("toy_hidden", int(min(2 * h, 512)), "wider MLPs can separate G's samples from the data",
                   "measured", "make both nets wider")]
    return [first, second, third]


def _ema_decay(cfg: dict[str, Any], kind: str) -> tuple[float, str]:
    """An EMA horizon of a tenth of the run (at most 1,000 steps, Karras et al.'s 0.999): the average starts
    as G's init, so 0.999 on a 600-step run samples from weights still half the init (measured: toy/quality
    0 where the last iterate had 0.48)."""
    steps = _f(cfg, "steps", kind, 10_000)
    horizon = max(10, min(1000, round(steps / 10)))
    return round(1 - 1 / horizon, 4), f"an average over the last ~{horizon} of the run's {steps:g} steps"


def _wider(cfg: dict[str, Any], kind: str) -> list[Change]:
    """More capacity where the nets are narrower than the ones that fit here."""
    if _is_image(cfg):
        ngf, ndf = _f(cfg, "ngf", kind, 64), _f(cfg, "ndf", kind, 64)
        rung = [C("ngf", int(min(2 * ngf, 128)), "more capacity for G", "dcgan", "make G wider")] if ngf < 64 else []
        return rung + ([C("ndf", int(min(2 * ndf, 128)), "and for D", "dcgan", "make D wider")] if ndf < 64 else [])
    h = _f(cfg, "toy_hidden", kind, 128)
    rung = [C("toy_hidden", int(min(4 * h, 256)), f"MLPs of {h:g} units stalled short of the modes here (16 units "
              "on gauss1d: 0.15 at the end; 64 units and batch 128: 0.995)", "measured",
              "make both nets wider")] if h < 128 else []
    if _f(cfg, "batch_size", kind, 128) < 128:
        rung.append(C("batch_size", 128, "a larger batch shows D more of the modes per step", "measured",
                      "use a larger batch"))
    return rung


def _quality_stalled(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    lr_d, lr_g = _f(cfg, "lr_d", kind, DCGAN_LR), _f(cfg, "lr_g", kind, DCGAN_LR)
    ahead = bool((ev.get("losses") or {}).get("d_ahead"))
    # Five rungs whatever the config and evidence (an empty one is skipped), so a level recorded in
    # remedy_of names the same rung when the relaunch's config recomputes the ladder.
    rungs: list[list[Change]] = []
    wider = _wider(cfg, kind)
    narrow = not _is_image(cfg) and _f(cfg, "toy_hidden", kind, 128) < 64
    # MLPs this narrow lack the capacity, whatever the trend says: a regressing 16-unit run given an EMA
    # and halved rates ended at 0.09 (bench/remedy.py); wider, it fit
    rungs.append(wider if narrow else [])
    if ev.get("verdict") != "regressing":
        rungs.append([])
    else:
        decay, over = _ema_decay(cfg, kind)
        rungs.append([C("ema_g", decay, f"sampling from {over} of G's weights keeps the quality it had",
                        "ema", "keep an exponential moving average of G's weights and sample from it"),
                      C("lr_g", lr_g / 2, "half the step for G, which has been moving away from its best", "ttur",
                        "halve G's learning rate"),
                      C("lr_d", lr_d / 2, "and for D", "ttur", "halve D's learning rate")])
    if ahead:
        rung = [C("spectral_norm", "d", "D is ahead (D(G(z)) low): bounding it keeps its signal to G useful",
                  "sngan", "add spectral normalisation to D")]
        if _is_image(cfg):
            rung.insert(0, C("diffaugment", "color,translation,cutout", "D is ahead: augmenting what it sees "
                             "keeps it from memorising the training set", "diffaugment",
                             "augment real and fake images alike before D (DiffAugment)"))
        rung.append(C("lr_d", lr_g / 2, "D is ahead: D at half G's rate", "ttur", "set D's rate to half G's",
                      only_without="spectral_norm"))
        rungs += [rung, []]
    else:
        rungs.append(wider or [])
        rungs.append([C("lr_d", 4e-4, "two time-scales: D at 4e-4", "ttur", "give D a faster rate than G (4e-4 "
                        "against 1e-4)"),
                      C("lr_g", 1e-4, "and G at 1e-4", "ttur", "give G the slower rate (1e-4)")])
    decay, over = _ema_decay(cfg, kind)
    rungs.append([C("ema_g", decay, f"the averaged G ({over}) is usually better than the last iterate", "ema",
                    "keep an exponential moving average of G's weights")])
    return rungs


def _poor_init(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    return [[C("init", "normal", "DCGAN's init", "dcgan", "initialise weights from N(0, 0.02)"),
             C("init_std", 0.02, "DCGAN's init spread", "dcgan", "initialise weights from N(0, 0.02)")]]


def _capacity(cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    ngf, ndf = _f(cfg, "ngf", kind, 64), _f(cfg, "ndf", kind, 64)
    width = int(max(ngf, ndf))
    return [[C("ngf", width, "equal widths, as DCGAN uses", "dcgan", "give G and D the same width"),
             C("ndf", width, "equal widths, as DCGAN uses", "dcgan", "give G and D the same width")]]


def ladder(sig_id: str, cfg: dict[str, Any], ev: dict[str, Any], kind: str) -> list[list[Change]]:
    """The rungs of a signature's remedy for this run, first line first."""
    if sig_id == "d_overpowering":
        return _d_overpowering(cfg, ev, kind)
    if sig_id == "vanishing_g_grad":
        return _vanishing(cfg, ev, kind)
    if sig_id in ("exploding_grad", "nonfinite"):
        return _instability(cfg, ev, kind, sig_id == "nonfinite")
    if sig_id == "oscillation":
        return _oscillation(cfg, ev, kind)
    if sig_id == "mode_collapse":
        return _mode_collapse(cfg, ev, kind)
    if sig_id == "d_not_learning":
        return _d_not_learning(cfg, ev, kind)
    if sig_id == "quality_stalled":
        return _quality_stalled(cfg, ev, kind)
    if sig_id == "poor_init":
        return _poor_init(cfg, ev, kind)
    return _capacity(cfg, ev, kind)
