"""Rules over what G produces: mode collapse (spread and mode coverage) and stalled or regressing quality.

Pure numpy over windows (see window.py); the registry of all rules is rules.RULES. Coverage and quality
are evaluated every `toy_every` / `eval_every` steps, so their windows span at least two evaluations.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ganscope.server.detectors import quality as q
from ganscope.server.detectors.catalog import LN4
from ganscope.server.detectors.scale import chance_levels, d_loss
from ganscope.server.detectors.window import (
    MIN_POINTS, ONSET, Context, Finding, Series, Window, align, get, held, stat, tail,
)

# Alerts that already explain a stall; quality_stalled stays silent while one is open. d_not_learning is not
# one: a D at chance says why G gets no signal, not that G is off the data — both are reported.
# d_overpowering says in its own message when G's quality has stalled under it.
EXPLAINS_STALL = frozenset({"nonfinite", "exploding_grad", "vanishing_g_grad", "mode_collapse", "d_overpowering"})


def _local_level(v: np.ndarray, k: int = 11) -> np.ndarray:
    """A rolling median over k points: the level one outlying batch does not move."""
    if v.size < k:
        return np.full(v.size, float(np.median(v)) if v.size else np.nan)
    pad = np.pad(v, (k // 2, k // 2), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(pad, k), axis=1)


def _coverage(recent: Window, ctx: Context) -> tuple[str, Series, np.ndarray, Series | None] | None:
    """(name, covered-mode counts, their totals, a sample-quality series or None): toy mixtures' toy/modes
    with toy/quality, `shapes`' quality/modes of quality/modes_total with quality/recognisable."""
    tm = get(recent, "toy/modes")
    if tm is not None and ctx.n_modes:
        return "toy/modes", tm, np.full(tm[0].size, float(ctx.n_modes)), get(recent, "toy/quality")
    qm, qt = get(recent, "quality/modes"), get(recent, "quality/modes_total")
    if qm is not None and qt is not None:
        steps, (v, t) = align(qm, qt)
        return "quality/modes", (steps, v), t, get(recent, "quality/recognisable")
    return None


