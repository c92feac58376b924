"""Detectors that read fit and quality, on synthetic series (no server, no training).

D at chance is the goal when G matches the data and a failure when it does not; mode coverage keeps a
collapse alert open; a dominant D is not failing while G's quality improves; a stalled or regressing
quality with calm losses is `quality_stalled`. Each rule is called directly, as the engine calls it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ganscope.server.detectors import catalog, quality, rules
from ganscope.server.detectors.engine import RunDetector
from ganscope.server.detectors.rules import Context

LN4 = 2 * math.log(2)
RNG = np.random.default_rng(1)


def series(values, start: int = 1, every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    return np.arange(start, start + every * v.size, every, dtype=np.int64), v


def judge(sig: str, recent: dict, cfg: dict | None = None, open_: tuple[str, ...] = (), **over):
    th = catalog.thresholds_for(sig, {sig: over} if over else None)
    ctx = Context.from_config(cfg or {})
    ctx.open = frozenset(open_)
    return rules.RULES[sig](recent, recent, th, ctx)


def at_chance(n: int, start: int = 1, jitter: float = 0.0) -> dict:
    """D at chance for n steps: loss/d at 2·ln 2, D(x) = D(G(z)) = 0.5 (frozen, or live with jitter)."""
    return {"loss/d": series(LN4 + jitter * RNG.standard_normal(n) + 1e-6 * RNG.standard_normal(n), start),
            "pred/real": series(0.5 + 1e-4 * RNG.standard_normal(n), start),
            "pred/fake": series(0.5 + 1e-4 * RNG.standard_normal(n), start)}


def toy_evals(start: int, end: int, every: int, modes, qual) -> dict:
    steps = np.arange(start, end + 1, every, dtype=np.int64)
    f = (lambda x: np.broadcast_to(np.asarray(x(steps) if callable(x) else x, dtype=np.float64), steps.shape).copy())
    return {"toy/modes": (steps, f(modes)), "toy/quality": (steps, f(qual))}


# --- d_not_learning reads the fit -------------------------------------------------------------------

def test_equilibrium_with_a_good_fit_is_not_d_not_learning():
    recent = {**at_chance(200, start=300), **toy_evals(0, 500, 20, 3, 0.9)}
    assert judge("d_not_learning", recent, {"dataset": "trimodal1d"}) is None


def test_equilibrium_with_a_bad_fit_is_d_not_learning_even_when_d_jitters():
    # A live D (IQR far above flat_iqr) hovering at chance while G covers 2 of 25 modes at 2% quality.
    recent = {**at_chance(200, start=300, jitter=0.01), **toy_evals(0, 500, 20, 2, 0.02)}
    f = judge("d_not_learning", recent, {"dataset": "grid25"})
    assert f is not None and f.evidence["cause"] == "chance" and f.evidence["fit"]["state"] == "bad"
    assert "does not match the data" in f.message
    # the same D without any fit measure: a live equilibrium, so today's rule (frozen only) stays silent
    assert judge("d_not_learning", at_chance(200, start=300, jitter=0.01), {"dataset": "grid25"}) is None


def test_without_a_fit_measure_a_frozen_chance_still_fires_and_says_so():
    f = judge("d_not_learning", at_chance(150))
    assert f is not None and f.evidence["fit"]["state"] == "unknown"
    assert "no fit measure" in f.evidence["fit"]["note"]


def test_equilibrium_with_bad_coverage_is_a_collapse_as_well():
    """D at chance, G on 1 of 8 modes with good samples: mode_collapse, and d_not_learning (bad fit)."""
    recent = {**at_chance(300, start=200), **toy_evals(0, 500, 20, 1, 0.95)}
    assert judge("mode_collapse", recent, {"dataset": "ring8"}) is not None
    assert judge("d_not_learning", recent, {"dataset": "ring8"}) is not None


# --- mode_collapse coverage -------------------------------------------------------------------------

def test_one_of_three_modes_with_spread_crossing_the_line_stays_open():
    """The issue's 1-D run: 1 of 3 modes all along, spread creeping from 0.008 to 0.012 of the real batch's."""
    n = 600
    spread = np.concatenate([np.full(300, 0.008), np.full(300, 0.012)]) * (1 + 0.05 * RNG.standard_normal(n))
    modes = toy_evals(0, n, 20, 1, lambda s: np.where(s < 300, 0.35, 0.2))  # mostly junk: quality < 0.5
    data = {"sample/diversity": spread, "toy/modes": None}
    det = RunDetector({"dataset": "trimodal1d", "toy_every": 20})
    opened = None
    for lo in range(0, n, 50):
        b = {"sample/diversity": series(data["sample/diversity"][lo:lo + 50], start=lo)}
        for k, (s, v) in modes.items():
            keep = (s >= lo) & (s < lo + 50)
            if keep.any():
                b[k] = (s[keep], v[keep])
        for ch in det.feed(b):
            if ch.alert.signature == "mode_collapse" and ch.kind == "open":
                opened = ch.alert
    assert opened is not None and opened.status == "open", [(a.signature, a.status) for a in det.history]
    assert [a.signature for a in det.history].count("mode_collapse") == 1  # never closed and reopened
    assert opened.last_step >= 580 and opened.first_step < 300
    assert "cover 1 of 3 modes" in opened.message


def test_coverage_opens_on_concentrated_samples_not_on_a_blurry_g():
    # Few modes covered, samples spread wide and mostly between modes: a bad fit, not a collapse.
    blurry = {**toy_evals(0, 500, 20, 2, 0.3), "sample/diversity": series(np.full(500, 0.6))}
    assert judge("mode_collapse", blurry, {"dataset": "grid25"}) is None
    # The same coverage with a spread a tenth of the data's: concentrated, collapsed.
    narrow = {**toy_evals(0, 500, 20, 2, 0.3), "sample/diversity": series(np.full(500, 0.05))}
    f = judge("mode_collapse", narrow, {"dataset": "grid25"})
    assert f is not None and f.evidence["observed"]["toy/modes"]["spread"]["median"] < 0.1
    # Once open, low coverage alone keeps it (the quality/spread requirement is for opening).
    assert judge("mode_collapse", blurry, {"dataset": "grid25"}, open_=("mode_collapse",)) is not None
    # Full coverage closes it whatever the spread.
    full = {**toy_evals(0, 500, 20, 25, 0.9), "sample/diversity": series(np.full(500, 0.6))}
    assert judge("mode_collapse", full, {"dataset": "grid25"}, open_=("mode_collapse",)) is None


def test_shapes_coverage_from_quality_modes():
    steps = np.arange(0, 2001, 250, dtype=np.int64)
    few = {"quality/modes": (steps, np.full(steps.size, 2.0)), "quality/modes_total": (steps, np.full(steps.size, 12.0)),
           "quality/recognisable": (steps, np.full(steps.size, 0.9))}
    f = judge("mode_collapse", few, {"dataset": "shapes"})
    assert f is not None and "cover 2 of 12 modes" in f.message
    many = {**few, "quality/modes": (steps, np.full(steps.size, 11.0))}
    assert judge("mode_collapse", many, {"dataset": "shapes"}) is None


# --- d_overpowering consults quality ----------------------------------------------------------------

def dominant(n: int = 700, start_at: int = 0) -> dict:
    """D wins from `start_at` on: loss/d ~0.01, D(G(z)) 0.005, D(x) 0.995 (a live D before)."""
    ld = np.where(np.arange(n) < start_at, 0.9 + 0.1 * RNG.standard_normal(n), 0.01 + 1e-3 * RNG.random(n))
    pf = np.where(np.arange(n) < start_at, 0.3, 0.005)
    return {"loss/d": series(ld), "pred/fake": series(pf), "pred/real": series(np.where(pf > 0.1, 0.7, 0.995))}


def kid(values, every: int = 50, start: int = 200) -> dict:
    return {"quality/kid": series(values, start=start, every=every)}


def test_dominant_d_with_improving_quality_is_a_warning_not_a_failure():
    improving = {**dominant(), **kid([0.30, 0.25, 0.2, 0.16, 0.12, 0.09, 0.07, 0.06, 0.05, 0.04])}
    f = judge("d_overpowering", improving)
    assert f is not None and f.severity == "warning" and "still improves" in f.message
    assert f.evidence["quality"]["trend"] == "improving" and f.evidence["quality"]["metric"] == "quality/kid"
    stalled = {**dominant(), **kid([0.30, 0.25, 0.2, 0.15, 0.15, 0.16, 0.15, 0.15, 0.16, 0.15])}
    f = judge("d_overpowering", stalled)
    assert f is not None and f.severity is None and "stalled" in f.message  # the catalog's: failing
    assert judge("d_overpowering", dominant()).severity is None  # no quality: today's rule, failing


def test_engine_escalates_dominance_to_failing_when_quality_stops_improving():
    det = RunDetector({})
    loss = dominant(1000, start_at=400)
    kids = [0.6, 0.6, 0.6, 0.6, 0.5, 0.45, 0.4, 0.3, 0.25, 0.2, 0.16, 0.12, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    changes = []
    for lo in range(0, 1000, 50):
        b = {k: (s[lo:lo + 50], v[lo:lo + 50]) for k, (s, v) in loss.items()}
        b["quality/kid"] = (np.array([lo + 50]), np.array([kids[lo // 50]]))
        changes += [(c.kind, c.alert.severity, c.escalated) for c in det.feed(b)
                    if c.alert.signature == "d_overpowering"]
    assert changes[0][:2] == ("open", "warning"), changes
    assert ("update", "failing", True) in changes
    [a] = [a for a in det.history if a.signature == "d_overpowering"]
    assert a.severities == ["warning", "failing"] and 395 <= a.first_step <= 410


# --- quality_stalled --------------------------------------------------------------------------------

def calm_losses(n: int) -> dict:
    return {"loss/d": series(1.1 + 0.05 * RNG.standard_normal(n)), "pred/real": series(np.full(n, 0.6)),
            "pred/fake": series(np.full(n, 0.4))}


def test_quality_stalled_with_calm_losses():
    n = 900
    recent = {**calm_losses(n), **toy_evals(0, n, 50, lambda s: np.where(s < 300, 1, 2), lambda s: np.where(s < 300, 0.1, 0.3))}
    f = judge("quality_stalled", recent, {"dataset": "grid25"})
    assert f is not None and f.severity == "failing" and f.evidence["verdict"] == "stalled"
    assert f.evidence["fit"]["state"] == "bad" and f.evidence["trend"]["metric"] == "toy/quality"
    assert f.evidence["losses"]["d_ahead"] is False and "stalled" in f.message
    # Flat at a good fit is convergence.
    good = {**calm_losses(n), **toy_evals(0, n, 50, 3, 0.9)}
    assert judge("quality_stalled", good, {"dataset": "trimodal1d"}) is None
    # Still climbing: not stalled.
    climbing = {**calm_losses(n), **toy_evals(0, n, 50, 1, lambda s: np.minimum(0.05 + s / 2000, 0.49))}
    assert judge("quality_stalled", climbing, {"dataset": "grid25"}) is None


def test_quality_regression_on_a_distance_with_noise():
    vals = [0.5, 0.3, 0.2, 0.12, 0.1, 0.11, 0.09, 0.15, 0.2, 0.24, 0.3, 0.28]
    recent = {**calm_losses(700), **kid(vals)}
    f = judge("quality_stalled", recent)
    assert f is not None and f.evidence["verdict"] == "regressing" and f.severity == "warning"  # no absolute line
    assert f.evidence["trend"]["best"]["value"] == pytest.approx(0.1, abs=0.011)
    # one wild evaluation is not a regression (levels are medians of three)
    blip = [0.5, 0.3, 0.2, 0.12, 0.1, 0.11, 0.09, 0.1, 0.3, 0.1, 0.09, 0.1]
    assert judge("quality_stalled", {**calm_losses(700), **kid(blip)}) is None
    # with only a KID, a plateau is not judged (convergence looks the same)
    flat = [0.5, 0.3, 0.2, 0.12, 0.1, 0.1, 0.11, 0.1, 0.1, 0.1, 0.11, 0.1]
    assert judge("quality_stalled", {**calm_losses(700), **kid(flat)}) is None


def test_quality_stalled_defers_to_an_open_explanation():
    n = 900
    recent = {**calm_losses(n), **toy_evals(0, n, 50, 1, 0.05)}
    assert judge("quality_stalled", recent, {"dataset": "ring8"}) is not None
    assert judge("quality_stalled", recent, {"dataset": "ring8"}, open_=("mode_collapse",)) is None


def test_trend_is_robust_and_lower_is_better_for_distances():
    ctx = Context.from_config({})
    th = catalog.thresholds_for("quality_stalled", None)
    down = quality.trend(kid([0.4, 0.3, 0.25, 0.2, 0.15, 0.12]), ctx, th)
    assert down.verdict == "improving" and down.evidence["better"] == "lower"
    up = quality.trend({"quality/coverage": series([0.2, 0.3, 0.4, 0.5, 0.6, 0.7], start=50, every=50)}, ctx, th)
    assert up.verdict == "improving" and up.metric == "quality/coverage"
    assert quality.trend(kid([0.4, 0.3]), ctx, th).verdict == "unknown"  # too few evaluations
    ft = quality.fit({"quality/coverage": series([0.8, 0.85, 0.9], start=300, every=50),
                      "quality/recognisable": series([0.9, 0.9, 0.95], start=300, every=50)}, ctx)
    assert ft.state == "good"


def test_on_failure_stop_waits_for_the_escalation_through_the_server(server):
    """A dominant D under improving quality only warns, so `on_failure: stop` lets the run go on; once the
    quality stalls the alert turns failing and the ingest answer says stop."""
    from tests.harness import wait_for

    loss = dominant(1000, start_at=400)
    kids = [0.6, 0.6, 0.6, 0.6, 0.5, 0.45, 0.4, 0.3, 0.25, 0.2, 0.16, 0.12, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "escalate", "config": {"on_failure": "stop"}}).json()["id"]
        actions = []
        for lo in range(0, 1000, 50):
            body = {"series": {k: {"steps": [int(x) for x in s[lo:lo + 50]], "values": [float(x) for x in v[lo:lo + 50]]}
                               for k, (s, v) in loss.items()}}
            body["series"]["quality/kid"] = {"steps": [lo + 50], "values": [kids[lo // 50]]}
            r = c.post(f"/api/runs/{run_id}/metrics", json=body)
            assert r.status_code == 200, r.text
            actions.append((lo, r.json()["action"]))
            if lo == 600:  # dominant since 400, quality still improving: a warning, the run goes on
                [a] = wait_for(lambda: [a for a in c.get(f"/api/runs/{run_id}/alerts").json()["alerts"]
                                        if a["signature"] == "d_overpowering"], timeout=10, what="the warning")
                assert a["severity"] == "warning" and c.get(f"/api/runs/{run_id}").json()["control"] is None
        run = wait_for(lambda: (lambda r: r if r["control"] == "stop" else None)(c.get(f"/api/runs/{run_id}").json()),
                       timeout=10, what="the stop")
        assert run["stop_reason"].startswith("d_overpowering")
        [a] = [a for a in c.get(f"/api/runs/{run_id}/alerts").json()["alerts"] if a["signature"] == "d_overpowering"]
        assert a["severity"] == "failing" and "stalled" in a["message"]


def test_a_restarted_server_still_sees_old_evaluations(home):
    """Evaluations thousands of steps apart outlive the loss window: after a restart the server reads the
    last few dozen back, so a stall spanning 3,000 steps is still judged on all of them."""
    from tests.harness import start_server, wait_for

    def body(lo: int, hi: int, q: float | None) -> dict:
        steps = list(range(lo, hi))
        series = {"loss/d": {"steps": steps, "values": [1.1] * len(steps)},
                  "pred/fake": {"steps": steps, "values": [0.4] * len(steps)}}
        if q is not None:
            series["toy/quality"] = {"steps": [hi - 1], "values": [q]}
            series["toy/modes"] = {"steps": [hi - 1], "values": [1.0]}
        return {"series": series}

    server = start_server(home)
    try:
        with server.client() as c:
            run_id = c.post("/api/runs", json={"name": "r", "config": {"dataset": "grid25"}}).json()["id"]
            for lo, q in zip(range(1, 2001, 500), (0.02, 0.05, 0.04, 0.05)):  # evaluations 500 steps apart
                assert c.post(f"/api/runs/{run_id}/metrics", json=body(lo, lo + 500, q)).status_code == 200
            assert c.get(f"/api/runs/{run_id}/alerts").json()["alerts"] == []  # four evaluations: too few
    finally:
        server.stop()
    server = start_server(home, port=server.port)
    try:
        with server.client() as c:
            assert c.post(f"/api/runs/{run_id}/metrics", json=body(2001, 2501, 0.04)).status_code == 200
            [a] = wait_for(lambda: c.get(f"/api/runs/{run_id}/alerts").json()["alerts"], timeout=10,
                           what="quality_stalled")
            assert a["signature"] == "quality_stalled" and a["evidence"]["trend"]["evaluations"] == 5
            assert a["severity"] == "failing" and a["evidence"]["window"][0] <= 500
    finally:
        server.stop()
