"""Detector benchmark: recall, false alarms and detection delay over a labelled corpus of real runs.

The corpus is tests/scenarios.py's QUICK set run over several seeds, plus longer and extra
recipes on both architectures (toy MLPs and 16–32px DCGANs on `shapes`). Every run trains
in-process; each metrics flush is judged by the detector engine exactly as ingest would.

Prints per signature: recall (provoked runs flagged with that id), the median / max delay from
the symptom's onset in the raw metrics to the alert; then false alarms on healthy runs, the
detectors' cost (what the detectors add to the server's ingest: `python -m bench.ingest`).
Image runs (`shapes`) evaluate their samples every EVAL_EVERY steps (trainer/quality): each prints its
quality curve's start and end (KID, recognisable, classes covered), and a healthy image run must be one
whose quality measurably improves (see `improved`) — its label is checked, not assumed.
Last line: `recall <r> false_alarms <n> delay_p95 <steps>`.

Usage: python -m bench.detect [--seeds 0,1] [--quick-only] [--max-minutes M]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ganscope.up import DEMO_JOB  # noqa: E402
from ganscope.trainer.config import JobConfig  # noqa: E402
from tests.scenarios import D_WINS, IMG, QUICK, TOY, Outcome, Scenario, collapsed, g_grad_gone, grad_over_100  # noqa: E402
from tests.scenarios import fit_stalled, healthy, loss_spikes, run, start  # noqa: E402
from tests.scenarios import Metrics  # noqa: E402


def quality_fell(m: Metrics) -> int | None:
    """Past step 200: the first evaluation whose toy/quality level (median of three) is 0.15 below the best
    level before it — G lost a sixth of the samples it had placed on the modes."""
    s, q = m["toy/quality"]
    lv = np.array([np.median(q[max(0, i - 2):i + 1]) for i in range(q.size)])
    for i in range(q.size):
        if s[i] >= 200 and i > 2 and lv[i] < lv[:i][s[:i] >= 200].max(initial=-1.0) - 0.15:
            return int(s[i])
    return None


def fit_lost(m: Metrics) -> int | None:
    """After G fit the data (toy/fit under 0.5 standard deviations), the first evaluation at which it is a
    whole standard deviation off again (toy/fit ≥ 1.0, the trainer's documented bad line)."""
    s, f = m["toy/fit"]
    fitted = np.flatnonzero(f < 0.5)
    if fitted.size == 0:
        return None
    later = np.flatnonzero((np.arange(f.size) > fitted[0]) & (f >= 1.0))
    return int(s[later[0]]) if later.size else None


def hinge_d_wins(m: Metrics) -> int | None:
    s, ld = m["loss/d"]
    idx = np.flatnonzero(ld < 0.05)
    return int(s[idx[0]]) if idx.size else None


def supports(**knobs: object) -> bool:
    """Does this trainer's JobConfig take these knobs (the stabilisers land on another branch)?"""
    try:
        JobConfig(**knobs)
        return True
    except Exception:  # noqa: BLE001 - pydantic's ValidationError: the knob or value is unknown here
        return False

# Longer runs and recipes beyond the quick corpus (each measured; see tests/scenarios.py for the rest).
EXTRA: tuple[Scenario, ...] = (
    Scenario("ring8_h64_no_fit", {**TOY, "dataset": "ring8", "toy_hidden": 64, "steps": 800}, ("quality_stalled",),
             fit_stalled, "wider MLPs, still no sample within 3σ of a mode (labelled healthy before fit measures)"),
    Scenario("ring8_fast_lr_no_fit", {**TOY, "dataset": "ring8", "lr_d": 2e-3, "lr_g": 2e-3, "steps": 600},
             ("quality_stalled",), fit_stalled, "lr 2e-3 both: no fit either"),
    Scenario("gauss1d_spreading", {**TOY, "dataset": "gauss1d", "toy_hidden": 16, "steps": 600}, ("quality_stalled",),
             quality_fell, "16-unit MLPs: G reaches half its samples within 3σ by step ~360, then spreads to 7× "
                           "the data's width and falls to 0.15 (labelled healthy before fit measures)"),
    Scenario("grid25_no_fit", {**TOY, "dataset": "grid25", "steps": 2000}, ("quality_stalled",), fit_stalled,
             "the quick corpus's grid25 run left longer: stalls at 1–3 of 25 modes, then loses them (toy/quality "
             "0.47 at best, 0 by step ~1,600 over 2,500 steps)"),
    Scenario("gauss1d_default", {"dataset": "gauss1d", "steps": 1500, "toy_every": 50}, ("quality_stalled",),
             fit_lost, "DCGAN defaults on one Gaussian: fits by step ~300 (toy/fit 0.39) with D at chance, then "
             "G narrows and drifts: toy/fit 0.4–1.2 from step ~750, past 1.0 by ~900 — while 0.95–1.0 of its "
             "samples stay within 3σ (toy/quality, which labelled it healthy before toy/fit existed)"),
    healthy("trimodal_default", {"dataset": "trimodal1d", "steps": 1500, "toy_every": 50},
            "DCGAN defaults on three Gaussians: all three modes from step ~100, quality 0.4 → 0.95 in plateaus"),
    healthy("shapes_w16", {**IMG, "ngf": 16, "ndf": 16, "steps": 300}, "wider DCGAN"),
    healthy("shapes_32px", {**IMG, "image_size": 32, "steps": 200}, "32px DCGAN"),
    healthy("shapes_smooth", {**IMG, "label_smoothing": 0.9, "steps": 300}, "one-sided label smoothing 0.9"),
    healthy("shapes_fast_lr", {**IMG, "lr_d": 2e-3, "lr_g": 2e-3, "steps": 300}, "lr 2e-3 both"),
    healthy("shapes_demo", {**{k: v for k, v in DEMO_JOB.items() if k not in ("name", "device")},
                            "steps": 1500, "sample_every": 10_000, "checkpoint_every": 100_000},
            "`make up`'s demo job, 32px: D pulls ahead slowly, diverse samples; G's loss swings by 2.4 nats"),
    Scenario("ring8_late_instability", {**TOY, "dataset": "ring8", "steps": 1500}, ("oscillation",), loss_spikes,
             "DCGAN defaults on the ring: stable for ~1000 steps, then D's loss spikes by nats — the seed "
             "write-up's late instability"),
    Scenario("shapes_init_1_long", {**IMG, "init_std": 1.0, "steps": 300}, ("poor_init", "oscillation"), start,
             "N(0, 1) with batch norm: D's loss swings between 1 and 10", (("oscillation", loss_spikes),)),
    Scenario("ring8_minimax_d_wins", {**TOY, "dataset": "ring8", **D_WINS, "lr_g": 2e-4, "loss": "minimax",
                                      "steps": 150}, ("vanishing_g_grad", "d_overpowering"), g_grad_gone,
             "minimax loss against a winning D"),
    Scenario("ring8_dead_g", {**TOY, "dataset": "ring8", "lr_d": 1.0, "lr_g": 1.0, "steps": 200},
             ("vanishing_g_grad", "exploding_grad"), g_grad_gone,
             "lr 1.0: G's ReLUs die (first-layer gradient exactly 0) while D's gradients explode"),
    Scenario("shapes_saturated_tanh", {**IMG, "image_size": 32, "batch_norm": False, "init_std": 10.0,
                                       "lr_d": 1.0, "lr_g": 1.0, "steps": 100},
             ("vanishing_g_grad", "poor_init"), g_grad_gone,
             "no batch norm and N(0, 10): G's tanh saturates, no gradient reaches G"),
    Scenario("shapes_nobn_init_1", {**IMG, "batch_norm": False, "init_std": 1.0, "steps": 80},
             ("exploding_grad", "poor_init"), grad_over_100, "no batch norm and N(0, 1): G's norms in the 1e3s"),
    Scenario("grid25_g_stuck", {**TOY, "dataset": "grid25", **D_WINS, "steps": 350}, ("mode_collapse",),
             collapsed(25), "D wins on the grid: G never leaves the central mode (1 of 25, quality 1.0)"),
    Scenario("shapes_collapse_nz100", {**IMG, "batch_norm": False, "lr_g": 1e-4, "steps": 450}, ("mode_collapse",),
             collapsed(None), "DCGAN's G (ReLU, nz 100) without batch norm at half D's lr: the same contraction "
             "from step ~230–280, to 0.004–0.007 of the real batch's spread (it spread again after ~500 steps in 2 of "
             "3 seeds)"),
    Scenario("ring8_frozen_d", {**TOY, "dataset": "ring8", "lr_d": 1e-7, "steps": 120}, ("d_not_learning",), start,
             "lr_d 1e-7"),
    Scenario("shapes_tiny_d", {**IMG, "ngf": 32, "ndf": 2, "steps": 60}, ("capacity_imbalance",), start,
             "D with ndf 2 (299 parameters) against G with ngf 32"),
)


# Recipes for the stabilised losses, included once this trainer takes the knobs. Written before they were
# measured here (the stabilisers landed on another branch): re-measure them before trusting their labels.
PENDING: tuple[Scenario, ...] = tuple(
    ([healthy("trimodal_hinge", {"dataset": "trimodal1d", "loss": "hinge", "steps": 1000, "toy_every": 50},
              "hinge loss on three Gaussians: healthy scores never read as probabilities"),
      Scenario("shapes_hinge_d_wins", {**IMG, **D_WINS, "loss": "hinge", "steps": 200}, ("d_overpowering",),
               hinge_d_wins, "the D_WINS recipe under the hinge loss: D meets both margins on every sample")]
     if supports(loss="hinge") else [])
    + ([Scenario("trimodal_wgan_gp_collapse", {"dataset": "trimodal1d", "loss": "wgan_gp", "d_steps": 5,
                                                "lr_d": 1e-4, "lr_g": 1e-4, "beta1": 0.0, "beta2": 0.9, "steps": 800,
                                                "toy_every": 50}, ("mode_collapse",), collapsed(3),
                 "WGAN-GP with Gulrajani et al.'s optimiser settings (seed 0, measured on the stabilisers' "
                 "trainer): quality 0.87 at step 200, 0 by 350, then G settles on one of the three modes "
                 "(quality 1.0, spread 0.013) from step ~650 — while the critic's loss sits on no BCE scale"),
        Scenario("ring8_wgan_gp_frozen_critic", {**TOY, "dataset": "ring8", "loss": "wgan_gp", "lr_d": 1e-7,
                                                 "steps": 150}, ("d_not_learning",), start,
                 "lr_d 1e-7 under WGAN-GP: the critic's Wasserstein estimate stays at 0")]
       if supports(loss="wgan_gp") else []))


EVAL_EVERY = 50  # image runs here last 60–1500 steps: several evaluations each
EVAL_SAMPLES = 128
IMPROVES = 0.8  # a healthy image run ends at a KID at most this fraction of its first evaluation's


def with_eval(sc: Scenario) -> Scenario:
    """Image runs measure their samples (the ground truth the labels are checked against)."""
    if sc.config.get("dataset") != "shapes":
        return sc
    return dataclasses.replace(sc, config={**sc.config, "eval_every": EVAL_EVERY, "eval_samples": EVAL_SAMPLES})


def corpus(seeds: list[int], quick_only: bool) -> list[tuple[Scenario, int]]:
    jobs = [(sc, s) for s in seeds for sc in QUICK]
    if not quick_only:
        jobs += [(sc, seeds[0]) for sc in EXTRA + PENDING]
    return [(with_eval(sc), s) for sc, s in jobs]


def quality_curve(o: Outcome) -> str | None:
    """An image run's quality at its first and last evaluation, or None for a toy run / no evaluation."""
    kid = o.metrics.get("quality/kid")
    if kid is None or kid[0].size == 0:
        return None
    parts = [f"KID {kid[1][0]:.3g}→{kid[1][-1]:.3g} (steps {kid[0][0]}→{kid[0][-1]})"]
    rec = o.metrics.get("quality/recognisable")
    if rec is not None and rec[0].size:
        parts.append(f"recognisable {rec[1][0]:.2f}→{rec[1][-1]:.2f}")
    modes, total = o.metrics.get("quality/modes"), o.metrics.get("quality/modes_total")
    if modes is not None and total is not None and modes[0].size:
        parts.append(f"classes {modes[1][0]:.0f}→{modes[1][-1]:.0f}/{total[1][-1]:.0f}")
    return ", ".join(parts)


def improved(o: Outcome) -> bool | None:
    """Did the image run's quality improve? On `shapes` the reference classifier says: recognisable up by 0.1
    or two more attribute classes covered (the last two evaluations against the first); elsewhere KID at
    its end ≤ IMPROVES × its first (the offline extractor's KID moves little on shapes: 16 → 14 while
    recognisable went 0 → 0.62). None without two evaluations."""
    kid = o.metrics.get("quality/kid")
    if kid is None or kid[0].size < 2:
        return None
    rec, modes = o.metrics.get("quality/recognisable"), o.metrics.get("quality/modes")
    if rec is not None and modes is not None and rec[0].size >= 2:
        return bool(np.median(rec[1][-2:]) >= rec[1][0] + 0.1 or np.median(modes[1][-2:]) >= modes[1][0] + 2)
    return bool(float(np.median(kid[1][-2:])) <= IMPROVES * float(kid[1][0]))


def report(outcomes: list[Outcome]) -> tuple[float, int, float]:
    flagged: dict[str, list[bool]] = defaultdict(list)
    delays: dict[str, list[int]] = defaultdict(list)
    not_provoked: list[str] = []
    missed: list[str] = []
    for o in outcomes:
        tag = f"{o.scenario.name}/seed{o.seed}"
        for sig in o.scenario.expect:
            if o.onsets.get(sig) is None and sig not in o.fired:
                not_provoked.append(f"{tag}:{sig}")  # the recipe did not produce the symptom this time
                continue
            ok = sig in o.fired
            flagged[sig].append(ok)
            if ok and o.delay(sig) is not None:
                delays[sig].append(o.delay(sig))
            elif not ok:
                missed.append(f"{tag}:{sig} (flagged {sorted(o.fired)})")
    print(f"\n{'signature':20s} {'recall':>9s} {'delay med':>10s} {'delay max':>10s}")
    for sig in sorted(flagged):
        d = delays[sig]
        print(f"{sig:20s} {sum(flagged[sig]):3d}/{len(flagged[sig]):<5d} "
              f"{(f'{np.median(d):.0f}' if d else '-'):>10s} {(f'{max(d)}' if d else '-'):>10s}")
    healthy_runs = [o for o in outcomes if not o.scenario.expect]
    alarms = [(f"{o.scenario.name}/seed{o.seed}", o.fired) for o in healthy_runs if o.fired]
    print(f"\nhealthy runs: {len(healthy_runs)}, with any warning or failure: {len(alarms)}")
    for tag, fired in alarms:
        print(f"  false alarm {tag}: {fired}")
    for m in missed:
        print(f"  missed {m}")
    for n in not_provoked:
        print(f"  not provoked (excluded from recall) {n}")
    total = [x for v in flagged.values() for x in v]
    recall = sum(total) / len(total) if total else 0.0
    all_delays = [x for v in delays.values() for x in v]
    p95 = float(np.percentile(all_delays, 95)) if all_delays else float("nan")
    return recall, len(alarms), p95


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1", help="seeds of the quick corpus (extras run with the first)")
    ap.add_argument("--quick-only", action="store_true", help="only tests/scenarios.py's QUICK recipes")
    ap.add_argument("--max-minutes", type=float, default=10.0, help="stop starting runs after this long")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    jobs = corpus(seeds, args.quick_only)
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    outcomes: list[Outcome] = []
    print(f"{len(jobs)} runs; name/seed: flagged signature@step (onset), seconds", flush=True)
    for sc, seed in jobs:
        if time.perf_counter() - t0 > args.max_minutes * 60:
            print(f"time budget of {args.max_minutes} min spent: {len(jobs) - len(outcomes)} runs not started")
            break
        o = run(sc, seed)
        outcomes.append(o)
        fired = " ".join(f"{k}@{v}" for k, v in sorted(o.fired.items(), key=lambda kv: kv[1])) or "-"
        mark = "healthy" if not sc.expect else "expect " + ",".join(sc.expect)
        onsets = ",".join(f"{o.onsets[s]}" for s in sc.expect) if sc.expect else "-"
        print(f"  {sc.name}/seed{seed} [{mark}] onset {onsets}: {fired}  {o.seconds:.1f}s", flush=True)
        curve = quality_curve(o)
        if curve:
            print(f"      quality {curve}", flush=True)
    judge = sum(o.judge_s for o in outcomes)
    trained = sum(o.seconds for o in outcomes)
    recall, alarms, p95 = report(outcomes)
    healthy_images = [o for o in outcomes if not o.scenario.expect and quality_curve(o)]
    verdicts = [(o, improved(o)) for o in healthy_images]
    print(f"\nimage ground truth: {sum(v is True for _, v in verdicts)}/{len(verdicts)} healthy image runs improved "
          f"(shapes: recognisable +0.1 or two more classes; else KID at the end ≤ {IMPROVES:g} × the first)")
    for o, v in verdicts:
        if v is not True:
            print(f"  label check: {o.scenario.name}/seed{o.seed} is labelled healthy but its quality "
                  f"{'did not improve' if v is False else 'had fewer than two evaluations'}: {quality_curve(o)}")
    print(f"\ndetectors judged every flush in {judge:.2f}s of {trained:.0f}s training "
          f"({100 * judge / max(trained, 1e-9):.2f}%); wall {time.perf_counter() - t0:.0f}s, "
          f"CPU {time.process_time() - cpu0:.0f}s")
    print(f"recall {recall:.3f} false_alarms {alarms} delay_p95 {p95:.0f}")


if __name__ == "__main__":
    main()
