"""Remedies tailored to a run: what to change, to what, why, and on whose authority.

Each signature has a ladder of remedies, first line first (remedies_ladders.py). A rung's changes are
judged against the run's own config: a change to a value the run already has is "in place", never
proposed; a rung whose changes are all in place has been tried (by a relaunch with an earlier remedy,
or by the user), so the next rung is proposed — escalation needs no memory beyond the config itself. A
config may also say which remedy it came from (`remedy_of`: {"signature", "level"}) where JobConfig has
that field; then the ladder resumes after that rung.

Concrete changes (the alert's `config`, applied by "relaunch with this remedy") use JobConfig knobs
only, and only those this version of JobConfig has; for SDK runs only the knobs the user declared. The
rest is said in general terms in the text (`advice`): what to change in one's own script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ganscope.server.detectors.catalog import BY_ID
from ganscope.server.detectors.sources import SOURCES
from ganscope.trainer.config import JobConfig

FIELDS = JobConfig.model_fields
MISSING = object()


@dataclass(frozen=True)
class Change:
    knob: str
    value: Any
    why: str  # why this value for this run
    source: str  # SOURCES key
    general: str  # the same advice in words, for a run that has no such knob
    only_without: str | None = None  # a fallback: proposed only when this knob does not exist
    requires: str | None = None  # a companion change: kept only when the change to this knob is made


def cite(key: str) -> str:
    """'Radford et al. 2016' from a full reference."""
    ref = SOURCES[key]
    if key == "measured":
        return "measured on ganscope's corpus"
    m = re.match(r"([^,(]+?),[^()]*?\((\d{4})\)", ref)
    if not m:
        return ref.split(".")[0]
    many = ref.count(".,") + ref.count("., ") > 1 or " et al" in ref or ref.count(",") > 3
    return f"{m.group(1).strip()}{' et al.' if many else ''} {m.group(2)}"


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)


def current(cfg: dict[str, Any], knob: str, kind: str) -> Any:
    """The run's value of a knob: declared, or (worker jobs) JobConfig's default; MISSING when unknown."""
    if knob in cfg:
        return cfg[knob]
    if kind == "job" and knob in FIELDS:
        return FIELDS[knob].default
    return MISSING


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)), abs(float(b)))
    return a == b


def _valid(cfg: dict[str, Any], diff: dict[str, Any], kind: str) -> dict[str, Any]:
    """The largest part of `diff` JobConfig accepts (with the rest of the run's config for worker jobs).

    A field's own error drops that field; a combination refused by a model check (label smoothing under a
    hinge loss, minibatch discrimination under WGAN-GP) drops changes one at a time, last proposed first."""
    base = {k: v for k, v in cfg.items() if k in FIELDS} if kind == "job" else {}

    def refused(d: dict[str, Any]) -> set[str] | None:
        try:
            JobConfig.model_validate({**base, **d})
            return None
        except ValidationError as exc:
            return {str(e["loc"][0]) for e in exc.errors() if e.get("loc")} & set(d)

    while diff:
        bad = refused(diff)
        if bad is None:
            return diff
        if bad:
            diff = {k: v for k, v in diff.items() if k not in bad}
            continue
        for k in reversed(list(diff)):
            if refused({x: v for x, v in diff.items() if x != k}) is None:
                return {x: v for x, v in diff.items() if x != k}
        return {}
    return diff


def _rung(cfg: dict[str, Any], changes: list[Change], kind: str) -> tuple[list[tuple[Change, Any]], list[Change]]:
    """(concrete changes with the run's current value, advice in words) of one rung; in-place ones dropped."""
    concrete: list[tuple[Change, Any]] = []
    advice: list[Change] = []
    for ch in changes:
        if ch.only_without is not None and ch.only_without in FIELDS:
            continue  # a fallback for a knob this trainer has
        cur = current(cfg, ch.knob, kind)
        if cur is not MISSING and _same(cur, ch.value):
            continue  # already in place: never propose what the run has
        if ch.knob in FIELDS and cur is not MISSING:
            concrete.append((ch, cur))
        else:
            advice.append(ch)
    return concrete, advice


def _unique(changes: list[Change]) -> list[Change]:
    seen: set[str] = set()
    out = []
    for ch in changes:
        if ch.general not in seen:
            seen.add(ch.general)
            out.append(ch)
    return out


def tailor(sig_id: str, config: dict[str, Any] | None, evidence: dict[str, Any] | None = None,
           kind: str = "job") -> dict[str, Any]:
    """{"text", "config", "sources", "level", "changes": [...], "advice": [...]} for one alert."""
    from ganscope.server.detectors.remedies_ladders import ladder

    sig = BY_ID[sig_id]
    cfg = dict(config or {})
    rungs = ladder(sig_id, cfg, evidence or {}, kind)
    start = 0
    prior = cfg.get("remedy_of")
    if isinstance(prior, dict) and prior.get("signature") == sig_id:
        try:
            start = max(0, min(int(prior.get("level", 0)), len(rungs) - 1))  # resume after the rung applied
        except (TypeError, ValueError):
            start = 0
    chosen = None
    beyond: list[Change] = []  # advice from rungs a worker job cannot apply (knobs this trainer lacks)
    for i in range(start, len(rungs)):
        concrete, advice = _rung(cfg, rungs[i], kind)
        diff = _valid(cfg, {ch.knob: ch.value for ch, _ in concrete}, kind)
        # a companion whose main change did not survive goes too (label smoothing off without the hinge loss)
        orphans = {ch.knob for ch, _ in concrete if ch.requires is not None and ch.requires not in diff}
        diff = {k: v for k, v in diff.items() if k not in orphans}
        advice += [ch for ch, _ in concrete if ch.knob not in diff and ch.knob not in orphans]
        advice = [ch for ch in advice if ch.requires is None or ch.requires in diff]
        concrete = [(ch, cur) for ch, cur in concrete if ch.knob in diff]
        if concrete or (advice and kind == "sdk"):
            chosen = (i, concrete, advice, diff)
            break
        beyond += advice
    if chosen is None:
        text = (f"{sig.remedy_text} Every remedy this catalog proposes for {sig_id} as a config change is already "
                "in this run's config" + ("; not config changes this trainer accepts here: " + "; ".join(
                    f"{ch.general} ({cite(ch.source)})" for ch in _unique(beyond)) if beyond else "") + ".")
        return {"text": text, "config": {}, "sources": [SOURCES[s] for s in sig.sources], "level": len(rungs),
                "changes": [], "advice": [{"knob": ch.knob, "text": ch.general, "source": SOURCES[ch.source]}
                                          for ch in _unique(beyond)]}
    level, concrete, advice, diff = chosen
    advice = _unique(beyond + advice)
    if diff and "remedy_of" in FIELDS and kind == "job":  # SDK runs cannot declare remedy_of
        diff["remedy_of"] = {"signature": sig_id, "level": level + 1}
    parts = []
    if level > 0:
        parts.append(f"The first-line remedy for {sig_id} is already in this run's config (or needs knobs this "
                     "trainer lacks), so this goes a step further.")
    if concrete:
        parts.append("Change " + "; ".join(f"{ch.knob} {fmt(cur)} → {fmt(ch.value)}: {ch.why} ({cite(ch.source)})"
                                           for ch, cur in concrete) + ".")
    if advice:
        lead = "In your script: " if kind == "sdk" else "Not a config change this trainer accepts here, but: "
        parts.append(lead + "; ".join(f"{ch.general} ({cite(ch.source)})" for ch in advice) + ".")
    used = list(dict.fromkeys([ch.source for ch, _ in concrete] + [ch.source for ch in advice]))
    return {
        "text": " ".join(parts), "config": diff, "level": level + 1,
        "sources": [SOURCES[s] for s in used] or [SOURCES[s] for s in sig.sources],
        "changes": [{"knob": ch.knob, "from": cur, "to": ch.value, "why": ch.why, "source": SOURCES[ch.source]}
                    for ch, cur in concrete],
        "advice": [{"knob": ch.knob, "text": ch.general, "source": SOURCES[ch.source]} for ch in advice],
    }
