"""What D's loss and outputs mean under the run's loss: its reduction, chance level and margins.

The BCE rules were written for the built-in trainer's `loss/d` = loss/d_real + loss/d_fake (2·ln 2 at
chance). Many scripts log the mean of the two terms instead (ln 2 at chance, PyTorch-GAN's examples);
hinge and Wasserstein critics have no probabilities at all. Rules ask here for the quantity they judge,
on one scale, with a note for the evidence saying how it was read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ganscope.server.detectors.catalog import LN4
from ganscope.server.detectors.window import Context, Series, Window, align, get

LN2 = math.log(2)
HINGE_CHANCE = 2.0  # hinge D loss of a D that outputs one constant in [−1, 1]: relu(1 − c) + relu(1 + c)
AGREE = 0.02  # |loss/d − combination of its terms| under 2% of its size: the logged loss is that combination


def reduction(recent: Window, ctx: Context) -> tuple[str | None, str]:
    """("sum" | "mean" | None, how it is known). Declared (or the trainer's sum) first; else inferred from
    loss/d against loss/d_real + loss/d_fake once they are logged together, and kept once decided."""
    if ctx.reduction is not None:
        return ctx.reduction, ("the built-in trainer logs the sum of the real and fake terms" if ctx.kind == "job"
                               else f"declared loss_d_reduction: {ctx.reduction}")
    hit = ctx.memo.get("reduction")
    if hit is not None:
        return hit
    ld, lr, lf = get(recent, "loss/d"), get(recent, "loss/d_real"), get(recent, "loss/d_fake")
    if ld is not None and lr is not None and lf is not None:
        steps, (l, r, f) = align(ld, lr, lf)
        ok = np.isfinite(l) & np.isfinite(r) & np.isfinite(f)
        if int(ok.sum()) >= 5:
            l, r, f = l[ok], r[ok], f[ok]
            size = float(np.median(np.abs(l))) + 1e-9
            e_sum = float(np.median(np.abs(l - (r + f))))
            e_mean = float(np.median(np.abs(l - 0.5 * (r + f))))
            for red, err, other in (("sum", e_sum, e_mean), ("mean", e_mean, e_sum)):
                if err < AGREE * size and err < other:
                    out = (red, f"inferred: loss/d equals the {red} of loss/d_real and loss/d_fake "
                                f"(median difference {err:.2g} over {int(ok.sum())} steps)")
                    ctx.memo["reduction"] = out
                    return out
    return None, ("not declared (loss_d_reduction), and loss/d_real + loss/d_fake do not show it: "
                  "loss/d is read as a sum, and at chance both 2·ln 2 (sum) and ln 2 (mean) are accepted")


def d_loss(recent: Window, ctx: Context) -> tuple[Series | None, dict[str, Any]]:
    """loss/d on the sum scale (a mean-reduced loss doubled), with a note on how it was read."""
    ld = get(recent, "loss/d")
    if ld is None:
        return None, {}
    red, how = reduction(recent, ctx)
    note = {"loss": ctx.loss or "not declared", "loss_d_reduction": red or "unknown", "how": how}
    if red == "mean":
        return (ld[0], 2.0 * ld[1]), note
    return ld, note


def chance_levels(recent: Window, ctx: Context, family: str) -> tuple[float, ...]:
    """D's loss at chance on the scale `d_loss` returns; both candidates when the reduction is unknown
    (d_loss leaves an unknown reduction as logged, so a mean-reduced loss sits at ln 2)."""
    red, _ = reduction(recent, ctx)
    base = LN4 if family == "bce" else HINGE_CHANCE
    return (base,) if red is not None else (base, base / 2)


def critic_gap(recent: Window) -> Series | None:
    """score/real − score/fake: how far apart D ranks real and fake (the Wasserstein estimate under
    WGAN); else −(loss/d_real + loss/d_fake), which is the same number under the WGAN losses."""
    sr, sf = get(recent, "score/real"), get(recent, "score/fake")
    if sr is not None and sf is not None:
        steps, (a, b) = align(sr, sf)
        return steps, a - b
    return None


def wasserstein_estimate(recent: Window) -> Series | None:
    gap = critic_gap(recent)
    if gap is not None:
        return gap
    lr, lf = get(recent, "loss/d_real"), get(recent, "loss/d_fake")
    if lr is not None and lf is not None:
        steps, (a, b) = align(lr, lf)
        return steps, -(a + b)
    return None
