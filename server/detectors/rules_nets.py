"""Rules over the networks' own signals: gradient norms, initial weights, parameter counts.

Pure numpy over windows (see window.py); the registry of all rules is rules.RULES.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ganscope.server.detectors.window import (
    MIN_POINTS, Context, Finding, Window, align, early_level, get, held, layer_names, stat, tail, weight_layers,
)


def vanishing_g_grad(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G's first-layer gradient collapsed against its own early level, or AUTOTRAINER's ratio test."""
    layers = weight_layers(recent, "grad", "g", ctx)
    if not layers:
        return None
    first, last = layers[0], layers[-1]
    parts = [recent[first]] + ([recent[last]] if last != first else [])
    steps, vals = align(*parts)
    if steps.size == 0:
        return None
    g1 = vals[0]
    gl = vals[1] if last != first else g1
    base = early_level(early, first, th["early_steps"])
    # Cheap exit: every clause but the minimax one needs a first-layer norm below the larger of
    # AUTOTRAINER's floor and drop_ratio x the early level at hold_frac of the window's points.
    small = max(th["abs_max"], th["drop_ratio"] * base if base else 0.0)
    if ctx.loss != "minimax" and (g1[steps > steps[-1] - th["window"]] < small).mean() < th["hold_frac"]:
        return None
    origin = min((int(s[0]) for s, _ in early.values() if s.size), default=int(steps[0]))
    # Under N(0, 0.02) init G's first-layer gradient is ~1e-8 until D has learned something (measured: the
    # first ~50 steps of healthy toy runs), so the relative tests wait for `warmup_steps`. No gradient at all
    # (norm exactly 0: a saturated tanh, dead ReLUs) is dead, not young, and counts from the start.
    grown = steps >= origin + th["warmup_steps"]
    cond = g1 == 0
    if base is not None and base > 0:
        cond |= grown & (g1 < th["drop_ratio"] * base)
    ratio = None
    if last != first:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = g1 / gl
        cond |= grown & (g1 < th["abs_max"]) & (ratio < th["ratio_max"])  # AUTOTRAINER's test
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    saturated = None
    if not ok and ctx.loss == "minimax":
        # Goodfellow et al. 2014: with log(1 − D(G(z))) the gradient at D's logit is −D(G(z)), so a D that
        # rejects fakes with certainty scales every gradient G receives by D(G(z)) — it vanishes at the source.
        pg = get(recent, "pred/fake_g")
        if pg is not None:
            ok, onset, frac = held(pg[0], pg[1] < th["signal_min"], th["window"], th["hold_frac"])
            saturated = pg if ok else None
    if not ok:
        return None
    end = int(steps[-1])
    obs: dict[str, Any] = {first: {**stat(tail(steps, g1, end, th["window"])), "early_level": base,
                                   "threshold": None if base is None else th["drop_ratio"] * base, "op": "<"}}
    if ratio is not None:
        obs[f"{first} / {last}"] = {**stat(tail(steps, ratio, end, th["window"])), "threshold": th["ratio_max"], "op": "<"}
    names = [first] + ([last] if last != first else [])
    if saturated is not None:
        obs["pred/fake_g"] = {**stat(tail(saturated[0], saturated[1], end, th["window"])),
                              "threshold": th["signal_min"], "op": "<"}
        names.append("pred/fake_g")
        msg = (f"G's gradient vanishes since step {onset}: under the minimax loss it is scaled by D(G(z)) = "
               f"{obs['pred/fake_g']['median']:.2g}; G's first-layer norm is {obs[first]['median']:.3g}")
    else:
        msg = (f"G's first-layer gradient ({first}) has vanished since step {onset}: median "
               f"{obs[first]['median']:.3g}" + (f" against an early level of {base:.3g}" if base else ""))
    return Finding("vanishing_g_grad", onset, end, msg,
                   {"metrics": names, "window": [onset, end], "observed": obs, "held_frac": frac,
                    "thresholds": dict(th)})


