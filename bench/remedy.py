"""Remedy efficacy: does relaunching a failing run with the remedy its alert proposes fix it?

For every FAILING run of bench/detect.py's labelled corpus (a run whose labelled symptom really showed
in its raw metrics: tests/scenarios.py's onsets), train it in-process as the corpus does, take the
remedy of the alert a user would act on (the first to be failing; else the first warning), relaunch
the same config and seed patched with that remedy's `config` (as "relaunch with this remedy" does),
and judge the relaunch by its raw measures (bench/remedy_judge.py: losses, D's outputs, gradients,
spread, toy fit; quality/* where logged), not by the detectors. Fixed = healthy at the end by those
measures AND no alert on the relaunch ever failing. A relaunch still failing gets the escalated
remedy once (its own first alert's remedy, which resumes the ladder from the config it was given).

Prints a table per remedied signature (the signature whose remedy was applied), every miss with why, and
last `remedy_efficacy <fraction>`: the first round, one relaunch with the remedy as proposed — what the
issue asks of a remedy. The line before it, `after_escalation`, counts runs fixed by either relaunch.

Usage: python -m bench.remedy [--seeds 0,1] [--quick-only] [--only NAME,...] [--jobs 2] [--steps-scale 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.remedy_judge import image_quality, problems  # noqa: E402
from ganscope.server.detectors.catalog import SEVERITY_RANK, remedy_for  # noqa: E402
from ganscope.server.detectors.engine import AlertState  # noqa: E402
from tests.scenarios import COMMON, DetectingSink, Metrics, Scenario  # noqa: E402


@dataclass
class Attempt:
    config: dict[str, Any]
    fired: dict[str, str] = field(default_factory=dict)  # signature -> worst severity
    problems: list[str] = field(default_factory=list)
    quality: str = ""
    alert: AlertState | None = None  # the alert whose remedy a user would apply next
    seconds: float = 0.0

    @property
    def failing_alerts(self) -> list[str]:
        return [s for s, sev in self.fired.items() if sev == "failing"]

    @property
    def fixed(self) -> bool:
        return not self.problems and not self.failing_alerts

    def why(self) -> str:
        return "; ".join(self.problems + [f"{s} alert failing" for s in self.failing_alerts]) or "-"


@dataclass
class Case:
    name: str
    seed: int
    expect: tuple[str, ...]
    provoked: bool = False
    original: Attempt | None = None
    remedy: dict[str, Any] | None = None
    first: Attempt | None = None
    remedy2: dict[str, Any] | None = None
    second: Attempt | None = None

    @property
    def signature(self) -> str:
        return self.original.alert.signature if self.original and self.original.alert else "(no alert)"


def pick(history: list[AlertState]) -> AlertState | None:
    """The alert a user acts on: the first to become failing, else the first opened."""
    failing = [a for a in history if "failing" in a.severities]
    return (failing or history or [None])[0]


def attempt(config: dict[str, Any]) -> tuple[Attempt, Metrics]:
    from ganscope.trainer.config import JobConfig
    from ganscope.trainer.loop import train

    cfg = JobConfig(**config)
    sink = DetectingSink(config=cfg.model_dump(mode="json"))
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as wd:
        train(cfg, sink, Path(wd))
    m = {n: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for n, (s, v) in sink.metrics.items()}
    worst: dict[str, str] = {}
    for a in sink.det.history:
        for sev in a.severities:
            if SEVERITY_RANK[sev] > SEVERITY_RANK[worst.get(a.signature, "healthy")]:
                worst[a.signature] = sev
    at = Attempt(config, worst, problems(m, config), image_quality(m), pick(sink.det.history),
                 time.perf_counter() - t)
    return at, m


def relaunch(config: dict[str, Any], remedy: dict[str, Any]) -> dict[str, Any]:
    return {**config, **remedy.get("config", {})}


def solve(sc: Scenario, seed: int, steps_scale: float = 1.0, escalate: bool = True) -> Case:
    """Original run, then the remedied relaunch, then (still failing) the escalated one."""
    import torch

    torch.set_num_threads(1)
    cfg = {**COMMON, **sc.config, "seed": seed}
    if steps_scale != 1.0:
        cfg["steps"] = max(20, int(cfg.get("steps", 100) * steps_scale))
    case = Case(sc.name, seed, sc.expect)
    case.original, m = attempt(cfg)
    special = dict(sc.other_onsets)
    case.provoked = any(special.get(s, sc.onset)(m) is not None for s in sc.expect)
    if not case.provoked or case.original.alert is None:
        return case
    a = case.original.alert
    case.remedy = a.remedy
    if not a.remedy.get("config"):
        return case
    case.first, _ = attempt(relaunch(cfg, a.remedy))
    if escalate and not case.first.fixed:
        nxt = case.first.alert
        # no alert on the relaunch (only raw symptoms): the original alert's ladder, resumed from the new config
        case.remedy2 = nxt.remedy if nxt is not None else remedy_for(a.signature, case.first.config, a.evidence)
        if case.remedy2.get("config"):
            case.second, _ = attempt(relaunch(case.first.config, case.remedy2))
    return case


_SCENARIOS: dict[str, Scenario] = {}  # filled before the pool forks: onsets are closures, which do not pickle


def _solve(args: tuple[str, int, float, bool]) -> Case:
    name, seed, scale, escalate = args
    return solve(_SCENARIOS[name], seed, scale, escalate)


def fmt_changes(remedy: dict[str, Any] | None) -> str:
    if not remedy:
        return "-"
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in remedy.get("config", {}).items() if k != "remedy_of") or "(words only)"


def report(cases: list[Case]) -> tuple[float, float, int]:
    """Prints the table and every miss; returns (first-round efficacy, after escalation, remedied runs)."""
    rows: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        if c.provoked:
            rows[c.signature].append(c)
    print(f"\n{'signature':20s} {'runs':>5s} {'fixed':>6s} {'+esc':>5s}  still failing (run: why)")
    n = fixed1 = fixed2 = 0
    for sig in sorted(rows):
        cs = rows[sig]
        f1 = [c for c in cs if c.first is not None and c.first.fixed]
        f2 = [c for c in cs if c in f1 or (c.second is not None and c.second.fixed)]
        n, fixed1, fixed2 = n + len(cs), fixed1 + len(f1), fixed2 + len(f2)
        left = [c for c in cs if c not in f2]
        why = " | ".join(f"{c.name}/s{c.seed}: {miss(c)}" for c in left) or "-"
        print(f"{sig:20s} {len(cs):5d} {len(f1):6d} {len(f2):5d}  {why}")
    print("\nper run: alert -> remedy -> first relaunch [-> escalated remedy -> second]")
    for c in cases:
        if not c.provoked:
            print(f"  {c.name}/s{c.seed}: symptom not provoked this time (not counted)")
            continue
        was = "; ".join(c.original.problems) if c.original and c.original.problems else "raw measures fine"
        line = f"  {c.name}/s{c.seed} ({was}): {c.signature} -> {fmt_changes(c.remedy)} -> "
        line += ("fixed" if c.first and c.first.fixed else (c.first.why() if c.first else "not relaunched"))
        if c.second is not None:
            line += f" -> {fmt_changes(c.remedy2)} -> " + ("fixed" if c.second.fixed else c.second.why())
        q = c.first.quality if c.first else ""
        print(line + (f"  [{q}]" if q else ""))
    return fixed1 / max(n, 1), fixed2 / max(n, 1), n


def miss(c: Case) -> str:
    if c.original is None or c.original.alert is None:
        return "no alert fired, so no remedy was proposed"
    if c.first is None:
        return "the remedy has no config change for this trainer"
    return c.first.why() + (f" (after escalation: {c.second.why()})" if c.second and not c.second.fixed else "")


def failing_corpus(seeds: list[int], quick_only: bool, only: set[str]) -> list[tuple[Scenario, int]]:
    from bench.detect import corpus

    return [(sc, s) for sc, s in corpus(seeds, quick_only) if sc.expect and (not only or sc.name in only)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1",
                    help="seeds of the quick corpus (extras run with the first), as bench/detect.py")
    ap.add_argument("--quick-only", action="store_true", help="only tests/scenarios.py's QUICK recipes")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained in parallel (one process each)")
    ap.add_argument("--steps-scale", type=float, default=1.0, help="scale every run's steps (tests: tiny runs)")
    ap.add_argument("--no-escalate", action="store_true", help="first round only")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    jobs = failing_corpus(seeds, args.quick_only, {s for s in args.only.split(",") if s})
    t0 = time.perf_counter()
    print(f"{len(jobs)} failing runs of the labelled corpus, {args.jobs} at a time", flush=True)
    _SCENARIOS.update({sc.name: sc for sc, _ in jobs})
    work = [(sc.name, s, args.steps_scale, not args.no_escalate) for sc, s in jobs]
    if args.jobs > 1:
        with get_context("fork").Pool(args.jobs, maxtasksperchild=4) as pool:
            cases = []
            for c in pool.imap(_solve, work):
                cases.append(c)
                print(f"  done {c.name}/s{c.seed} ({time.perf_counter() - t0:.0f}s)", flush=True)
    else:
        cases = [_solve(w) for w in work]
    eff1, eff2, n = report(cases)
    print(f"\n{n} failing runs remedied; wall {time.perf_counter() - t0:.0f}s")
    print(f"after_escalation {eff2:.3f}")
    print(f"remedy_efficacy {eff1:.3f}")


if __name__ == "__main__":
    main()
