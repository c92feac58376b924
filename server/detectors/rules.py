"""Failure-signature rules: pure, vectorised numpy functions over windows of metrics.

Every rule has the shape `rule(recent, early, th, ctx) -> Finding | None`:

* `recent` — the trailing points of each metric (the engine keeps a few hundred steps);
* `early`  — the run's first points (baselines: G's early gradient level, step-0 weights);
* `th`     — the signature's thresholds (catalog defaults merged with the job's overrides);
* `ctx`    — facts from the run's config (label smoothing, loss, init, toy mode count, layer sizes).

A rule returns a Finding when its condition has *persisted* (held at `hold_frac` of the
points of the last `window` steps); None otherwise. Unit tests call the rules directly
with synthetic series; the engine calls them on every ingested batch. This module holds
the rules over losses, D's outputs and samples; rules_nets.py those over gradients,
weights and parameter counts.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ganscope.server.detectors.catalog import LN4
from ganscope.server.detectors.rules_nets import capacity_imbalance, exploding_grad, poor_init, vanishing_g_grad
from ganscope.server.detectors.window import (  # noqa: F401 - re-exported: tests and the corpus use them from here
    MIN_POINTS, Context, Finding, Series, Window, tail, align, bce_floor, get, held, layer_names, stat,
    weight_layers,
)


def nonfinite(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Any NaN/Inf in the last `clear_steps` steps of any metric: failing at once, no persistence."""
    end = max((int(s[-1]) for s, _ in recent.values() if s.size), default=None)
    if end is None:
        return None
    if bool(np.isfinite(np.concatenate([v for _, v in recent.values()])).all()):
        return None  # the common case, in one pass
    hits: dict[str, dict[str, Any]] = {}
    first = None
    for name, (s, v) in recent.items():
        recent_pts = s > end - th["clear_steps"]
        bad = ~np.isfinite(v) & recent_pts
        if bad.any():
            bs = s[bad]
            kinds = v[bad]
            hits[name] = {"first_step": int(bs[0]), "last_step": int(bs[-1]), "count": int(bad.sum()),
                          "nan": int(np.isnan(kinds).sum()), "inf": int(np.isinf(kinds).sum())}
            first = int(bs[0]) if first is None else min(first, int(bs[0]))
    if not hits:
        return None
    names = sorted(hits, key=lambda n: hits[n]["first_step"])
    last = max(h["last_step"] for h in hits.values())
    return Finding("nonfinite", first, last,
                   f"Non-finite values in {len(names)} metric(s), first in {names[0]} at step {hits[names[0]]['first_step']}",
                   {"metrics": names[:20], "window": [first, last], "observed": {n: hits[n] for n in names[:20]},
                    "thresholds": {"clear_steps": th["clear_steps"]}})


