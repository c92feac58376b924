"""Failure-signature rules: pure, vectorised numpy functions over windows of metrics.

Every rule has the shape `rule(recent, early, th, ctx) -> Finding | None`:

* `recent` — the trailing points of each metric (the engine keeps a few hundred steps, and the last
  evaluations of the sparse quality and toy series);
* `early`  — the run's first points (baselines: G's early gradient level, step-0 weights);
* `th`     — the signature's thresholds (catalog defaults merged with the job's overrides);
* `ctx`    — facts from the run's config (label smoothing, loss and its reduction, init, toy mode count,
  layer sizes and order) and which alerts are open.

A rule returns a Finding when its condition has *persisted* (held at `hold_frac` of the points of the
last `window` steps); None otherwise. Rules that read BCE-scale values (loss/d near 0 or 2·ln 2, pred/*
as probabilities) ask scale.py for the run's loss family and reduction, and read the critic's scores
under hinge and Wasserstein losses or stay silent. Unit tests call the rules directly with synthetic
series; the engine calls them on every ingested batch. This module holds the rules over D's losses and
outputs; rules_quality.py those over samples and quality, rules_nets.py those over gradients, weights
and parameter counts.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ganscope.server.detectors import quality as q
from ganscope.server.detectors import scale
from ganscope.server.detectors.rules_nets import capacity_imbalance, exploding_grad, poor_init, vanishing_g_grad
from ganscope.server.detectors.rules_quality import mode_collapse, quality_stalled
from ganscope.server.detectors.window import (  # noqa: F401 - re-exported: tests and the corpus use them from here
    MIN_POINTS, ONSET, Context, Finding, Series, Window, align, bce_floor, get, held, layer_names, stat, tail,
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


def _quality_view(recent: Window, ctx: Context) -> tuple[q.Trend, q.Fit, dict[str, Any]]:
    """G's quality trend and fit, and what the evidence shows of them."""
    tr = q.trend(recent, ctx, ctx.quality_th())
    ft = q.fit(recent, ctx)
    ev: dict[str, Any] = {"trend": tr.verdict, "metric": tr.metric, "fit": ft.state}
    if tr.metric is not None and tr.evidence:
        ev.update(best=tr.evidence["best"], recent=tr.evidence["recent"], window=tr.evidence["window"])
    if ft.readings:
        ev["fit_readings"] = {n: {"level": r["level"], "state": r["state"]} for n, r in ft.readings.items()}
    return tr, ft, ev


def _bce_dominance(recent: Window, th: dict[str, float], ctx: Context) -> tuple[Any, ...] | None:
    """(onset, end, frac, observed, metrics, extra evidence, message) of a D that wins under a BCE loss."""
    ld, note = scale.d_loss(recent, ctx)
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
    msg = (f"D has overpowered G since step {ONSET}: loss/d median {obs['loss/d']['median']:.3g}"
           + (f", D(G(z)) median {obs['pred/fake']['median']:.3g}" if pf is not None else "")
           + (f"; D saturated (a BCE term exactly 0) at {nsat} steps" if nsat else ""))
    names = ["loss/d"] + (["pred/fake"] if pf is not None else []) + (["pred/real"] if pr is not None else [])
    return onset, end, frac, obs, names, {"saturated_points": nsat, "loss_floor": floor, "loss_scale": note}, msg


