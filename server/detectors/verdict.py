"""The learning verdict: is G improving, stalled or regressing, judged from its fit and quality measures.

"Healthy" only says no failure signature fired; this says whether G is getting closer to the data.
A pure function over a run's recent evaluations (the store reads them with a bounded query: the last
LOOKBACK_EVALS points of each measure), using the same trend and fit lines as the quality_stalled
detector (quality.py), so the run summary and the alerts never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ganscope.server.detectors import quality as q
from ganscope.server.detectors.catalog import thresholds_for
from ganscope.server.detectors.window import Context, Series

LOOKBACK_EVALS = 64  # evaluations of each measure the verdict reads (the engine keeps as many)
# Every series the verdict may read: the measures and the totals they are fractions of.
NAMES = tuple(m.name for m in q.MEASURES) + ("quality/modes_total",)


def learning(series: Mapping[str, Series], config: Mapping[str, Any] | None = None,
             kind: str = "job") -> dict[str, Any]:
    """{"verdict": "improving" | "stalled" | "regressing" | "unknown", "metric", "message", "evidence"}."""
    cfg = dict(config or {})
    overrides = cfg.get("detectors") if isinstance(cfg.get("detectors"), Mapping) else None
    ctx = Context.from_config(cfg, kind)
    ctx.quality = thresholds_for("quality_stalled", overrides)
    tr = q.trend(series, ctx, ctx.quality)
    ft = q.fit(series, ctx)
    evidence: dict[str, Any] = {"fit": {"state": ft.state, "readings": ft.readings}}
    if tr.metric is None:
        return {"verdict": "unknown", "metric": None, "evidence": evidence,
                "message": "No fit or quality measure is logged (toy/fit, toy/quality, quality/*), so whether G "
                           "is learning cannot be said; the alerts judge the losses only."}
    if tr.verdict == "unknown":
        return {"verdict": "unknown", "metric": tr.metric, "evidence": {**evidence, "evaluations": tr.evaluations},
                "message": f"{tr.evaluations} evaluation(s) of {tr.metric} after warm-up so far; "
                           f"{int(ctx.quality['min_evals'])} are needed to judge a trend."}
    e = tr.evidence
    evidence.update(trend=e)
    fit_txt = f" Fit: {ft.state} ({ft.describe()})." if ft.known else ""
    if tr.verdict == "improving":
        msg = (f"G is improving: {tr.metric} went {e['change_text']} "
               f"(now {e['recent']['value']:.3g}, first {e['first']['value']:.3g}).")
    elif tr.verdict == "regressing":
        msg = (f"G is regressing: {tr.metric} {e['recent']['value']:.3g} against its best {e['best']['value']:.3g} "
               f"at step {e['best']['step']} ({e['better']} is better).")
    elif ft.state == "good":
        msg = f"G has converged: {tr.metric} is flat at {e['recent']['value']:.3g}, at a good fit."
    else:
        msg = (f"G has stalled: {tr.metric} {e['recent']['value']:.3g} ({e['change_text']} across "
               f"{e['span_evals']} evaluations).")
    return {"verdict": tr.verdict, "metric": tr.metric, "message": msg + fit_txt, "evidence": evidence}
