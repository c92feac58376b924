"""Raw judgement of a finished run for bench/remedy.py: is it healthy at the end, by its own measures?

Independent of the detectors: every check reads the raw series the trainer logged (losses, D's
outputs, gradient and update norms, sample spread, toy/quality and toy/modes) or the nets the config
builds (init spread, parameter counts), with lines taken from tests/scenarios.py's labels where they
exist. "At the end" = the run's last quarter (at least 50 steps): a remedied run may pass through a
transient, what matters is where it is when it stops.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tests.scenarios import Metrics, local_level

LN4 = 2 * math.log(2)  # loss/d of a D at chance under BCE
FIT_FROM = 500  # toy fit is judged on runs this long or longer: tests/scenarios.py's fit_stalled starts there


def _tail(m: Metrics, name: str, last: int) -> tuple[np.ndarray, np.ndarray] | None:
    if name not in m or not m[name][0].size:
        return None
    s, v = m[name]
    end = int(s.max())
    keep = s >= end - max(50, (end + 1) // 4) if last < 0 else s >= end - last
    return s[keep], v[keep]


def _frac(cond: np.ndarray) -> float:
    return float(cond.mean()) if cond.size else 0.0


def _first_layer(m: Metrics, net: str) -> str | None:
    names = sorted((n for n in m if n.startswith(f"grad/{net}/") and "bn" not in n), key=lambda n: min(m[n][0],
                                                                                                 default=0))
    firsts = [n for n in names if n.split("/")[-1] in ("fc1", "convT1", "conv1")]
    return firsts[0] if firsts else (names[0] if names else None)


def init_spread(cfg: dict[str, Any]) -> float:
    """The std of the conv/linear weights the config's nets start from (built as the trainer builds them)."""
    import torch

    from ganscope.trainer.config import JobConfig
    from ganscope.trainer.models import build_models

    g, d = build_models(JobConfig(**cfg))
    ws = [p.detach().flatten() for net in (g, d) for n, p in net.named_parameters() if n.endswith("weight")
          and p.dim() >= 2]
    return float(torch.cat(ws).std())


def problems(m: Metrics, cfg: dict[str, Any]) -> list[str]:
    """What is unhealthy at the end of a run, in words; [] for a healthy run."""
    out: list[str] = []
    bad = [n for n, (s, v) in m.items() if v.size and not np.isfinite(v).all()]
    if bad:
        out.append(f"non-finite {bad[0]}")
        return out  # everything else reads garbage
    toy = "toy/quality" in m
    grads = [n for n in m if n.startswith("grad/")]
    big = [n for n in grads if (t := _tail(m, n, -1)) is not None and np.median(t[1]) > 100]
    if big:
        out.append(f"gradient norm > 100 ({big[0]})")
    ld, pf = _tail(m, "loss/d", -1), _tail(m, "pred/fake", -1)
    if ld is not None and pf is not None and ld[1].size == pf[1].size:
        if _frac((ld[1] < 0.05) & (pf[1] < 0.02)) > 0.5:
            out.append("D wins (loss/d < 0.05, D(G(z)) < 0.02)")
    first = _first_layer(m, "g")
    if first and (t := _tail(m, first, -1)) is not None and _frac(t[1] == 0) > 0.5:
        out.append(f"no gradient reaches G ({first} = 0)")
    minimax = cfg.get("loss") == "minimax"  # under the other losses D(G(z)) does not scale G's gradient
    if minimax and (t := _tail(m, "pred/fake_g", -1)) is not None and _frac(t[1] < 0.01) > 0.5:
        out.append("G's minimax gradient gone (D(G(z)) < 0.01 in G's step)")
    upd = [n for n in m if n.startswith("update/d/")]
    # ~1e-3 is a healthy step (docs/metrics.md); a hundredth of that on every layer is a D that does not move
    if upd and all((t := _tail(m, n, -1)) is not None and np.median(t[1]) < 1e-5 for n in upd):
        out.append("D frozen (update/d < 1e-5)")
    if (t := _tail(m, "loss/d", 200)) is not None and t[0].size >= 100:
        s, v = t
        at = s[(v - local_level(v) > 1.0)]
        if any(np.sum((at >= k) & (at < k + 50)) >= 3 for k in at):
            out.append("loss/d spikes by > 1 nat, recurring")
    if (t := _tail(m, "sample/diversity", -1)) is not None and int(t[0].max()) >= 150:
        level = float(np.median(t[1][-11:]))
        if level < 0.01:
            out.append(f"collapsed: sample spread {level:.3g} of the data's")
    if toy:
        out += _toy_fit(m, cfg)
    out += _measured_fit(m)
    pg, pd = m.get("model/params_g"), m.get("model/params_d")
    if pg is not None and pd is not None and pg[1].size and pd[1].size:
        ratio = max(pg[1][0], pd[1][0]) / max(1.0, min(pg[1][0], pd[1][0]))
        if ratio > 30:  # DCGAN's own equal-width nets are ~10x apart (G's first layer reads nz = 100)
            out.append(f"nets {ratio:.0f}× apart in size")
    spread = init_spread(cfg)
    if spread > 0.2:
        out.append(f"weights start at std {spread:.2g} (DCGAN: 0.02)")
    return out


