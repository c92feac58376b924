"""Per-run detector state: rolling metric windows, persistence, alert open / update / close.

`RunDetector` is the pure evaluation path — no database, no clock. Ingest (through
`hook.process_ingest`) and the scenario corpus (tests, bench/detect.py) feed it the
same batches {name: (steps, values)} and get back the alert changes to persist.

Windows stay in memory: the trailing KEEP_STEPS steps of every metric plus the run's
first EARLY_STEPS steps (baselines for "against its own early level" and step-0 weights);
sparse evaluation series (quality/*, toy/*) keep their last SPARSE_POINTS points instead,
however many steps apart they are. After a server restart the hook rebuilds them from the
store (`add`, then judging resumes).

An alert has one onset: its first_step is set when it opens and never moves later; every
update re-tells the rule's finding from that onset (Finding.at_onset), so the message, the
API's first_step and the evidence window the charts shade agree.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ganscope.server.detectors.catalog import BY_ID, SEVERITY_RANK, thresholds_for
from ganscope.server.detectors.quality import PREFIXES as SPARSE
from ganscope.server.detectors.remedies import tailor
from ganscope.server.detectors.rules import RULES, Context, Finding, Series

KEEP_STEPS = 400  # > the largest rule window (oscillation: 200) with room for the onset search
FEED_SPAN = KEEP_STEPS // 2  # the most steps judged at once: a rule's window plus room for its onset
SPARSE_POINTS = 64  # evaluations kept per quality/toy series: trends read the last few dozen at most
TRIM_SLACK = 200  # the windows may hold up to this many steps more than KEEP_STEPS between trims
EARLY_STEPS = 100  # the run's first steps: early gradient levels, step-0 weights, parameter counts
# Rules judged on the early window only: once it is complete their verdict cannot change.
STATIC = ("poor_init", "capacity_imbalance")
# Steps between two runs of a rule. Flushes bring >= 20 steps in the common case, so this only thins out
# the small, time-driven flushes of slow runs; oscillation's 200-step verdict moves slowly.
CADENCE = {"d_overpowering": 20, "vanishing_g_grad": 20, "exploding_grad": 10, "mode_collapse": 20,
           "oscillation": 50, "d_not_learning": 20, "quality_stalled": 20}
# Series the windowed rules read; of every other series (weights, G's updates, lr, perf...) the recent
# window keeps only non-finite points, for the nonfinite rule — a third of the merging work.
WATCHED = ("loss/", "pred/", "score/", "grad/", "update/d/", "sample/", "toy/", "quality/")


@dataclass
class AlertState:
    signature: str
    severity: str
    first_step: int
    last_step: int
    message: str
    evidence: dict[str, Any]
    remedy: dict[str, Any]
    status: str = "open"
    id: int | None = None  # database id once persisted
    opened_step: int = -1  # the latest ingested step when it opened: detection time, for the corpus
    severities: list[str] = field(default_factory=list)  # every severity it has had, in order (the corpus)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "signature": self.signature, "severity": self.severity, "status": self.status,
                "first_step": self.first_step, "last_step": self.last_step, "message": self.message,
                "evidence": self.evidence, "remedy": self.remedy}


@dataclass
class Change:
    kind: str  # "open" | "update" | "close"
    alert: AlertState
    escalated: bool = False  # an update that made it failing (on_failure: stop acts on it as on an opening)


def _merge(old: Series | None, s: np.ndarray, v: np.ndarray) -> Series:
    """Append points, keeping steps increasing and the first value of a repeated step (as the store does).

    Batches arrive with increasing steps (the store's accepted points, the trainer's flushes), so the
    common case is two comparisons and two concatenations; anything else takes the sorting path.
    """
    if old is None or old[0].size == 0:
        if s.size > 1 and not bool(np.all(s[1:] > s[:-1])):
            s, idx = np.unique(s, return_index=True)
            v = v[idx]
        return s, v
    os_, ov = old
    if s[0] > os_[-1] and (s.size < 2 or bool((s[1:] > s[:-1]).all())):
        return np.concatenate((os_, s)), np.concatenate((ov, v))
    all_s = np.concatenate([os_, s])
    all_v = np.concatenate([ov, v])
    uniq, idx = np.unique(all_s, return_index=True)  # first occurrence: stored points win over replays
    return uniq, all_v[idx]


@dataclass
class RunDetector:
    """Detector state of one run. `feed` a batch, get the alert changes."""

    config: Mapping[str, Any] | None = None
    alerts: Iterable[AlertState] = ()
    kind: str = "job"  # "job" | "sdk": an SDK run's config holds only what its user declared
    recent: dict[str, Series] = field(default_factory=dict, init=False)
    early: dict[str, Series] = field(default_factory=dict, init=False)
    origin: int | None = field(default=None, init=False)  # the run's first step
    step: int = field(default=-1, init=False)
    open: dict[str, AlertState] = field(default_factory=dict, init=False)
    history: list[AlertState] = field(default_factory=list, init=False)  # every alert ever opened here
    lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _static: dict[str, Finding | None] = field(default_factory=dict, init=False, repr=False)
    _trimmed: int = field(default=-(10**18), init=False, repr=False)
    _bad_step: int | None = field(default=None, init=False, repr=False)  # latest step with a NaN/Inf
    _judged: dict[str, int] = field(default_factory=dict, init=False, repr=False)  # rule -> step judged at
    _watched: dict[str, bool] = field(default_factory=dict, init=False, repr=False)  # name -> read by a rule
    # Ingest's coalescing (hook.py): batches waiting to be judged, and when the run was last judged.
    queue: list[Mapping[str, Series]] = field(default_factory=list, init=False, repr=False)
    queue_finite: bool = field(default=True, init=False, repr=False)  # no NaN/Inf among the queued batches
    judged_at: float = field(default=float("-inf"), init=False, repr=False)

    def __post_init__(self) -> None:
        self.config = dict(self.config or {})
        self.ctx = Context.from_config(self.config, self.kind)
        overrides = self.config.get("detectors") or {}
        if not isinstance(overrides, Mapping):
            overrides = {}
        self.th = {sig: thresholds_for(sig, overrides) for sig in RULES}
        self.ctx.quality = self.th["quality_stalled"]  # every quality trend reads the same (overridable) lines
        for a in self.alerts:
            if a.status == "open":
                self.open[a.signature] = a
                self.history.append(a)
        self.alerts = ()

    # --- windows ------------------------------------------------------------------------------
    def relevant(self, batch: Mapping[str, Series], finite: bool) -> Mapping[str, Series]:
        """What the rules can still use of an ingested batch. Ingest queues only this, so weights, G's
        updates, lr and perf series (half a DCGAN run's names) cost nothing more once the early-window
        rules' verdicts are final: no other rule reads them unless they are non-finite."""
        if not finite or len(self._static) < len(STATIC):
            return batch
        watched = self._watched
        keep = {}
        for name, sv in batch.items():
            w = watched.get(name)
            if w is None:
                w = watched[name] = name.startswith(WATCHED)
            if w:
                keep[name] = sv
        return keep

    def add(self, series: Mapping[str, tuple[Any, Any]], origin: int | None = None, finite: bool | None = None) -> None:
        """Merge points into the windows without judging (also used to rebuild after a restart).

        `finite`: the caller already knows whether the batch holds a NaN/Inf (ingest's store counts them).
        """
        batch = {name: (s if type(s) is np.ndarray and s.dtype == np.int64 else np.asarray(s, dtype=np.int64),
                        v if type(v) is np.ndarray and v.dtype == np.float64 else np.asarray(v, dtype=np.float64))
                 for name, (s, v) in series.items() if len(s)}  # ingest hands numpy arrays already
        if not batch:
            return
        if self.origin is None:
            self.origin = origin if origin is not None else min(int(s[0]) for s, _ in batch.values())
        self.step = max(self.step, max(int(s[-1]) for s, _ in batch.values()))
        early_end = self.origin + EARLY_STEPS
        if min(int(s[0]) for s, _ in batch.values()) < early_end:
            for name, (s, v) in batch.items():
                if s[0] < early_end:
                    e = s < early_end
                    self.early[name] = _merge(self.early.get(name), s[e], v[e])
        # One finiteness check over the whole batch; of series no windowed rule reads, keep only their
        # NaN/Inf points (the nonfinite rule's evidence).
        if finite is None:
            finite = bool(np.isfinite(np.concatenate([v for _, v in batch.values()])).all())
        if not finite:
            for name, (s, v) in batch.items():
                bad = ~np.isfinite(v)
                if bad.any():
                    self._bad_step = max(self._bad_step or -1, int(s[bad][-1]))
                    if not name.startswith(WATCHED):
                        self.recent[name] = _merge(self.recent.get(name), s[bad], v[bad])
        # Series logged together (a probe row, the loss row) share their steps: merge the steps once per
        # group and share the array, which also lets the rules' `align` see identical steps by identity.
        shared: dict[tuple[int, int, int, int], tuple[np.ndarray, np.ndarray]] = {}  # key -> (batch, merged)
        for name in batch:
            if not name.startswith(WATCHED):
                continue
            s, v = batch[name]
            old = self.recent.get(name)
            key = (id(old[0]) if old is not None else 0, s.size, int(s[0]), int(s[-1]))
            hit = shared.get(key)
            if hit is not None and not (hit[0] != s).any():
                # Same old steps, same new steps: the merged steps are the group's; only values to append.
                self.recent[name] = (hit[1], np.concatenate((old[1], v)) if old is not None else v)
                continue
            merged = _merge(old, s, v)
            if old is None or merged[0].size == old[0].size + s.size:  # a plain append: shareable
                shared[key] = (s, merged[0])
            self.recent[name] = merged
        # Trim in bulk, once the windows have grown TRIM_SLACK past what the rules read (amortised cost).
        cut = self.step - KEEP_STEPS
        if cut > self._trimmed + TRIM_SLACK:
            views: dict[int, tuple[np.ndarray, int]] = {}  # shared steps stay shared after the trim
            for name, (rs, rv) in self.recent.items():
                if name.startswith(SPARSE):
                    if rs.size > SPARSE_POINTS:  # evaluations: the last few dozen, however old
                        self.recent[name] = (rs[-SPARSE_POINTS:], rv[-SPARSE_POINTS:])
                    continue
                if rs.size and rs[0] <= cut:
                    if id(rs) not in views:
                        i = int(np.searchsorted(rs, cut, side="right"))
                        views[id(rs)] = (rs[i:], i)
                    trimmed, i = views[id(rs)]
                    self.recent[name] = (trimmed, rv[i:])
            self._trimmed = cut

    # --- judging ------------------------------------------------------------------------------
    def feed(self, series: Mapping[str, tuple[Any, Any]], finite: bool | None = None) -> list[Change]:
        """One ingested batch: merge it, run the rules that are due, return the alert changes.

        A batch spanning more steps than the rules' windows can hold (a spool's backlog, or several
        batches queued between two judgements) is judged in slices of FEED_SPAN steps, so an onset early
        in it is seen while it is still inside the kept window, as it would have been had it come live."""
        lo, hi = _span(series)
        if hi - lo < FEED_SPAN:
            self.add(series, finite=finite)
            return self.evaluate()
        changes: list[Change] = []
        for start in range(lo, hi + 1, FEED_SPAN):
            part = {}
            for name, (s, v) in series.items():
                s, v = np.asarray(s), np.asarray(v)
                keep = (s >= start) & (s < start + FEED_SPAN)
                if keep.any():
                    part[name] = (s[keep], v[keep])
            if part:
                self.add(part, finite=finite)
                changes.extend(self.evaluate())
        return changes

    def _due(self, sig: str) -> bool:
        """Is a rule worth running now? Judging is most of the detectors' cost, so a rule runs when its
        input can have changed its verdict: nonfinite only near a NaN/Inf (or to close its alert); the
        others once CADENCE[sig] steps have arrived since they last ran (every batch of a normal flush)."""
        if sig == "nonfinite":
            return sig in self.open or (self._bad_step is not None
                                        and self.step - self._bad_step < self.th[sig]["clear_steps"])
        last = self._judged.get(sig)
        if last is not None and self.step - last < CADENCE.get(sig, 1):
            return False
        self._judged[sig] = self.step
        return True

    def _run(self, sig: str) -> Finding | None:
        if sig in STATIC and sig in self._static:
            return self._static[sig]
        self.ctx.open = frozenset(self.open)  # rules with hysteresis or deference read what is open
        f = RULES[sig](self.recent, self.early, self.th[sig], self.ctx)
        if sig in STATIC and self.origin is not None and self.step >= self.origin + EARLY_STEPS:
            self._static[sig] = f  # the early window is complete: the verdict is final
        return f

    def evaluate(self) -> list[Change]:
        changes: list[Change] = []
        if self.step < 0:
            return changes
        for sig in RULES:
            if not self._due(sig):
                continue
            f = self._run(sig)
            cur = self.open.get(sig)
            if f is not None:
                sev = f.severity or BY_ID[sig].severity
                if cur is None:
                    a = AlertState(sig, sev, f.first_step, f.last_step, f.message, f.evidence,
                                   tailor(sig, dict(self.config or {}), f.evidence, self.kind),
                                   opened_step=self.step, severities=[sev])
                    self.open[sig] = a
                    self.history.append(a)
                    changes.append(Change("open", a))
                elif f.last_step > cur.last_step or sev != cur.severity:
                    # One onset per alert: never later than when it opened; the rule's finding is told from it.
                    told = f.at_onset(min(cur.first_step, f.first_step))
                    escalated = sev == "failing" and cur.severity != "failing"
                    cur.first_step, cur.last_step = told.first_step, max(cur.last_step, told.last_step)
                    cur.message, cur.evidence = told.message, told.evidence
                    if "window" in cur.evidence:
                        cur.evidence["window"] = [cur.first_step, cur.last_step]
                    if sev != cur.severity:
                        cur.severities.append(sev)
                    cur.severity = sev
                    # the remedy follows the evidence the alert now shows: a D at chance whose fit measures later
                    # show G on one mode is told about the collapse too (bench/remedy.py's bimodal_collapse_calm_d)
                    cur.remedy = tailor(sig, dict(self.config or {}), cur.evidence, self.kind)
                    changes.append(Change("update", cur, escalated))
            elif cur is not None and self._recovered(sig, cur):
                cur.status = "closed"
                del self.open[sig]
                changes.append(Change("close", cur))
        return changes

    def _recovered(self, sig: str, a: AlertState) -> bool:
        """Close only after the rule stayed quiet as long as its persistence window (hysteresis)."""
        if sig in STATIC:
            return True
        quiet = 0.0 if sig == "nonfinite" else self.th[sig].get("window", 0.0)
        return self.step - a.last_step >= quiet

    @property
    def health(self) -> str:
        worst = max((SEVERITY_RANK[a.severity] for a in self.open.values()), default=0)
        return next(k for k, v in SEVERITY_RANK.items() if v == worst)

    def fired(self) -> dict[str, int]:
        """{signature: the step at which it was first flagged} — for the corpus and the bench."""
        out: dict[str, int] = {}
        for a in self.history:
            out.setdefault(a.signature, a.opened_step)
        return out


class Engine:
    """RunDetectors of the runs this process has seen, least recently fed evicted beyond `capacity`.

    An evicted run that ingests again is rebuilt from the store, as after a restart.
    """

    def __init__(self, capacity: int = 64) -> None:
        self._runs: OrderedDict[int, RunDetector] = OrderedDict()
        self._lock = threading.Lock()
        self.capacity = capacity

    def get(self, run_id: int) -> RunDetector | None:
        with self._lock:
            det = self._runs.get(run_id)
            if det is not None:
                self._runs.move_to_end(run_id)
            return det

    def put(self, run_id: int, det: RunDetector) -> RunDetector:
        with self._lock:
            det = self._runs.setdefault(run_id, det)
            while len(self._runs) > self.capacity:
                self._runs.popitem(last=False)
            return det

    def items(self) -> list[tuple[int, RunDetector]]:
        with self._lock:
            return list(self._runs.items())

    def drop(self, run_id: int) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def __len__(self) -> int:
        return len(self._runs)


def _span(series: Mapping[str, tuple[Any, Any]]) -> tuple[int, int]:
    """The lowest and highest step of a batch (0, 0 when it has no point)."""
    lows = [int(np.min(s)) for s, _ in series.values() if len(s)]
    highs = [int(np.max(s)) for s, _ in series.values() if len(s)]
    return (min(lows), max(highs)) if lows else (0, 0)
