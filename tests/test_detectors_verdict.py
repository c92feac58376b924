"""The learning verdict: every run summary says whether G improves, has stalled or regresses, with evidence.

The pure function (server/detectors/verdict.py) on synthetic evaluations, then through the real server
on SQLite and PostgreSQL: `GET /api/runs/{id}` and `GET /api/runs` carry `learning`, read from a bounded
slice of each run's evaluations.
"""

from __future__ import annotations

import numpy as np

from ganscope.server.detectors.verdict import LOOKBACK_EVALS, learning
from tests.harness import wait_for


def evals(values, start: int = 250, every: int = 50) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64)
    return np.arange(start, start + every * v.size, every, dtype=np.int64), v


def test_verdicts_from_fit_and_quality_series():
    cfg = {"dataset": "trimodal1d"}
    up = learning({"toy/quality": evals([0.2, 0.3, 0.4, 0.5, 0.6, 0.7]), "toy/modes": evals([1, 2, 2, 3, 3, 3])}, cfg)
    assert up["verdict"] == "improving" and up["metric"] == "toy/quality" and "improving" in up["message"]
    assert up["evidence"]["trend"]["better"] == "higher"
    done = learning({"toy/quality": evals([0.9] * 8), "toy/modes": evals([3] * 8)}, cfg)
    assert done["verdict"] == "stalled" and "converged" in done["message"] and done["evidence"]["fit"]["state"] == "good"
    stuck = learning({"toy/quality": evals([0.05] * 8), "toy/modes": evals([1] * 8)}, cfg)
    assert stuck["verdict"] == "stalled" and "stalled" in stuck["message"] and stuck["evidence"]["fit"]["state"] == "bad"
    worse = learning({"quality/kid": evals([0.3, 0.2, 0.1, 0.1, 0.12, 0.2, 0.25, 0.3])}, {})
    assert worse["verdict"] == "regressing" and worse["metric"] == "quality/kid" and "lower is better" in worse["message"]
    assert learning({}, {})["verdict"] == "unknown" and learning({}, {})["metric"] is None
    few = learning({"quality/kid": evals([0.3, 0.2])}, {})
    assert few["verdict"] == "unknown" and few["metric"] == "quality/kid"


def post(c, run_id: int, series: dict) -> None:
    body = {"series": {k: {"steps": [int(x) for x in s], "values": [float(x) for x in v]} for k, (s, v) in series.items()}}
    r = c.post(f"/api/runs/{run_id}/metrics", json=body)
    assert r.status_code == 200, r.text


def test_run_summaries_carry_the_verdict(any_server):
    with any_server.client() as c:
        ids = {}
        for name, q in (("improving", [0.1, 0.2, 0.3, 0.45, 0.6, 0.7]), ("stalled", [0.05] * 8)):
            ids[name] = c.post("/api/runs", json={"name": name, "config": {"dataset": "trimodal1d"}}).json()["id"]
            steps = np.arange(1, 250 + 50 * len(q))
            post(c, ids[name], {"loss/d": (steps, np.full(steps.size, 1.2)),
                                "toy/quality": evals(q), "toy/modes": evals([1] * len(q))})
        ids["none"] = c.post("/api/runs", json={"name": "none", "config": {}}).json()["id"]
        post(c, ids["none"], {"loss/d": (np.arange(1, 100), np.full(99, 1.2))})
        # A long run: thousands of evaluations over several chunks; the verdict reads only the last ones.
        ids["long"] = c.post("/api/runs", json={"name": "long", "config": {}}).json()["id"]
        k = np.arange(5000)
        post(c, ids["long"], {"quality/kid": (200 + 10 * k, 0.5 * np.exp(-k / 250))})  # 13% better per 300 steps

        one = c.get(f"/api/runs/{ids['improving']}").json()["learning"]
        assert one["verdict"] == "improving" and one["metric"] == "toy/quality"
        listed = {r["id"]: r["learning"] for r in c.get("/api/runs").json()["runs"]}
        assert listed[ids["improving"]]["verdict"] == "improving"
        assert listed[ids["stalled"]]["verdict"] == "stalled" and listed[ids["stalled"]]["evidence"]["fit"]["state"] == "bad"
        assert listed[ids["none"]] == {**listed[ids["none"]], "verdict": "unknown", "metric": None}
        long = listed[ids["long"]]
        assert long["verdict"] == "improving" and long["evidence"]["trend"]["evaluations"] <= LOOKBACK_EVALS
        assert long["evidence"]["trend"]["recent"]["step"] == 200 + 10 * 4999
        # the list and the detail agree (one function, the same bounded read)
        assert c.get(f"/api/runs/{ids['stalled']}").json()["learning"] == listed[ids["stalled"]]


def test_the_verdict_follows_a_running_run(server):
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "live", "config": {"dataset": "grid25"}}).json()["id"]
        q = [0.1, 0.2, 0.3, 0.4, 0.5]
        post(c, run_id, {"toy/quality": evals(q), "toy/modes": evals([5, 8, 10, 14, 18])})
        assert c.get(f"/api/runs/{run_id}").json()["learning"]["verdict"] == "improving"
        post(c, run_id, {"toy/quality": evals([0.5, 0.3, 0.2, 0.1, 0.1, 0.1], start=500),
                         "toy/modes": evals([18, 12, 8, 5, 5, 5], start=500)})
        verdict = wait_for(lambda: c.get(f"/api/runs/{run_id}").json()["learning"], timeout=10,
                           what="the summary")
        assert verdict["verdict"] == "regressing" and verdict["evidence"]["trend"]["best"]["value"] >= 0.45