def _row_medians(m: np.ndarray) -> np.ndarray:
    """Median of each row's finite values (NaN for a row with none); np.nanmedian is ~20x slower here."""
    srt = np.sort(np.where(np.isfinite(m), m, np.inf), axis=1)  # non-finite last
    n = np.isfinite(m).sum(axis=1)
    idx = np.maximum(n - 1, 0) // 2
    out = srt[np.arange(m.shape[0]), idx]
    return np.where(n > 0, out, np.nan)


def exploding_grad(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Largest per-layer gradient norm above ganhacks' 100, or a sudden jump against its own recent level."""
    layers = layer_names(recent, "grad/d/", ctx.memo) + layer_names(recent, "grad/g/", ctx.memo)
    if not layers:
        return None
    steps, vals = align(*(recent[n] for n in layers))
    if steps.size == 0:
        return None
    m = np.vstack(vals)  # (layers, steps)
    end = int(steps[-1])
    win = steps > end - th["window"]
    before = (steps <= end - th["window"]) & (steps > end - th["window"] - th["baseline_steps"])
    with np.errstate(invalid="ignore"):
        over_abs = m > th["abs_max"]  # NaN/Inf compare False here: those are nonfinite's business
        over_growth = np.zeros_like(over_abs)
        maybe = np.zeros(m.shape[0], dtype=bool)
        if before.sum() >= MIN_POINTS:
            # A jump needs a norm above the floor and above `growth` x the layer's minimum before the window
            # (the median is at least that): only such layers are worth a median.
            top = np.where(np.isfinite(m[:, win]), m[:, win], 0).max(axis=1)
            low = np.where(np.isfinite(m[:, before]), m[:, before], np.inf).min(axis=1)
            maybe = (top > th["growth_floor"]) & (top > th["growth"] * low)
        if not maybe.any() and not over_abs[:, win].any():
            return None  # the common case: nothing large in the window
        if maybe.any():
            base = np.full(m.shape[0], np.nan)
            base[maybe] = _row_medians(m[maybe][:, before])
            ok_base = np.isfinite(base) & (base > 0)
            over_growth[ok_base] = ((m[ok_base] > th["growth"] * base[ok_base, None])
                                    & (m[ok_base] > th["growth_floor"]))
            over_growth[:, ~win] = False  # growth is judged against the level just before the window
    over = over_abs | over_growth
    cond = over.any(axis=0)
    ok, onset, frac = held(steps, cond, th["window"], th["hold_frac"])
    if not ok:
        return None
    hits = over[:, win].sum(axis=1)
    worst = [layers[i] for i in np.argsort(-hits)[:4] if hits[i] > 0]
    obs = {n: {**stat(m[layers.index(n)][win]), "threshold": th["abs_max"], "op": ">"} for n in worst}
    fin = np.where(np.isfinite(m[:, win]), m[:, win], np.nan)
    peak = float(np.nanmax(fin)) if np.isfinite(fin).any() else float("nan")
    jump = bool(over_growth[:, win].any()) and not bool(over_abs[:, win].any())
    return Finding("exploding_grad", onset, end,
                   f"Gradient norms exploding since step {onset}: {worst[0]} up to {peak:.3g}"
                   + (f" ({th['growth']:.0f}× its level just before)" if jump else " (ganhacks: over 100 is trouble)"),
                   {"metrics": worst, "window": [onset, end], "observed": obs, "held_frac": frac,
                    "thresholds": dict(th)})



def _init_std(early: Window, net: str, ctx: Context, th: dict[str, float]) -> tuple[dict[str, float], int | None]:
    """Per-layer weight std at the run's first logged step, read off the weight norms.

    weight/<net>/<layer> is the L2 norm of the layer's parameters; with its element count (arch.py or a
    `params/<net>/<layer>` metric) std ≈ norm / sqrt(weights), biases being zero at init. The first logged
    point comes after one update; a layer whose update/weight ratio then is large no longer shows its init
    and is left out.
    """
    out: dict[str, float] = {}
    first = None
    layers = ctx.arch.get(net, {}) if ctx.arch else {}
    origin = min((int(s[0]) for s, _ in early.values() if s.size), default=0)
    for name in weight_layers(early, "weight", net, ctx):
        layer = name.rsplit("/", 1)[1]
        s, v = early[name]
        count = get(early, f"params/{net}/{layer}")
        n = float(count[1][0]) if count is not None else float(layers[layer].weights) if layer in layers else None
        if not n or not np.isfinite(v[0]) or s[0] >= origin + th["first_steps"]:
            continue  # no size to divide by, or no point from the run's first steps
        up = get(early, f"update/{net}/{layer}")
        if up is not None and up[0][0] == s[0] and up[1][0] > th["max_update"]:
            continue  # the first update already moved the weights too far to show the init
        out[name] = float(v[0]) / math.sqrt(n)
        first = int(s[0]) if first is None else min(first, int(s[0]))
    return out, first


def poor_init(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """Initial weight spread far from the config's init_std (normal init) or from DCGAN's 0.02."""
    if ctx.init != "normal":
        return None  # xavier/default intend a per-layer spread, not one std to compare with
    refs = {"DCGAN's 0.02": th["reference_std"]}
    if abs(ctx.init_std - th["reference_std"]) > 1e-12:
        refs = {f"the config's init_std {ctx.init_std:g}": ctx.init_std, **refs}
    obs: dict[str, Any] = {}
    bad: list[tuple[str, str, float]] = []
    step = None
    for net in ("g", "d"):
        stds, first = _init_std(early, net, ctx, th)
        if not stds:
            continue
        med = float(np.median(list(stds.values())))
        obs[f"weight/{net}/* std"] = {"median": med, "layers": stds}
        step = first if step is None else min(step, first or step)
        for label, ref in refs.items():
            r = med / ref
            if r > th["factor"] or r < 1 / th["factor"]:
                bad.append((net, label, r))
    if not bad:
        return None
    net, label, r = bad[0]
    step = step or 0
    nets = " and ".join(sorted({"G" if b[0] == "g" else "D" for b in bad}))
    med = obs[f"weight/{net}/* std"]["median"]
    return Finding("poor_init", step, step,
                   f"Initial weights of {nets} have a spread of {med:.3g}, {r:.3g}× {label}",
                   {"metrics": [f"weight/{n}/*" for n in ("g", "d") if f"weight/{n}/* std" in obs],
                    "window": [step, step], "observed": obs, "references": refs, "thresholds": dict(th)})


def capacity_imbalance(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G/D parameter ratio far from balanced (model/params_g ÷ model/params_d if logged, else the trainer's nets)."""
    # The trainer logs model/params_g and model/params_d at step 0; params/g, params/d are accepted too (SDK).
    pg = get(early, "model/params_g") or get(early, "params/g")
    pd = get(early, "model/params_d") or get(early, "params/d")
    if pg is not None and pd is not None:
        ng, nd = float(pg[1][0]), float(pd[1][0])
        how = "logged parameter counts"
    elif ctx.arch is not None and (recent or early):
        ng = float(sum(x.total for x in ctx.arch["g"].values()))
        nd = float(sum(x.total for x in ctx.arch["d"].values()))
        how = "from the config's architecture"
    else:
        return None
    step = min((int(s[0]) for s, _ in (early or recent).values() if s.size), default=0)
    ratio = ng / nd if nd > 0 else float("inf")
    if th["ratio_min"] <= ratio <= th["ratio_max"]:
        return None
    weak = "G" if ratio < 1 else "D"
    return Finding("capacity_imbalance", step, step,
                   f"{weak} is starved: G has {ng:.3g} parameters against D's {nd:.3g} (ratio {ratio:.3g}, "
                   f"{how}); DCGAN's nets at equal widths measure 1.3 at 64px",
                   {"metrics": ["model/params_g", "model/params_d"], "window": [step, step],
                    "observed": {"ratio": {"value": ratio, "how": how, "params_g": ng, "params_d": nd,
                                           "range": [th["ratio_min"], th["ratio_max"]]}},
                    "thresholds": dict(th)})