def d_overpowering(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """D wins outright: loss/d near its floor and D(G(z)) near 0, or D saturated exactly (loss term == 0)."""
    ld = get(recent, "loss/d")
    if ld is None:
        return None
    floor = bce_floor(ctx.label_smoothing)
    # Cheap exit: both clauses need loss/d below 1 at hold_frac of the window's points.
    if (ld[1][ld[0] > ld[0][-1] - th["window"]] < 1.0).mean() < th["hold_frac"]:
        return None
    parts = [ld]
    pf = get(recent, "pred/fake")
    if pf is not None:
        parts.append(pf)
    steps, vals = align(*parts)
    if steps.size == 0:
        return None
    cond = (vals[0] - floor) < th["loss_d_max"]
    if pf is not None:
        cond &= vals[1] < th["pred_fake_max"]
    # Saturated at float precision: a D whose fake (or real) BCE term is exactly 0 has sigmoid outputs
    # of exactly 0 (or 1) — it has won beyond what the loss can measure (a clamp, not a number).
    sat_names = [n for n in ("loss/d_fake", "loss/d_real") if get(recent, n) is not None]
    saturated = np.zeros(steps.size, dtype=bool)
    for n in sat_names:
        s, v = recent[n]
        idx = np.searchsorted(s, steps).clip(max=s.size - 1)
        saturated |= (s[idx] == steps) & (v[idx] == 0.0)
    if pf is not None and sat_names:
        saturated &= vals[1] < 0.5  # D saying "fake" with certainty, not "real"
    cond |= saturated & (vals[0] < 1.0)
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    if not ok:
        return None
    end = int(steps[-1])
    obs = {"loss/d": {**stat(tail(steps, vals[0], end, th["window"])), "threshold": floor + th["loss_d_max"], "op": "<"}}
    if pf is not None:
        obs["pred/fake"] = {**stat(tail(steps, vals[1], end, th["window"])), "threshold": th["pred_fake_max"], "op": "<"}
    pr = get(recent, "pred/real")
    if pr is not None:
        obs["pred/real"] = stat(tail(pr[0], pr[1], end, th["window"]))
    nsat = int(saturated[steps > end - th["window"]].sum())
    msg = (f"D has overpowered G since step {onset}: loss/d median {obs['loss/d']['median']:.3g}"
           + (f", D(G(z)) median {obs['pred/fake']['median']:.3g}" if pf is not None else "")
           + (f"; D saturated (a BCE term exactly 0) at {nsat} steps" if nsat else ""))
    return Finding("d_overpowering", onset, end, msg,
                   {"metrics": ["loss/d"] + (["pred/fake"] if pf is not None else []) + (["pred/real"] if pr is not None else []),
                    "window": [onset, end], "observed": obs, "held_frac": frac, "saturated_points": nsat,
                    "thresholds": dict(th), "loss_floor": floor})


def mode_collapse(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G's samples collapsed: their spread a sliver of the real batch's, or (toy mixtures) good samples from
    at most half the modes. Losses are not consulted: a collapsed G can keep D at 2·ln 2."""
    findings = []
    div = get(recent, "sample/diversity")
    if div is not None:
        s, v = div
        keep = s >= th["warmup_steps"]
        if keep.sum() >= MIN_POINTS:
            with np.errstate(invalid="ignore"):
                cond = v[keep] < th["diversity_min"]
            # Spread is measured on every probed batch (probe_every, 1 by default): its window is shorter than
            # coverage's, yet at least five measurements wide for sparse probing (held() needs them to span it).
            ks = s[keep]
            cadence = float(np.median(np.diff(ks[-20:]))) if ks.size > 1 else 1.0
            win = max(th["diversity_window"], 5 * cadence)
            ok, onset, frac = held(ks, cond, win, th["hold_frac"])
            if ok:
                end = int(s[-1])
                findings.append((onset, end, "sample/diversity",
                                 {**stat(tail(s, v, end, win)), "threshold": th["diversity_min"], "op": "<"}, frac))
    modes, quality = get(recent, "toy/modes"), get(recent, "toy/quality")
    k = ctx.n_modes
    if modes is not None and quality is not None and k is not None and k >= 2:
        s, (v, q) = align(modes, quality)
        keep = s >= th["warmup_steps"]
        limit = max(1.0, math.floor(th["modes_frac"] * k))
        # Coverage is measured every toy_every steps: the window spans at least two measurements.
        cadence = float(np.median(np.diff(s))) if s.size > 1 else th["window"]
        if keep.sum() >= 2:
            # Good samples (quality) from few modes. A G whose samples are mostly junk has not collapsed
            # onto modes — it has not found them (an unconverged or diverging run).
            cond = (v[keep] <= limit) & (v[keep] >= 1) & (q[keep] >= th["quality_min"])
            ok, onset, frac = held(s[keep], cond, max(th["window"], 2 * cadence), th["hold_frac"], min_points=2)
            if ok:
                end = int(s[-1])
                findings.append((onset, end, "toy/modes",
                                 {**stat(tail(s, v, end, max(th["window"], 2 * cadence))), "threshold": limit,
                                  "op": "<=", "modes_total": k,
                                  "quality": stat(tail(s, q, end, max(th["window"], 2 * cadence)))}, frac))
    if not findings:
        return None
    onset = min(f[0] for f in findings)
    end = max(f[1] for f in findings)
    obs = {f[2]: f[3] for f in findings}
    ld = get(recent, "loss/d")
    if ld is not None:
        obs["loss/d"] = {**stat(tail(ld[0], ld[1], end, th["window"])), "equilibrium": LN4}
    parts = []
    if "toy/modes" in obs:
        parts.append(f"G's good samples cover {obs['toy/modes']['median']:.0f} of {k} modes")
    if "sample/diversity" in obs:
        parts.append(f"sample spread {obs['sample/diversity']['median']:.3g} of the real batch's")
    calm = ""
    if ld is not None and abs(obs["loss/d"]["median"] - LN4) < 0.3:
        calm = " while the losses look calm (loss/d near 2·ln 2)"
    return Finding("mode_collapse", onset, end, f"Mode collapse since step {onset}: " + ", ".join(parts) + calm,
                   {"metrics": [f[2] for f in findings] + (["loss/d"] if ld is not None else []),
                    "window": [onset, end], "observed": obs, "held_frac": max(f[4] for f in findings),
                    "thresholds": dict(th)})


def _spiky(steps: np.ndarray, v: np.ndarray, th: dict[str, float]) -> tuple[bool, dict[str, float]]:
    """Spikes above the local level (a rolling median, so a steady descent is no spike) and overall swing."""
    end = int(steps[-1])
    i = int(np.searchsorted(steps, max(end - th["window"], th["warmup_steps"] - 1), side="right"))
    w = v[i:]
    if w.size < 20 or (end - int(steps[i]) + 1) < 0.8 * th["window"]:
        return False, {}
    if not np.isfinite(w).all():
        w = w[np.isfinite(w)]
        if w.size < 20:
            return False, {}
    k5, k95 = int(0.05 * (w.size - 1)), int(round(0.95 * (w.size - 1)))
    part = np.partition(w, (k5, k95))  # nearest-rank 5th/95th percentiles in one pass
    lo, hi = float(part[k5]), float(part[k95])
    if hi - lo <= th["spread_min"]:
        return False, {}  # the common case: no swing, no need for the local level
    k = 11
    pad = np.pad(w, (k // 2, k // 2), mode="edge")
    level = np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)
    spikes = float(np.mean(w - level > th["spike_nats"]))
    swing = float(hi - lo)
    ok = swing > th["spread_min"] and spikes > th["spike_frac"]
    return ok, {"median": float(np.median(w)), "swing_p5_p95": swing, "spike_frac": spikes,
                "threshold": th["spread_min"], "op": ">", "spike_frac_threshold": th["spike_frac"]}


def oscillation(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Large, spiky swings of D's loss (ganhacks: a failing D loss 'has huge variance and spikes').

    G's loss is not judged: under the non-saturating loss it is −log D(G(z)), which magnifies D(G(z))'s
    ordinary jitter when D is ahead (0.01–0.1 is 4.6–2.3 nats) — a healthy 32px run swung by 2.4 nats."""
    obs = {}
    end = None
    for n in ("loss/d",):
        s = get(recent, n)
        if s is None:
            continue
        ok, o = _spiky(s[0], s[1], th)
        if ok:
            obs[n] = o
            end = int(s[0][-1])
    if not obs or end is None:
        return None
    onset = int(max(end - th["window"] + 1, th["warmup_steps"]))
    names = list(obs)
    o = obs[names[0]]
    return Finding("oscillation", onset, end,
                   f"Losses oscillate: {names[0]} swings by {o['swing_p5_p95']:.3g} with "
                   f"{100 * o['spike_frac']:.0f}% of steps spiking over {th['spike_nats']:g} above its local level "
                   f"in the last {int(th['window'])} steps",
                   {"metrics": names, "window": [onset, end], "observed": obs, "thresholds": dict(th)})


def d_not_learning(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """D does not learn: stuck at chance (flat loss/d ≈ 2·ln 2, D(x) ≈ D(G(z))), frozen weights while not
    winning, or pinned at BCE's clamp (an nn.BCELoss term of exactly ~100: sigmoid saturated, zero gradient)."""
    ld = get(recent, "loss/d")
    cands: list[tuple[str, np.ndarray, np.ndarray]] = []  # (why, steps, per-point condition)
    obs: dict[str, Any] = {}
    pr, pf = get(recent, "pred/real"), get(recent, "pred/fake")
    if ld is not None and pr is not None and pf is not None:
        steps, (l, r, f) = align(ld, pr, pf)
        win = steps > steps[-1] - th["window"] if steps.size else steps
        if steps.size and (np.abs(l[win] - LN4) < th["chance_band"]).mean() >= th["hold_frac"]:
            cond = (np.abs(l - LN4) < th["chance_band"]) & (np.abs(r - f) < th["pred_gap"])
            w = l[win]
            iqr = float(np.subtract(*np.percentile(w, [75, 25])))
            if iqr < th["flat_iqr"]:  # frozen, not an equilibrium: a live D's loss jitters batch to batch
                cands.append(("chance", steps, cond))
            obs["loss/d"] = {**stat(w), "iqr": iqr, "chance": LN4, "band": th["chance_band"],
                             "flat_iqr": th["flat_iqr"]}
            obs["|pred/real − pred/fake|"] = {**stat(np.abs(r - f)[win]), "threshold": th["pred_gap"], "op": "<"}
    ups = weight_layers(recent, "update", "d", ctx) or layer_names(recent, "update/d/", ctx.memo)
    if ld is not None and ups:
        us, uv = align(*(recent[n] for n in ups))
        if us.size:
            mx = np.vstack(uv).max(axis=0)
            if (mx[us > us[-1] - th["window"]] < th["update_max"]).mean() >= th["hold_frac"]:
                steps, (lv, mv) = align(ld, (us, mx))
                cands.append(("frozen", steps, (mv < th["update_max"]) & (lv > th["loss_d_min"])))
                obs["max update/d/*"] = {**stat(tail(us, mx, int(us[-1]), th["window"])),
                                         "threshold": th["update_max"], "op": "<"}
    for n in ("loss/d_real", "loss/d_fake"):
        s = get(recent, n)
        if s is not None and s[1][-1] >= th["clamp_loss"] - 0.5:  # only a run sitting at the clamp now
            cands.append((f"clamp:{n}", s[0], np.abs(s[1] - th["clamp_loss"]) < 0.5))
    best = None
    for why, steps, cond in cands:
        ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
        if ok and (best is None or onset < best[1]):
            best = (why, onset, int(steps[-1]), frac)
    if best is None:
        return None
    why, onset, end, frac = best
    if why == "chance":
        msg = (f"D has been stuck at chance since step {onset}: loss/d flat at {obs['loss/d']['median']:.4g} "
               f"(2·ln 2 = {LN4:.4g}) and D(x) ≈ D(G(z)) — it does not tell real from fake")
        names = ["loss/d", "pred/real", "pred/fake"]
    elif why == "frozen":
        msg = (f"D is not learning since step {onset}: its largest update/weight ratio is "
               f"{obs['max update/d/*']['median']:.2g} while loss/d stays at {stat(tail(ld[0], ld[1], end, th['window']))['median']:.3g}")
        names = ups[:6] + ["loss/d"]
    else:
        n = why.split(":", 1)[1]
        obs[n] = {**stat(tail(recent[n][0], recent[n][1], end, th["window"])), "clamp": th["clamp_loss"]}
        msg = (f"D is pinned at BCE's clamp since step {onset} ({n} ≈ {th['clamp_loss']:.0f}): its sigmoid "
               f"output is exactly 0 or 1, where the gradient is zero")
        names = [n, "loss/d"]
    return Finding("d_not_learning", onset, end, msg,
                   {"metrics": names, "window": [onset, end], "observed": obs, "held_frac": frac, "cause": why,
                    "thresholds": dict(th)})


RULES: dict[str, Callable[[Window, Window, dict[str, float], Context], Finding | None]] = {
    "nonfinite": nonfinite,
    "d_overpowering": d_overpowering,
    "vanishing_g_grad": vanishing_g_grad,
    "exploding_grad": exploding_grad,
    "mode_collapse": mode_collapse,
    "oscillation": oscillation,
    "d_not_learning": d_not_learning,
    "poor_init": poor_init,
    "capacity_imbalance": capacity_imbalance,
}