def _hinge_dominance(recent: Window, th: dict[str, float], ctx: Context) -> tuple[Any, ...] | None:
    """Hinge: D's loss near 0 means every real sample scores above +1 and every fake below −1 — D meets
    both margins on everything and stops learning from them (BigGAN saw D's loss sink to 0 before collapse)."""
    ld, note = scale.d_loss(recent, ctx)
    if ld is None:
        return None
    steps, l = ld
    cond = l < th["loss_d_max"]
    gap = scale.critic_gap(recent)
    if gap is not None:
        gs, gv = gap
        idx = np.searchsorted(gs, steps).clip(max=gs.size - 1)
        cond &= (gs[idx] == steps) & (gv[idx] >= th["score_gap_min"])
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    if not ok:
        return None
    end = int(steps[-1])
    obs: dict[str, Any] = {"loss/d": {**stat(tail(steps, l, end, th["window"])), "threshold": th["loss_d_max"], "op": "<"}}
    names = ["loss/d"]
    if gap is not None:
        obs["score/real − score/fake"] = {**stat(tail(gap[0], gap[1], end, th["window"])),
                                          "threshold": th["score_gap_min"], "op": ">="}
        names += ["score/real", "score/fake"]
    msg = (f"D has overpowered G since step {ONSET}: hinge loss/d median {obs['loss/d']['median']:.3g} — D meets "
           f"both margins on nearly every sample" + (f" (score gap {obs['score/real − score/fake']['median']:.3g})"
                                                     if gap is not None else ""))
    return onset, end, frac, obs, names, {"loss_scale": note}, msg


