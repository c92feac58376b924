"""Alerts through the real server: the catalog, ingest → alert → health, on_failure: stop, restart, a real worker.

Series are posted the way a worker or the SDK posts them (POST /api/runs/{id}/metrics); the
detectors run inside the server on every ingested batch.
"""

from __future__ import annotations

import json
import math
import threading

import httpx

from tests.harness import start_server, wait_for
from ganscope.trainer.config import JobConfig

LN4 = 2 * math.log(2)
DESIGN_IDS = {"d_overpowering", "vanishing_g_grad", "exploding_grad", "nonfinite", "mode_collapse",
              "oscillation", "d_not_learning", "poor_init", "capacity_imbalance"}


def batch(lo: int, hi: int, **values) -> dict:
    """{"series": {name: {"steps", "values"}}} for steps lo..hi-1; a value is a constant or a callable of step."""
    steps = list(range(lo, hi))
    out = {}
    for name, v in values.items():
        vals = [v(s) if callable(v) else v for s in steps]
        out[name.replace("__", "/")] = {"steps": steps, "values": vals}
    return {"series": out}


def healthy_loss(s: int) -> float:
    return 0.9 + 0.1 * math.sin(s)  # a live D: not near 0, not frozen


def post_metrics(c, run_id: int, body: dict) -> dict:
    r = c.post(f"/api/runs/{run_id}/metrics", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def alerts(c, run_id: int) -> list[dict]:
    r = c.get(f"/api/runs/{run_id}/alerts")
    assert r.status_code == 200, r.text
    return r.json()["alerts"]


def test_signature_catalog_and_unknown_run(server):
    with server.client() as c:
        sigs = c.get("/api/signatures").json()["signatures"]
        assert DESIGN_IDS <= {s["id"] for s in sigs}
        fields = set(JobConfig.model_fields)
        for s in sigs:
            assert set(s["remedy"]["config"]) <= fields and s["remedy"]["sources"]
            assert all(t["why"] for t in s["thresholds"])
        assert c.get("/api/runs/987654/alerts").status_code == 404


def test_alert_opens_updates_closes_and_sets_health(server):
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "sdk", "config": {"dataset": "ring8"}}).json()["id"]
        post_metrics(c, run_id, batch(1, 101, loss__d=healthy_loss, pred__fake=0.3))
        assert alerts(c, run_id) == [] and c.get(f"/api/runs/{run_id}").json()["health"] == "healthy"
        # D wins: loss/d near 0, D(G(z)) near 0, held well past the 50-step window.
        answer = None
        for lo in range(101, 301, 50):
            answer = post_metrics(c, run_id, batch(lo, lo + 50, loss__d=0.002, pred__fake=0.001))
        assert answer["action"] == "continue"  # on_failure: warn only reports
        # Batches arriving within 0.25 s of a judgement are judged together a moment later.
        [a] = wait_for(lambda: [a for a in alerts(c, run_id) if a["last_step"] == 300], timeout=10,
                       what="the alert to cover step 300")
        assert a["signature"] == "d_overpowering" and a["severity"] == "failing" and a["status"] == "open"
        assert 95 <= a["first_step"] <= 110 and a["last_step"] == 300
        ev = a["evidence"]
        assert "loss/d" in ev["metrics"] and ev["window"][1] == 300
        assert ev["observed"]["loss/d"]["median"] < ev["observed"]["loss/d"]["threshold"]
        JobConfig(**{**JobConfig(dataset="ring8").model_dump(), **a["remedy"]["config"]})
        run = c.get(f"/api/runs/{run_id}").json()
        assert run["health"] == "failing" and run["open_alerts"] == 1
        # Recovery lasting the persistence window closes the alert; health returns.
        for lo in range(301, 451, 50):
            post_metrics(c, run_id, batch(lo, lo + 50, loss__d=healthy_loss, pred__fake=0.3))
        [a] = wait_for(lambda: [a for a in alerts(c, run_id) if a["status"] == "closed"], timeout=10,
                       what="the alert to close")
        assert a["closed_at"] and a["last_step"] < 340
        assert c.get(f"/api/runs/{run_id}").json()["health"] == "healthy"


