"""Runs a user manages over HTTP: tags, notes, archiving, priority, deletion with files; filters by tag
and config; the workers-and-queue view and a queued job's standing. SQLite and PostgreSQL."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def _job(c, **cfg) -> int:
    r = c.post("/api/jobs", json={"dataset": "ring8", "steps": 50, **cfg})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _claim(c, worker: str, version: str = "9.9.9") -> dict | None:
    r = c.post("/api/workers/claim", json={"worker_id": worker, "host": "box-" + worker, "devices": ["cpu"],
                                           "version": version})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


def test_tags_note_archive_and_filters(any_server) -> None:
    with any_server.client() as c:
        a = _job(c, name="alpha", lr_d=1e-3)
        b = _job(c, name="beta", dataset="grid25")
        sdk = c.post("/api/runs", json={"name": "gamma", "config": {"dataset": "ring8"}}).json()["id"]
        r = c.patch(f"/api/runs/{a}", json={"tags": ["baseline", "lr sweep", "baseline"], "note": "first try\nsecond line"})
        assert r.status_code == 200, r.text
        assert r.json()["tags"] == ["baseline", "lr sweep"] and r.json()["note"] == "first try\nsecond line"
        assert c.patch(f"/api/runs/{sdk}", json={"tags": ["baseline"]}).status_code == 200
        # Every bad field at once, each named.
        bad = c.patch(f"/api/runs/{b}", json={"tags": ["a,b"], "note": "x" * 10_001, "archived": "maybe", "colour": 1})
        assert bad.status_code == 422
        named = {tuple(d["loc"][1:2]) for d in bad.json()["detail"]}
        assert named == {("tags",), ("note",), ("archived",), ("colour",)}, bad.json()
        assert c.patch("/api/runs/987654", json={"note": "x"}).status_code == 404

        ids = lambda **q: sorted(x["id"] for x in c.get("/api/runs", params=q).json()["runs"])  # noqa: E731
        assert ids(tag="baseline") == sorted([a, sdk])
        assert ids(tag="baseline,lr sweep") == [a]
        assert c.get("/api/tags").json()["tags"] == [{"tag": "baseline", "runs": 2}, {"tag": "lr sweep", "runs": 1}]
        # Config filters: exact values, numbers as numbers, several at once.
        assert ids(config="dataset=ring8") == sorted([a, sdk])
        assert ids(config=["dataset=ring8", "lr_d=0.001"]) == [a]
        assert ids(config="lr_d=1e-3") == [a]
        r = c.get("/api/runs", params={"config": "no-equals-sign"})
        assert r.status_code == 422 and "knob=value" in r.text
        # Archived runs leave the default list and come back on request.
        assert c.patch(f"/api/runs/{b}", json={"archived": True}).json()["archived"] is True
        assert b not in ids()
        assert ids(archived="only") == [b]
        assert ids(archived="include") == sorted([a, b, sdk])
        detail = c.get(f"/api/runs/{a}").json()
        assert detail["tags"] == ["baseline", "lr sweep"] and detail["archived"] is False


def test_priority_moves_a_queued_job_and_the_standing_says_why_it_waits(any_server) -> None:
    with any_server.client() as c:
        first, second, third = (_job(c, name=n) for n in ("one", "two", "three"))
        standing = c.get(f"/api/runs/{third}").json()["queue"]
        assert standing["position"] == 3 and "no worker has been seen" in standing["message"]
        assert standing["message"].startswith("3rd in queue")
        assert c.patch(f"/api/runs/{third}", json={"priority": 5}).status_code == 200
        queue = c.get("/api/workers").json()["queue"]
        assert [(q["run_id"], q["position"], q["priority"]) for q in queue] == [(third, 1, 5), (first, 2, 0), (second, 3, 0)]
        assert c.get(f"/api/runs/{third}").json()["config"]["priority"] == 5
        # The worker claims in that order; a running job's priority is no longer the queue's business.
        assert _claim(c, "w1")["run_id"] == third
        assert c.patch(f"/api/runs/{third}", json={"priority": 1}).status_code == 409
        assert c.post("/api/workers/heartbeat", json={"worker_id": "w1", "run_id": third, "step": 7}).status_code == 200
        standing = c.get(f"/api/runs/{second}").json()["queue"]
        assert standing["message"] == f"2nd in queue; 1 worker, busy with #{third} (step 7/50)", standing
        workers = c.get("/api/workers").json()["workers"]
        assert [(w["id"], w["host"], w["devices"], w["version"], w["state"], w["run_id"], w["step"]) for w in workers] == \
            [("w1", "box-w1", ["cpu"], "9.9.9", "busy", third, 7)]
        # An idle worker: the next job will be claimed within seconds.
        assert _claim(c, "w2") is not None  # takes `first`
        assert c.post(f"/api/runs/{first}/finish", json={"worker_id": "w2", "status": "succeeded", "step": 50}).status_code == 200
        assert "1 idle worker will claim it" in c.get(f"/api/runs/{second}").json()["queue"]["message"]
        summaries = {r["id"]: r for r in c.get("/api/runs").json()["runs"]}
        assert summaries[second]["queue_position"] == 1 and summaries[third]["queue_position"] is None


def test_delete_removes_the_run_its_points_and_its_files(any_server) -> None:
    with any_server.client() as c:
        run_id = c.post("/api/runs", json={"name": "to delete", "config": {}}).json()["id"]
        keep = c.post("/api/runs", json={"name": "kept", "config": {}}).json()["id"]
        for rid in (run_id, keep):
            assert c.post(f"/api/runs/{rid}/metrics", json={"series": {"loss/d": {"steps": [1, 2], "values": [1, 2]}}}).status_code == 200
            assert c.post(f"/api/runs/{rid}/samples", params={"step": 2, "kind": "grid"}, content=PNG,
                          headers={"Content-Type": "image/png"}).status_code == 201
        assert c.patch(f"/api/runs/{run_id}", json={"tags": ["gone"]}).status_code == 200
        files = Path(any_server.home) / "artifacts" / "runs" / str(run_id)
        assert any(files.rglob("*.png"))
        assert c.delete(f"/api/runs/{run_id}").json() == {"deleted": run_id}
        assert c.get(f"/api/runs/{run_id}").status_code == 404
        assert c.get(f"/api/runs/{run_id}/metrics").status_code == 404
        assert not files.exists()
        assert c.get("/api/tags").json()["tags"] == []
        assert c.delete(f"/api/runs/{run_id}").status_code == 404
        # The other run is untouched.
        assert c.get(f"/api/runs/{keep}/metrics").json()["metrics"]["loss/d"]["steps"] == [1, 2]
        zipped = c.get(f"/api/runs/{keep}/samples.zip")
        assert zipped.status_code == 200
        assert zipfile.ZipFile(io.BytesIO(zipped.content)).namelist() == ["grid-00000002.png"]
        # A job a worker is training must be cancelled first.
        job = _job(c)
        assert _claim(c, "w-del")["run_id"] == job
        r = c.delete(f"/api/runs/{job}")
        assert r.status_code == 409 and "cancel it first" in r.json()["detail"]