def _toy_fit(m: Metrics, cfg: dict[str, Any]) -> list[str]:
    s, q = m["toy/quality"]
    ms, modes = m.get("toy/modes", (s, np.zeros_like(q)))
    end = int(s.max()) if s.size else 0
    out: list[str] = []
    level = float(np.median(q[-3:])) if q.size else 0.0
    total = {"ring8": 8, "grid25": 25, "bimodal1d": 2, "trimodal1d": 3, "gauss1d": 1}.get(str(cfg.get("dataset")))
    mode_level = float(np.median(modes[-3:])) if modes.size else 0.0
    # tests/scenarios.py's collapse label asks quality >= 0.5; healthy asks more: a third of G's samples on at
    # most half the modes is already a collapse (1 of 2 modes at quality 0.47 was what a calm-D relaunch gave)
    if total and total > 1 and end >= 150 and level >= 0.3 and mode_level <= total // 2:
        out.append(f"collapsed on {mode_level:g} of {total} modes (quality {level:.2f})")
    if end >= FIT_FROM:
        best = float(np.max([np.median(q[max(0, i - 2):i + 1]) for i in range(q.size) if s[i] >= 200],
                            initial=-1.0))
        if level < 0.2:
            out.append(f"no fit: toy/quality {level:.2f} at the end (best {max(best, level):.2f})")
        elif level < best - 0.15:
            out.append(f"fit regressed: toy/quality {level:.2f} at the end, {best:.2f} at best")
    return out


def _measured_fit(m: Metrics) -> list[str]:
    """toy/fit and the image quality/* measures, where the trainer logs them: the last three evaluations'
    median past the measure's documented bad line (docs/metrics.md; the lines live beside the measures in
    server/detectors/quality.py, which the rules read too — only the lines are shared, not the rules).
    Measures with no line (FID, KID: extractor-dependent) are shown, not judged."""
    from ganscope.server.detectors.quality import MEASURES

    out: list[str] = []
    for meas in MEASURES:
        if meas.bad is None or meas.name == "toy/modes" or meas.name == "toy/quality" or meas.name not in m:
            continue  # the toy mode counts are judged above, against the toy set's own mode count
        s, v = m[meas.name]
        if meas.total and meas.total in m and m[meas.total][1].size:
            v = v / np.maximum(m[meas.total][1][-1], 1.0)
        if v.size >= 3 and meas.is_bad(x := float(np.median(v[-3:]))):
            out.append(f"{meas.name} {x:.3g} at the end (bad line {meas.bad:g})")
    return out


def image_quality(m: Metrics) -> str:
    """The image-quality measures' last values, when the trainer logs them (quality/*); '' otherwise."""
    got = [f"{n.split('/')[1]} {m[n][1][-1]:.3g}" for n in sorted(m) if n.startswith("quality/") and m[n][1].size]
    return ", ".join(got)
