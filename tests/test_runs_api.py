"""Jobs and runs REST API through the real server: create/validate, list/filter/sort, detail, metric reads."""

from __future__ import annotations

import math
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.harness import ServerProc, start_server


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    s = start_server(tmp_path_factory.mktemp("runs"), GANSCOPE_MAX_BATCH_SIZE="256", GANSCOPE_MAX_STEPS="100000")
    yield s
    s.stop()


@pytest.fixture
def c(srv: ServerProc) -> Iterator[httpx.Client]:
    with srv.client() as client:
        yield client


def test_job_defaults_and_shape(c: httpx.Client) -> None:
    r = c.post("/api/jobs", json={"name": "<b>dcgan</b>", "dataset": "shapes", "steps": 50})
    assert r.status_code == 201
    job = r.json()
    assert job["status"] == "queued" and job["kind"] == "job" and job["name"] == "<b>dcgan</b>"
    for key in ("id", "health", "step", "total_steps", "created_at", "started_at", "finished_at", "dataset",
                "key_config", "last", "alert_count", "open_alerts", "attempts", "worker_id", "error", "stop_reason"):
        assert key in job
    detail = c.get(f"/api/runs/{job['id']}").json()
    assert detail["config"]["lr_d"] == 2e-4 and detail["config"]["beta1"] == 0.5 and detail["total_steps"] == 50
    assert detail["metric_names"] == [] and detail["key_config"]["batch_size"] == 128