def test_on_failure_stop_tells_the_worker(server):
    cfg = {"dataset": "ring8", "on_failure": "stop", "steps": 1000, "device": "cpu"}
    with server.client() as c:
        run_id = c.post("/api/jobs", json=cfg).json()["id"]
        claimed = c.post("/api/workers/claim", json={"worker_id": "w-test", "host": "h"}).json()
        assert claimed["run_id"] == run_id
        hb = c.post("/api/workers/heartbeat", json={"worker_id": "w-test", "run_id": run_id, "step": 10}).json()
        assert hb["action"] == "continue"
        body = batch(1, 21, loss__d=1.0, grad__g__fc1=lambda s: "nan" if s >= 15 else 0.1)
        answer = post_metrics(c, run_id, body)
        assert answer["action"] == "stop" and "nonfinite" in answer["reason"]
        hb = c.post("/api/workers/heartbeat", json={"worker_id": "w-test", "run_id": run_id, "step": 20}).json()
        assert hb["action"] == "stop" and "grad/g/fc1" in hb["reason"]
        [a] = alerts(c, run_id)
        assert a["signature"] == "nonfinite" and a["first_step"] == 15
        run = c.get(f"/api/runs/{run_id}").json()
        assert run["health"] == "failing" and "nonfinite" in run["stop_reason"]
        r = c.post(f"/api/runs/{run_id}/finish", json={"worker_id": "w-test", "status": "stopped", "step": 20})
        assert r.status_code == 200
        assert c.get(f"/api/runs/{run_id}").json()["status"] == "stopped"


def test_restarted_server_rebuilds_windows_and_open_alerts(home):
    server = start_server(home)
    try:
        with server.client() as c:
            run_id = c.post("/api/runs", json={"name": "r", "config": {"dataset": "ring8"}}).json()["id"]
            # D frozen at chance since step 1: flat loss/d at 2·ln 2 and D(x) = D(G(z)).
            post_metrics(c, run_id, batch(1, 101, loss__d=LN4, pred__real=0.5, pred__fake=0.5))
            [a] = alerts(c, run_id)
            assert a["signature"] == "d_not_learning" and a["last_step"] == 100
    finally:
        server.stop()
    server = start_server(home, port=server.port)
    try:
        with server.client() as c:
            post_metrics(c, run_id, batch(101, 151, loss__d=LN4, pred__real=0.5, pred__fake=0.5))
            [a] = alerts(c, run_id)  # the same alert carried on, not a second one
            assert a["status"] == "open" and a["first_step"] == 1 and a["last_step"] == 150
    finally:
        server.stop()


def test_real_worker_is_stopped_by_a_failing_signature(server, spawn_worker):
    # Extreme init of a deep MLP: gradient norms overflow float32 from the first step (nonfinite).
    cfg = {"dataset": "ring8", "toy_layers": 8, "toy_hidden": 64, "init_std": 10.0, "batch_size": 32,
           "steps": 5000, "flush_every": 10, "toy_every": 1000, "checkpoint_every": 100000,
           "on_failure": "stop", "device": "cpu"}
    with server.client() as c:
        run_id = c.post("/api/jobs", json=cfg).json()["id"]
        spawn_worker(server.url)
        run = wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] in ("stopped", "failed",
                                                                                         "succeeded") and r,
                       timeout=120, what="the run to end")
        assert run["status"] == "stopped" and run["health"] == "failing"
        assert run["step"] < 1000 and "nonfinite" in run["stop_reason"]
        assert any(a["signature"] == "nonfinite" for a in alerts(c, run_id))
        metrics = c.get(f"/api/runs/{run_id}/metrics", params={"names": "grad/g/fc1"}).json()["metrics"]
        assert any(v is None for v in metrics["grad/g/fc1"]["values"])  # the evidence is in the stored series


def test_alert_and_status_events_reach_the_live_stream(server):
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "live", "config": {"dataset": "ring8"}}).json()["id"]
    events: list[tuple[str, dict]] = []
    ready = threading.Event()

    def listen() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as sc, sc.stream("GET", f"/api/runs/{run_id}/stream") as r:
            event = None
            for line in r.iter_lines():
                if line.startswith("event:"):
                    event = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and event:
                    events.append((event, json.loads(line.split(":", 1)[1])))
                    if event == "ready":
                        ready.set()
                    if event == "status" and any(e == "alert" for e, _ in events):
                        return

    th = threading.Thread(target=listen, daemon=True)
    th.start()
    assert ready.wait(20)
    with server.client() as c:
        post_metrics(c, run_id, batch(1, 11, loss__d=lambda s: "inf" if s == 7 else 1.0))
    th.join(20)
    alert = next(d for e, d in events if e == "alert")
    status = next(d for e, d in events if e == "status")
    assert alert["run_id"] == run_id and alert["signature"] == "nonfinite" and alert["first_step"] == 7
    assert status["id"] == run_id and status["health"] == "failing"