def d_overpowering(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """D wins outright (BCE: loss/d near its floor and D(G(z)) near 0, or saturated; hinge: both margins
    met everywhere). Under WGAN losses a strong critic is the method, not a failure: silent.

    With quality measures logged, a dominant D while G's quality still improves (or G already fits) is a
    warning, not a failure: what matters is whether G still learns from it."""
    family = ctx.family(recent)
    if family == "bce":
        found = _bce_dominance(recent, th, ctx)
    elif family == "hinge":
        found = _hinge_dominance(recent, th, ctx)
    else:
        return None
    if found is None:
        return None
    onset, end, frac, obs, names, extra, msg = found
    tr, ft, qev = _quality_view(recent, ctx)
    severity = None
    if tr.verdict == "improving" or ft.state == "good":
        severity = "warning"
        msg += (f" — but G still improves ({tr.summary()})" if tr.verdict == "improving"
                else f" — but G fits the data ({ft.describe()})") + ": not failing while that lasts"
    elif tr.verdict in ("stalled", "regressing"):
        msg += f", and G's quality has {'regressed' if tr.verdict == 'regressing' else 'stalled'} ({tr.summary()})"
    return Finding("d_overpowering", onset, end, msg,
                   {"metrics": names, "window": [onset, end], "observed": obs, "held_frac": frac, **extra,
                    "quality": qev, "thresholds": dict(th)}, severity)
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
    ordinary jitter when D is ahead (0.01–0.1 is 4.6–2.3 nats) — a healthy 32px run swung by 2.4 nats.
    The thresholds are in nats of a BCE loss (a mean-reduced loss is doubled first); hinge and Wasserstein
    losses are on other scales the thresholds were never measured on, so the rule is silent there."""
    if ctx.family(recent) != "bce":
        return None
    ld, note = scale.d_loss(recent, ctx)
    if ld is None:
        return None
    ok, o = _spiky(ld[0], ld[1], th)
    if not ok:
        return None
    end = int(ld[0][-1])
    onset = int(max(end - th["window"] + 1, th["warmup_steps"]))
    return Finding("oscillation", onset, end,
                   f"Losses oscillate: loss/d swings by {o['swing_p5_p95']:.3g} with "
                   f"{100 * o['spike_frac']:.0f}% of steps spiking over {th['spike_nats']:g} above its local level "
                   f"in the last {int(th['window'])} steps",
                   {"metrics": ["loss/d"], "window": [onset, end], "observed": {"loss/d": o}, "loss_scale": note,
                    "thresholds": dict(th)})


def _chance(recent: Window, th: dict[str, float], ctx: Context, family: str,
            fit: q.Fit) -> tuple[Series, np.ndarray, dict[str, Any], str] | None:
    """(series judged, per-point condition, observed, how) of a D at chance, or None.

    BCE: loss/d at 2·ln 2 (summed) with D(x) ≈ D(G(z)); hinge: loss/d at 2 with score/real ≈ score/fake;
    Wasserstein: the estimate score/real − score/fake ≈ 0. With a fit measure saying G does not match the
    data, D at chance is a failure however lively its loss (a wider band, no flatness needed); with none,
    only a frozen loss (a live equilibrium jitters) counts, as before fit measures existed."""
    wide = fit.state == "bad"
    band, gap_max = (th["wide_band"], th["wide_gap"]) if wide else (th["chance_band"], None)
    obs: dict[str, Any] = {}
    if family == "wasserstein":
        w = scale.wasserstein_estimate(recent)
        if w is None:
            return None
        steps, v = w
        cond = np.abs(v) < th["score_gap"] * (5 if wide else 1)
        judged, level_name = (steps, v), "score/real − score/fake"
        obs[level_name] = {"threshold": float(th["score_gap"] * (5 if wide else 1)), "op": "|·| <"}
        gp = get(recent, "loss/gp")
        if gp is not None:  # (‖∇D‖ − 1)² near 1 is a critic whose input gradient is ~0: flat, not learning
            obs["loss/gp"] = stat(tail(gp[0], gp[1], int(gp[0][-1]), th["window"]))
    else:
        ld, note = scale.d_loss(recent, ctx)
        if ld is None:
            return None
        levels = scale.chance_levels(recent, ctx, family)
        lw = ld[1][ld[0] > ld[0][-1] - th["window"]]
        # Cheap exit (the common case: a D that has left chance): too few of the window's points near any
        # chance level to hold.
        near = [c for c in levels if (np.abs(lw - c) < band * (c / scale.LN4 if family == "bce" else 1.0)).mean()
                >= th["hold_frac"]]
        if not near:
            return None
        med = float(np.median(lw))
        c = min(near, key=lambda x: abs(x - med))  # an unknown reduction: whichever chance level fits
        if family == "bce":
            pr, pf = get(recent, "pred/real"), get(recent, "pred/fake")
            if pr is None or pf is None:
                return None
            steps, (l, r, f) = align(ld, pr, pf)
            gap = np.abs(r - f)
            gap_line = gap_max if wide else th["pred_gap"]
            gap_name = "|pred/real − pred/fake|"
        else:
            g = scale.critic_gap(recent)
            if g is None:
                return None
            steps, (l, gv) = align(ld, g)
            gap = np.abs(gv)
            gap_line = th["score_gap"] * (5 if wide else 1)
            gap_name = "|score/real − score/fake|"
        cond = (np.abs(l - c) < band * (c / scale.LN4 if family == "bce" else 1.0)) & (gap < gap_line)
        judged, level_name = (steps, l), "loss/d"
        obs["loss/d"] = {"chance": c, "band": band, "loss_scale": note}
        win = steps > steps[-1] - th["window"] if steps.size else steps
        obs[gap_name] = {**stat(gap[win]), "threshold": gap_line, "op": "<"}
    steps, v = judged
    if steps.size == 0:
        return None
    win = steps > steps[-1] - th["window"]
    if (cond[win]).mean() < th["hold_frac"]:
        return None
    w = v[win]
    iqr = float(np.subtract(*np.percentile(w, [75, 25])))
    obs[level_name] = {**obs[level_name], **stat(w), "iqr": iqr, "flat_iqr": th["flat_iqr"]}
    if not wide and iqr >= th["flat_iqr"]:
        return None  # a live D at chance with no fit measure saying G is off: an equilibrium, not a stuck D
    return judged, cond, obs, ("bad fit" if wide else "flat")


def d_not_learning(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """D does not learn: at chance while G does not match the data (or, with no fit measure, frozen at chance),
    frozen weights while not winning, or pinned at BCE's clamp (a term of exactly ~100: zero gradient).

    D at chance is the goal once G matches the data: with a fit measure saying so, it is healthy."""
    family = ctx.family(recent)
    ft = q.fit(recent, ctx)
    tr = q.trend(recent, ctx, ctx.quality_th()) if ft.state == "bad" else None
    cands: list[tuple[str, np.ndarray, np.ndarray]] = []  # (why, steps, per-point condition)
    obs: dict[str, Any] = {}
    fit_note = None
    if family != "unknown":
        if ft.state in ("good", "fair"):
            fit_note = (f"not judged at chance: the fit measures say G {'matches' if ft.state == 'good' else 'partly matches'} "
                        f"the data ({ft.describe()}), so D at chance is the equilibrium GANs aim for")
        elif tr is not None and tr.verdict == "improving":
            fit_note = (f"not judged at chance: G does not match the data yet but is getting closer ({tr.summary()}), "
                        "so D at chance still guides it")
        else:
            if tr is not None and tr.verdict == "unknown":
                ft = q.Fit("unknown", ft.readings)  # a bad fit with no trend yet: only a frozen D counts
            found = _chance(recent, th, ctx, family, ft)
            if found is not None:
                (steps, _), cond, o, how = found
                cands.append(("chance", steps, cond))
                obs.update(o)
                fit_note = (f"G does not match the data and is not getting closer: {ft.describe()}"
                            if ft.state == "bad" else
                            "no fit measure (toy/fit, quality/*) has a level and a trend yet: D at chance cannot be "
                            "told from an equilibrium with a good fit, so only a frozen loss/d counts")
    ld, note = scale.d_loss(recent, ctx)
    ups = weight_layers(recent, "update", "d", ctx) or layer_names(recent, "update/d/", ctx.memo)
    if ld is not None and ups:
        us, uv = align(*(recent[n] for n in ups))
        if us.size:
            mx = np.vstack(uv).max(axis=0)
            if (mx[us > us[-1] - th["window"]] < th["update_max"]).mean() >= th["hold_frac"]:
                steps, (lv, mv) = align(ld, (us, mx))
                frozen = mv < th["update_max"]
                if family in ("bce", "hinge"):
                    frozen &= lv > th["loss_d_min"]  # a D frozen because it has won is d_overpowering
                cands.append(("frozen", steps, frozen))
                obs["max update/d/*"] = {**stat(tail(us, mx, int(us[-1]), th["window"])),
                                         "threshold": th["update_max"], "op": "<"}
    if family == "bce":
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
        lvl = obs.get("loss/d") or obs.get("score/real − score/fake")
        what = ("its critic ranks real and fake alike (Wasserstein estimate ≈ 0)" if family == "wasserstein" else
                f"loss/d at {lvl['median']:.4g} (chance {lvl['chance']:.4g}) and real and fake scored alike")
        msg = (f"D has been at chance since step {ONSET}: {what}"
               + (f", while G does not match the data ({ft.describe()})" if ft.state == "bad"
                  else " with a frozen loss; no fit measure says whether G matches the data"))
        names = (["score/real", "score/fake"] if family == "wasserstein" else
                 ["loss/d"] + (["pred/real", "pred/fake"] if family == "bce" else ["score/real", "score/fake"]))
        names += [n for n in ft.readings]
    elif why == "frozen":
        msg = (f"D is not learning since step {ONSET}: its largest update/weight ratio is "
               f"{obs['max update/d/*']['median']:.2g} while loss/d stays at "
               f"{stat(tail(ld[0], ld[1], end, th['window']))['median']:.3g}")
        names = ups[:6] + ["loss/d"]
    else:
        n = why.split(":", 1)[1]
        obs[n] = {**stat(tail(recent[n][0], recent[n][1], end, th["window"])), "clamp": th["clamp_loss"]}
        msg = (f"D is pinned at BCE's clamp since step {ONSET} ({n} ≈ {th['clamp_loss']:.0f}): its sigmoid "
               f"output is exactly 0 or 1, where the gradient is zero")
        names = [n, "loss/d"]
    return Finding("d_not_learning", onset, end, msg,
                   {"metrics": names, "window": [onset, end], "observed": obs, "held_frac": frac, "cause": why,
                    "fit": {"state": ft.state, "readings": ft.readings, "note": fit_note}, "loss_scale": note,
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
    "quality_stalled": quality_stalled,  # last: it stays silent while a rule above explains the stall
}