def test_job_422_names_every_bad_field(c: httpx.Client) -> None:
    r = c.post("/api/jobs", json={"lr_d": -1, "image_size": 48, "loss": "wasserstein", "lr_gg": 1})
    assert r.status_code == 422
    locs = {tuple(d["loc"]) for d in r.json()["detail"]}
    assert locs == {("body", "lr_d"), ("body", "image_size"), ("body", "loss"), ("body", "lr_gg")}
    assert any("unknown field" in d["msg"] for d in r.json()["detail"])
    # operator limits (this server caps batch_size at 256 and steps at 100000)
    r = c.post("/api/jobs", json={"batch_size": 1024, "steps": 10**6})
    assert r.status_code == 422
    msgs = {d["loc"][-1]: d["msg"] for d in r.json()["detail"]}
    assert "cap of 256" in msgs["batch_size"] and "cap of 100000" in msgs["steps"]
    r = c.post("/api/jobs", json={"detectors": {"Bad Id": {"x": 1}}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "detectors"]
    r = c.post("/api/jobs", json={"detectors": {"d_overpowering": {"loss_d_maxx": 0.1}}})
    assert r.status_code == 422 and "unknown threshold 'loss_d_maxx'" in r.json()["detail"][0]["msg"]
    r = c.post("/api/jobs", json={"detectors": {"collapse": {}}})
    assert r.status_code == 422 and "unknown signature 'collapse'" in r.json()["detail"][0]["msg"]
    assert c.post("/api/jobs", json={"detectors": {"mode_collapse": {"window": 200}}}).status_code == 201
    r = c.post("/api/jobs", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON object" in r.json()["detail"][0]["msg"]


def test_list_filters_sort_and_pages(c: httpx.Client) -> None:
    ids = [c.post("/api/jobs", json={"name": f"sweep-{i} lr", "dataset": "ring8"}).json()["id"] for i in range(5)]
    c.post(f"/api/runs/{ids[0]}/cancel")
    page = c.get("/api/runs", params={"q": "SWEEP", "limit": 2, "offset": 0, "sort": "-created"}).json()
    assert page["total"] == 5 and [r["id"] for r in page["runs"]] == ids[::-1][:2]
    page2 = c.get("/api/runs", params={"q": "sweep", "limit": 2, "offset": 2}).json()
    assert [r["id"] for r in page2["runs"]] == ids[::-1][2:4]
    asc = c.get("/api/runs", params={"q": "sweep", "sort": "id"}).json()["runs"]
    assert [r["id"] for r in asc] == ids
    cancelled = c.get("/api/runs", params={"status": "cancelled", "q": "sweep"}).json()
    assert [r["id"] for r in cancelled["runs"]] == [ids[0]]
    both = c.get("/api/runs", params={"status": "queued,cancelled", "q": "sweep"}).json()
    assert both["total"] == 5
    assert c.get("/api/runs", params={"q": "100%_literal"}).json()["total"] == 0  # wildcards are literal
    r = c.get("/api/runs", params={"status": "dead", "sort": "colour"})
    assert r.status_code == 422 and {d["loc"][-1] for d in r.json()["detail"]} == {"status", "sort"}
    assert c.get("/api/runs", params={"limit": 0}).status_code == 422


def test_sdk_run_lifecycle(c: httpx.Client) -> None:
    r = c.post("/api/runs", json={"name": "my script", "config": {"lr_d": 1e-3, "dataset": "grid25"}})
    assert r.status_code == 201 and r.json()["status"] == "running" and r.json()["kind"] == "sdk"
    rid = r.json()["id"]
    # The script's own config is never refused for its keys (a value that cannot be a declared knob is only
    # not read as one, and the answer says so); the declared part is validated and named field by field.
    r = c.post("/api/runs", json={"config": {"lr_d": "fast"}})
    assert r.status_code == 201 and "lr_d" in r.json()["notes"][0] and "lr_d" not in r.json()["config"]
    r = c.post("/api/runs", json={"declared": {"lr_d": "fast"}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "declared", "lr_d"]
    steps = list(range(0, 3000))
    c.post(f"/api/runs/{rid}/metrics", json={"series": {"loss/d": {"steps": steps, "values": [1.0] * 3000},
                                                        "grad/d/conv1": {"steps": steps, "values": [2.0] * 3000}}})
    listed = next(x for x in c.get("/api/runs", params={"kind": "sdk"}).json()["runs"] if x["id"] == rid)
    assert listed["last"] == {"loss/d": 1.0}  # per-layer series stay out of the list
    assert c.get(f"/api/runs/{rid}").json()["last"]["grad/d/conv1"] == 2.0
    r = c.post(f"/api/runs/{rid}/finish", json={"status": "succeeded", "step": 2999})
    assert r.status_code == 200 and r.json()["status"] == "succeeded"
    assert c.post(f"/api/runs/{rid}/finish", json={"status": "handback"}).status_code == 409


def test_metric_reads(c: httpx.Client) -> None:
    rid = c.post("/api/runs", json={"name": "reads"}).json()["id"]
    n = 20_000
    steps = list(range(n))
    vals = np.cos(np.arange(n) / 300.0)
    vals[7_777] = 40.0
    vals[12_345] = float("nan")
    for lo in range(0, n, 5000):
        body = {"series": {"loss/d": {"steps": steps[lo:lo + 5000],
                                      "values": [None if math.isnan(x) else x for x in vals[lo:lo + 5000]]},
                           "grad/d/0": {"steps": steps[lo:lo + 5000], "values": [1.0] * 5000},
                           "grad/d/1": {"steps": steps[lo:lo + 5000], "values": [2.0] * 5000},
                           "grad/g/0": {"steps": steps[lo:lo + 5000], "values": [3.0] * 5000}}}
        assert c.post(f"/api/runs/{rid}/metrics", json=body).status_code == 200
    r = c.get(f"/api/runs/{rid}/metrics", params={"names": "loss/d", "max_points": 500})
    assert "NaN" not in r.text and "Infinity" not in r.text
    m = r.json()["metrics"]["loss/d"]
    assert len(m["steps"]) <= 500 and 7_777 in m["steps"] and max(v for v in m["values"] if v is not None) == 40.0
    assert m["values"][m["steps"].index(12_345)] is None
    full = c.get(f"/api/runs/{rid}/metrics", params={"names": "loss/d", "max_points": n}).json()["metrics"]["loss/d"]
    assert full["steps"] == steps
    pref = c.get(f"/api/runs/{rid}/metrics", params={"names": "grad/d/*", "max_points": 10}).json()["metrics"]
    assert sorted(pref) == ["grad/d/0", "grad/d/1"] and all(len(v["steps"]) <= 10 for v in pref.values())
    live = c.get(f"/api/runs/{rid}/metrics", params={"names": "loss/d", "since_step": n - 4}).json()["metrics"]
    assert live["loss/d"]["steps"] == [n - 3, n - 2, n - 1]
    zoom = c.get(f"/api/runs/{rid}/metrics", params={"names": "loss/d", "start": 7_000, "end": 8_000,
                                                     "max_points": 5000}).json()["metrics"]["loss/d"]
    assert zoom["steps"] == list(range(7_000, 8_001))  # a zoomed range comes back at full resolution
    every = c.get(f"/api/runs/{rid}/metrics", params={"max_points": 4}).json()["metrics"]
    assert sorted(every) == ["grad/d/0", "grad/d/1", "grad/g/0", "loss/d"]
    unknown = c.get(f"/api/runs/{rid}/metrics", params={"names": "nope"}).json()["metrics"]
    assert unknown == {"nope": {"steps": [], "values": []}}
    r = c.get(f"/api/runs/{rid}/metrics", params={"start": 10, "end": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "end"]
    assert c.get(f"/api/runs/{rid}/metrics", params={"max_points": 0}).status_code == 422
    assert c.get("/api/runs/31337/metrics").status_code == 404


def test_unknown_run_reads_are_404(c: httpx.Client) -> None:
    for path in ("/api/runs/777777", "/api/runs/777777/samples", "/api/runs/777777/snapshots",
                 "/api/runs/777777/checkpoints"):
        r = c.get(path)
        assert r.status_code == 404 and "777777" in r.json()["detail"], path
    assert c.get("/api/runs/abc").status_code == 422


def test_openapi_documents_the_calls(c: httpx.Client) -> None:
    paths = c.get("/openapi.json").json()["paths"]
    for p in ("/api/jobs", "/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/metrics", "/api/runs/{run_id}/cancel",
              "/api/workers/claim", "/api/workers/heartbeat", "/api/runs/{run_id}/finish"):
        assert p in paths, p
    assert "requestBody" in paths["/api/jobs"]["post"]
