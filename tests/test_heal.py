"""Self-healing runs (on_failure: heal) through a real server and a real worker, on SQLite and PostgreSQL.

A toy job provoked to fail fast is healed: the worker rolls back to a checkpoint before the failure's
onset, applies the remedy and trains on in the same job; the heal is a run event with its step, signature
and changes, the stored config is the patched one, the job's webhook hears `run.healed`, and the run ends
without being stopped. With its heals used up, a further failing alert stops the run; a repeat of a signature
escalates its remedy. The wire protocol (control, pending heal, report, rewind) is checked on its own, and
`ganscope launch` prints heals while following. Bad knob values are a 422.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.harness import wait_for
from tests.harness import free_port
from tests.test_alerts_api import alerts, batch, healthy_loss, post_metrics
from tests.test_cli import cli
from tests.webhook_receiver import start_receiver

FINAL = ("succeeded", "failed", "cancelled", "stopped")
# D learns 200x faster than G, three D steps per G step (tests/scenarios.py D_WINS): d_overpowering, failing.
D_WINS = {"dataset": "ring8", "toy_hidden": 32, "batch_size": 32, "lr_d": 2e-3, "lr_g": 1e-5, "d_steps": 3,
          "toy_every": 20, "flush_every": 10, "checkpoint_every": 10, "device": "cpu"}
# Extreme init of a deep MLP: gradient norms overflow from the first step (nonfinite, failing at once).
BLOW_UP = {"dataset": "ring8", "toy_layers": 8, "toy_hidden": 64, "init_std": 10.0, "batch_size": 32,
           "flush_every": 10, "toy_every": 1000, "checkpoint_every": 20, "device": "cpu"}


def _end(c, run_id: int, timeout: float = 240) -> dict:
    return wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] in FINAL and r, timeout=timeout,
                    what=f"run {run_id} to end")


@pytest.fixture
def receiver(tmp_path: Path):
    rx = start_receiver(free_port(), tmp_path / "hooks.jsonl")
    yield rx
    rx.stop()


def test_a_failing_run_heals_itself(any_server, spawn_worker, receiver):
    cfg = {**D_WINS, "steps": 400, "on_failure": "heal", "max_heals": 3, "notify": [receiver.url("ok/json")]}
    with any_server.client() as c:
        run_id = c.post("/api/jobs", json=cfg).json()["id"]
        w = spawn_worker(any_server.url)
        run = _end(c, run_id)
        log = w.log(tail=None)
        body = c.get(f"/api/runs/{run_id}/events").json()
        heals = [e for e in body["events"] if e["kind"] == "heal"]
        assert heals, f"no heal: {run}\n{log}"
        first = heals[0]
        assert first["status"] == "applied" and first["signature"] == "d_overpowering", first
        # rolled back to a checkpoint taken before the symptom's onset (checkpoints every 10 steps)
        assert first["rollback_step"] < first["onset_step"] <= first["step"] <= first["from_step"]
        assert first["rollback_step"] % 10 == 0
        knobs = {ch["knob"]: ch for ch in first["changes"]}
        assert "d_steps" in knobs and knobs["d_steps"]["from"] == 3 and knobs["d_steps"]["to"] == 1
        # the stored config is the patched one, with the rung it came from. The healed run may heal again
        # (its fit can still stall short of ring8 in 400 steps: quality_stalled): then the last heal's
        # changes and rung are the ones stored, on top of the first's.
        stored = c.get(f"/api/runs/{run_id}").json()
        last = heals[-1]
        later = {ch["knob"] for e in heals[1:] for ch in e["changes"]}
        assert all(stored["config"][k] == ch["to"] for k, ch in knobs.items() if k not in later)
        assert all(stored["config"][ch["knob"]] == ch["to"] for ch in last["changes"])
        assert stored["config"]["d_steps"] == 1 and stored["config"]["lr_g"] > cfg["lr_g"]
        assert stored["config"]["remedy_of"]["signature"] == last["signature"]
        assert [h["signature"] for h in stored["config_history"]] == [e["signature"] for e in heals]
        assert stored["config_history"][0] == {"step": first["rollback_step"], "event_id": first["id"],
                                               "kind": "heal", "signature": "d_overpowering",
                                               "changes": {k: v["to"] for k, v in knobs.items()}}
        assert run["status"] == "succeeded", f"{run}\n{log}"
        assert run["step"] == cfg["steps"] and "healing d_overpowering" in log
        # the record was rewound: one point per step, the abandoned stretch replaced by the healed one
        m = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/d", "max_points": 100000}).json()
        steps = np.asarray(m["metrics"]["loss/d"]["steps"])
        assert steps[0] == 1 and steps[-1] == cfg["steps"] and np.all(np.diff(steps) == 1)
        # the healed alert is closed; the resume point is a checkpoint of the healed branch
        alerts = c.get(f"/api/runs/{run_id}/alerts").json()["alerts"]
        assert all(a["status"] == "closed" for a in alerts if a["id"] == first["alert_id"])
        # the job's webhook heard of the heal, with what changed
        healed = wait_for(lambda: [b for r in receiver.requests() if (b := json.loads(r["body"]))["event"] ==
                                   "run.healed"], timeout=30, what="run.healed")
        assert healed[0]["run"]["heal"]["id"] == first["id"] and healed[0]["run"]["id"] == run_id
        assert healed[0]["text"].startswith("HEALED:") and "d_steps 3 → 1" in healed[0]["text"]


def test_a_rollback_past_the_workers_own_checkpoints_uses_the_servers(server, spawn_worker):
    # A checkpoint every 2 steps: the worker's own few recent files all postdate the onset by the time the
    # alert is judged, so the one it rolls back to comes from the server.
    cfg = {**D_WINS, "steps": 200, "checkpoint_every": 2, "on_failure": "heal", "max_heals": 3}
    with server.client() as c:
        run_id = c.post("/api/jobs", json=cfg).json()["id"]
        w = spawn_worker(server.url)
        run = _end(c, run_id)
        log = w.log(tail=None)
        ev = c.get(f"/api/runs/{run_id}/events").json()["events"][0]
        assert ev["status"] == "applied" and 0 < ev["rollback_step"] < ev["onset_step"], ev
        assert f"downloaded the server's of step {ev['rollback_step']}" in log, \
            [ev, [x for x in log.splitlines() if "heal" in x]]
        assert run["status"] == "succeeded" and run["step"] == cfg["steps"], run
        steps = [ck["step"] for ck in c.get(f"/api/runs/{run_id}/checkpoints").json()["checkpoints"]]
        # The healed branch's checkpoints, thinned by retention (GANSCOPE_KEEP_CHECKPOINTS): the newest
        # five, the rollback reach and the healed alert's rollback point; none is left of the abandoned branch.
        assert steps == sorted(set(steps)) and all(s % 2 == 0 for s in steps) and steps[-1] == cfg["steps"]
        assert steps[-5:] == list(range(cfg["steps"] - 8, cfg["steps"] + 1, 2)) and len(steps) <= 5 + 3 + 2, steps
        assert ev["rollback_step"] in steps


def test_heals_used_up_stop_the_run(any_server, spawn_worker):
    # The first heal's remedy (init back to 0.02, lower rates) cures the blow-up; with no heal allowed, the
    # very first failing alert stops the run as on_failure: stop would.
    cfg = {**BLOW_UP, "steps": 3000, "on_failure": "heal", "max_heals": 0}
    with any_server.client() as c:
        run_id = c.post("/api/jobs", json=cfg).json()["id"]
        w = spawn_worker(any_server.url)
        run = _end(c, run_id)
        assert run["status"] == "stopped", f"{run}\n{w.log()}"
        assert "all 0 heals used" in run["stop_reason"] and run["step"] < 1000
        assert c.get(f"/api/runs/{run_id}/events").json()["events"] == []


def test_a_blow_up_heals_from_step_zero_then_a_second_failure_stops(server, spawn_worker):
    cfg = {**BLOW_UP, "steps": 200, "on_failure": "heal", "max_heals": 1}
    with server.client() as c:
        run_id = c.post("/api/jobs", json=cfg).json()["id"]
        w = spawn_worker(server.url)
        run = _end(c, run_id)
        [ev] = c.get(f"/api/runs/{run_id}/events").json()["events"]
        assert ev["signature"] == "nonfinite" and ev["status"] == "applied", ev
        # no checkpoint precedes an onset at the first steps: training restarted from scratch
        assert ev["rollback_step"] == 0 and ev["onset_step"] <= 20
        assert {ch["knob"]: ch["to"] for ch in ev["changes"]}["init_std"] == 0.02
        assert run["config"]["init_std"] == 0.02 and run["config"]["remedy_of"]["signature"] == "nonfinite"
        assert run["status"] in ("succeeded", "stopped"), f"{run}\n{w.log()}"
        if run["status"] == "stopped":  # a second failure after the one heal allowed
            assert "all 1 heals used" in run["stop_reason"]


@pytest.mark.parametrize("bad", [{"on_failure": "bogus"}, {"max_heals": -1}, {"max_heals": 21},
                                 {"remedy_of": {"signature": "x", "level": "high"}}])
def test_bad_heal_knobs_are_refused(any_server, bad):
    with any_server.client() as c:
        r = c.post("/api/jobs", json={"dataset": "ring8", **bad})
        assert r.status_code == 422, r.text
        field = next(iter(bad))
        assert any(field in map(str, e["loc"]) for e in r.json()["detail"]), r.text


def test_launch_prints_heals_while_following(server, spawn_worker, home: Path):
    spawn_worker(server.url)
    sets = [f"{k}={v}" for k, v in {**D_WINS, "steps": 200, "on_failure": "heal", "max_heals": 3}.items()]
    out = cli(home, "launch", *[a for s in sets for a in ("--set", s)], "--interval", "0.3", server=server.url,
              timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    line = next((x for x in out.stdout.splitlines() if x.startswith("HEAL d_overpowering")), None)
    assert line is not None, out.stdout
    assert "rolled back from step" in line and "d_steps 3 -> 1" in line
    assert "succeeded" in out.stdout.splitlines()[-1]


def test_heal_protocol_over_http(any_server):
    """The wire protocol alone (a worker played by the test): control, pending heal, report, rewind, max_heals."""
    w = "w-heal"
    with any_server.client() as c:
        run_id = c.post("/api/jobs", json={"dataset": "ring8", "on_failure": "heal", "max_heals": 1,
                                          "lr_d": 1e-3, "steps": 1000}).json()["id"]
        assert c.post("/api/workers/claim", json={"worker_id": w, "host": "h"}).json()["run_id"] == run_id
        assert c.get(f"/api/runs/{run_id}/heal").status_code == 404  # nothing pending yet
        answer = post_metrics(c, run_id, batch(1, 21, loss__d=lambda s: "nan" if s >= 15 else healthy_loss(s)))
        assert answer["action"] == "heal" and answer["reason"].startswith("heal #"), answer
        hb = c.post("/api/workers/heartbeat", json={"worker_id": w, "run_id": run_id, "step": 20}).json()
        assert hb == {"action": "heal", "reason": answer["reason"]}
        pending = c.get(f"/api/runs/{run_id}/heal").json()
        ev = pending["event"]
        assert ev["status"] == "pending" and ev["signature"] == "nonfinite" and ev["onset_step"] == 15
        assert answer["reason"].startswith(f"heal #{ev['id']}:")
        assert pending["config"]["lr_d"] < 1e-3 and pending["config"]["remedy_of"]["signature"] == "nonfinite"
        assert c.get(f"/api/runs/{run_id}").json()["config"]["lr_d"] == 1e-3  # not applied yet
        url = f"/api/runs/{run_id}/heal/{ev['id']}"
        assert c.post(url, json={"worker_id": "w-other", "from_step": 20, "rollback_step": 10}).status_code == 409
        assert c.post(url, json={"worker_id": w, "from_step": 5, "rollback_step": 10}).status_code == 422
        assert c.post(url, json={"worker_id": w, "from_step": 20}).status_code == 422
        assert c.post(f"/api/runs/{run_id}/heal/999999", json={"worker_id": w, "from_step": 20,
                                                               "rollback_step": 10}).status_code == 404
        done = c.post(url, json={"worker_id": w, "from_step": 20, "rollback_step": 10})
        assert done.status_code == 200 and done.json()["changed"] is True, done.text
        again = c.post(url, json={"worker_id": w, "from_step": 20, "rollback_step": 10}).json()
        assert again["changed"] is False and again["event"]["rollback_step"] == 10
        run = c.get(f"/api/runs/{run_id}").json()
        assert run["step"] == 10 and run["health"] == "healthy" and run["config"]["lr_d"] < 1e-3
        assert [a["status"] for a in alerts(c, run_id)] == ["closed"]
        m = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/d"}).json()["metrics"]["loss/d"]
        assert m["steps"] == list(range(1, 11))  # the failing stretch is gone
        hb = c.post("/api/workers/heartbeat", json={"worker_id": w, "run_id": run_id, "step": 10}).json()
        assert hb["action"] == "continue"
        # the healed stretch is stored, not taken for a replay of the old one
        answer = post_metrics(c, run_id, batch(11, 31, loss__d=healthy_loss))
        assert answer["accepted"] == 20 and answer["duplicates"] == 0 and answer["action"] == "continue"
        # a second failing alert with the one heal spent: stopped as on_failure: stop would
        answer = post_metrics(c, run_id, batch(31, 41, loss__d=lambda s: "inf" if s >= 35 else healthy_loss(s)))
        assert answer["action"] == "stop" and "all 1 heals used" in answer["reason"], answer
        [e] = c.get(f"/api/runs/{run_id}/events").json()["events"]
        assert e["status"] == "applied" and e["from_step"] == 20 and e["rollback_step"] == 10


def test_a_repeat_escalates_the_remedy(any_server):
    """The second heal for the same signature is computed on the patched config: the ladder's next rung."""
    w = "w-esc"
    with any_server.client() as c:
        run_id = c.post("/api/jobs", json={"dataset": "ring8", "on_failure": "heal", "steps": 1000}).json()["id"]
        c.post("/api/workers/claim", json={"worker_id": w, "host": "h"})
        levels = []
        for lo in (1, 21):
            answer = post_metrics(c, run_id, batch(lo, lo + 20, loss__d=lambda s, lo=lo: "nan" if s >= lo + 5
                                                   else healthy_loss(s)))
            assert answer["action"] == "heal", answer
            pending = c.get(f"/api/runs/{run_id}/heal").json()
            ev = pending["event"]
            levels.append((pending["config"]["remedy_of"]["level"], {ch["knob"] for ch in ev["changes"]}))
            r = c.post(f"/api/runs/{run_id}/heal/{ev['id']}", json={"worker_id": w, "from_step": lo + 19,
                                                                   "rollback_step": lo - 1})
            assert r.status_code == 200, r.text
        (first, knobs1), (second, knobs2) = levels
        assert (first, second) == (1, 2) and "lr_d" in knobs1 and knobs2 == {"spectral_norm"}
        cfg = c.get(f"/api/runs/{run_id}").json()
        assert cfg["config"]["spectral_norm"] == "both" and cfg["config"]["remedy_of"] == {"signature": "nonfinite",
                                                                                          "level": 2}
        assert [h["changes"].get("spectral_norm") for h in cfg["config_history"]] == [None, "both"]