def mode_collapse(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G's samples collapsed: their spread a sliver of the real batch's, or G's samples concentrated on at
    most half the modes (mixtures' toy/modes, `shapes`' quality/modes). Losses are not consulted: a
    collapsed G can keep D at 2·ln 2. Once open, the alert stays open while coverage stays low."""
    is_open = "mode_collapse" in ctx.open
    findings = []
    div = get(recent, "sample/diversity")
    if div is not None:
        s, v = div
        keep = s >= th["warmup_steps"]
        if keep.sum() >= MIN_POINTS:
            line = th["diversity_min"] * (th["exit_factor"] if is_open else 1.0)
            with np.errstate(invalid="ignore"):
                cond = v[keep] < line
            # Spread is measured on every probed batch (probe_every, 1 by default): its window is shorter than
            # coverage's, yet at least five measurements wide for sparse probing (held() needs them to span it).
            ks = s[keep]
            cadence = float(np.median(np.diff(ks[-20:]))) if ks.size > 1 else 1.0
            win = max(th["diversity_window"], 5 * cadence)
            ok, onset, frac = held(ks, cond, win, th["hold_frac"])
            if ok and not is_open:
                # A spread that doubled over the last two windows is a G still spreading out of its
                # near-constant init, not one collapsing (levels: medians of a quarter-window now and then).
                end = int(s[-1])
                now = v[s > end - win / 4]
                then = v[(s > end - 2 * win) & (s <= end - 2 * win + win / 4)]
                if then.size and now.size and np.median(now) >= th["expanding_ratio"] * np.median(then):
                    ok = False
            if ok:
                end = int(s[-1])
                findings.append((onset, end, "sample/diversity",
                                 {**stat(tail(s, v, end, win)), "threshold": line, "op": "<"}, frac))
    cov = _coverage(recent, ctx)
    if cov is not None:
        name, (s, v), total, qual = cov
        keep = (s >= th["warmup_steps"]) & (total >= 2)
        cadence = float(np.median(np.diff(s))) if s.size > 1 else th["window"]
        win = max(th["window"], 2 * cadence)  # coverage is measured every toy/eval period: two at least
        if keep.sum() >= 2:
            s, v, total = s[keep], v[keep], total[keep]
            limit = np.maximum(1.0, np.floor(th["modes_frac"] * total))
            low = v <= limit
            # Concentrated samples: mostly good ones (quality), or a spread far below the data's. Samples
            # mostly off every mode with a wide spread are a G that has not found the modes (a bad fit:
            # quality_stalled), not one collapsed onto a few.
            conc = np.zeros(s.size, dtype=bool)
            qv = None
            if qual is not None:
                idx = np.searchsorted(qual[0], s).clip(max=qual[0].size - 1)
                qv = np.where(qual[0][idx] == s, qual[1][idx], np.nan)
                with np.errstate(invalid="ignore"):
                    conc |= qv >= th["quality_min"]
            spread = None
            if div is not None and div[0].size:
                lvl = _local_level(div[1])
                idx = np.searchsorted(div[0], s, side="right") - 1
                spread = np.where(idx >= 0, lvl[idx.clip(min=0)], np.nan)
                with np.errstate(invalid="ignore"):
                    conc |= spread < th["spread_concentrated"]
            cond = low if is_open else low & (v >= 1) & conc
            ok, onset, frac = held(s, cond, win, th["hold_frac"], min_points=2, cadence=cadence)
            if ok:
                end = int(s[-1])
                w = s > end - win
                o: dict[str, Any] = {**stat(v[w]), "threshold": float(limit[-1]), "op": "<=",
                                     "modes_total": float(total[-1])}
                if qv is not None:
                    o["quality"] = {**stat(qv[w]), "threshold": th["quality_min"], "op": ">="}
                if spread is not None:
                    o["spread"] = {**stat(spread[w]), "threshold": th["spread_concentrated"], "op": "<"}
                if is_open:
                    o["held_open"] = "coverage still at most half the modes"
                findings.append((onset, end, name, o, frac))
    if not findings:
        return None
    onset = min(f[0] for f in findings)
    end = max(f[1] for f in findings)
    obs = {f[2]: f[3] for f in findings}
    ld, _ = d_loss(recent, ctx)
    family = ctx.family(recent)
    chance = chance_levels(recent, ctx, family)[0] if family in ("bce", "hinge") else None
    if ld is not None:
        obs["loss/d"] = {**stat(tail(ld[0], ld[1], end, th["window"])), "equilibrium": chance}
    parts = []
    for name in ("toy/modes", "quality/modes"):
        if name in obs:
            parts.append(f"G's samples cover {obs[name]['median']:.0f} of {obs[name]['modes_total']:.0f} modes")
    if "sample/diversity" in obs:
        parts.append(f"sample spread {obs['sample/diversity']['median']:.3g} of the real batch's")
    calm = ""
    if ld is not None and chance is not None and abs(obs["loss/d"]["median"] - chance) < 0.3 * chance / LN4:
        calm = " while the losses look calm (loss/d near its chance level)"
    return Finding("mode_collapse", onset, end, f"Mode collapse since step {ONSET}: " + ", ".join(parts) + calm,
                   {"metrics": [f[2] for f in findings] + (["loss/d"] if ld is not None else []),
                    "window": [onset, end], "observed": obs, "held_frac": max(f[4] for f in findings),
                    "thresholds": dict(th)})


def _losses(recent: Window, ctx: Context, end: int, window: float) -> dict[str, Any]:
    """What D's signals say over the last `window` steps (the remedy reads `d_ahead`)."""
    out: dict[str, Any] = {}
    ld, note = d_loss(recent, ctx)
    if ld is not None:
        out["loss/d"] = stat(tail(ld[0], ld[1], end, window))
    for n in ("pred/real", "pred/fake", "score/real", "score/fake"):
        s = get(recent, n)
        if s is not None:
            out[n] = stat(tail(s[0], s[1], end, window))
    pf = out.get("pred/fake")
    out["d_ahead"] = bool(pf is not None and math.isfinite(pf["median"]) and pf["median"] < 0.1)
    return out


def quality_stalled(recent: Window, early: Window, th: dict[str, float], ctx: Context) -> Finding | None:
    """G's quality has stopped improving short of a good fit, or has fallen back from its best, while no
    other signature explains it (the losses can look entirely normal)."""
    ft = q.fit(recent, ctx)
    # A stall short of a good fit must span `stall_steps` (three times as long at a fair fit: small nets
    # climb in plateaus); a flat series at a good fit is convergence, and with no absolute measure a
    # plateau cannot be told from it, so only regressions count there.
    span = th["stall_steps"] * (th["fair_factor"] if ft.state == "fair" else 1.0)
    tr = q.trend(recent, ctx, {**th, "stall_steps": span})
    if tr.verdict not in ("stalled", "regressing"):
        return None
    if tr.verdict == "stalled":
        w = tr.evidence["window"]
        if ft.state not in ("bad", "fair") or w[1] - w[0] < 0.8 * span:
            return None
    if ctx.open & EXPLAINS_STALL:
        return None
    e = tr.evidence
    end = int(e["recent"]["step"])
    onset = int(e["best"]["step"]) if tr.verdict == "regressing" else int(e["window"][0])
    losses = _losses(recent, ctx, int(max(s[-1] for s, _ in recent.values() if s.size)), th["losses_window"])
    severity = "failing" if ft.state == "bad" else "warning"
    better = "lower" if e["better"] == "lower" else "higher"
    if tr.verdict == "regressing":
        head = (f"G's quality has regressed since step {ONSET}: {tr.metric} {e['recent']['value']:.3g} against its "
                f"best {e['best']['value']:.3g} ({better} is better)")
    else:
        head = (f"G's quality has stalled since step {ONSET}: {tr.metric} {e['recent']['value']:.3g} "
                f"({e['change_text']} across {e['span_evals']} evaluations; best {e['best']['value']:.3g} at step "
                f"{e['best']['step']})")
    tail_txt = f"; fit {ft.state}: {ft.describe()}" if ft.known else ""
    ld = losses.get("loss/d")
    calm = f", while loss/d sits at {ld['median']:.3g}" if ld else ""
    return Finding("quality_stalled", onset, end, head + calm + tail_txt,
                   {"metrics": [tr.metric] + [n for n in ft.readings if n != tr.metric],
                    "window": [onset, end], "trend": e, "verdict": tr.verdict,
                    "fit": {"state": ft.state, "readings": ft.readings}, "losses": losses,
                    "thresholds": dict(th)}, severity)
