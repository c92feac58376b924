"""The job queue through the real server: atomic claims under races, priority, cancel, stall recovery.

Claims here are plain HTTP calls (no trainer); the real-worker versions of these faults
(kill -9, server restart, racing workers) live with the worker's tests.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerProc, start_server, wait_for

TINY = {"dataset": "ring8", "steps": 10}


def enqueue(c: httpx.Client, **cfg) -> int:
    r = c.post("/api/jobs", json={**TINY, **cfg})
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "queued"
    return r.json()["id"]


def claim(c: httpx.Client, worker: str) -> dict | None:
    r = c.post("/api/workers/claim", json={"worker_id": worker, "host": "test", "devices": ["cpu"]})
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else None


def run_of(c: httpx.Client, rid: int) -> dict:
    r = c.get(f"/api/runs/{rid}")
    assert r.status_code == 200
    return r.json()


def test_two_claimers_racing_for_one_job(any_server: ServerProc) -> None:
    with any_server.client() as c:
        for _ in range(5):  # several rounds: a lucky interleaving must not hide a double claim
            rid = enqueue(c)
            results: list[dict | None] = []
            barrier = threading.Barrier(2)

            def go(name: str) -> None:
                with any_server.client() as own:
                    barrier.wait()
                    results.append(claim(own, name))

            threads = [threading.Thread(target=go, args=(f"racer{i}",)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            got = [r for r in results if r is not None]
            assert len(got) == 1 and got[0]["run_id"] == rid
            assert run_of(c, rid)["status"] == "running"
            holder = run_of(c, rid)["worker_id"]
            assert holder in ("racer0", "racer1")
            assert c.post(f"/api/runs/{rid}/finish", json={"worker_id": holder, "status": "succeeded"}).status_code == 200


def test_forty_jobs_four_claimers_each_exactly_once(any_server: ServerProc) -> None:
    with any_server.client() as c:
        ids = [enqueue(c, name=f"job{i}") for i in range(40)]
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()
    errors: list[str] = []

    def worker(name: str) -> None:
        with any_server.client() as own:
            while True:
                job = claim(own, name)
                if job is None:
                    return
                with lock:
                    claimed.append((name, job["run_id"]))
                hb = own.post("/api/workers/heartbeat", json={"worker_id": name, "run_id": job["run_id"], "step": 5})
                if hb.json()["action"] != "continue":
                    errors.append(f"{name} told {hb.json()} on run {job['run_id']}")
                r = own.post(f"/api/runs/{job['run_id']}/finish",
                             json={"worker_id": name, "status": "succeeded", "step": 10})
                if r.status_code != 200:
                    errors.append(f"{name} finish {job['run_id']}: {r.status_code} {r.text}")

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    counts = Counter(rid for _, rid in claimed)
    assert sorted(counts) == sorted(ids) and set(counts.values()) == {1}
    with any_server.client() as c:
        runs = c.get("/api/runs", params={"limit": 100}).json()["runs"]
        assert {r["status"] for r in runs} == {"succeeded"} and all(r["attempts"] == 1 for r in runs)


def test_a_worker_asking_again_gives_up_its_old_job(server: ServerProc) -> None:
    with server.client() as c:
        a = enqueue(c)
        assert claim(c, "w")["attempt"] == 1
        # the same worker id asks for work: it restarted and lost job a, which is requeued at once
        # (no stall timeout to sit out) and, being first in line, handed out again as attempt 2
        again = claim(c, "w")
        assert again["run_id"] == a and again["attempt"] == 2
        assert "asked for new work" in run_of(c, a)["error"]


def test_claim_order_with_distinct_workers(server: ServerProc) -> None:
    with server.client() as c:
        low = enqueue(c, priority=-5)
        first = enqueue(c)
        high = enqueue(c, priority=10)
        second = enqueue(c)
        order = [claim(c, f"w{i}")["run_id"] for i in range(4)]
        assert order == [high, first, second, low]
        assert claim(c, "w9") is None


def test_cancel_semantics(server: ServerProc) -> None:
    with server.client() as c:
        queued = enqueue(c)
        running = enqueue(c)
        r = c.post(f"/api/runs/{queued}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert c.post(f"/api/runs/{queued}/cancel").status_code == 409
        job = claim(c, "w1")
        assert job["run_id"] == running  # the cancelled one is never handed out
        r = c.post(f"/api/runs/{running}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "running" and r.json()["control"] == "cancel"
        hb = c.post("/api/workers/heartbeat", json={"worker_id": "w1", "run_id": running, "step": 3}).json()
        assert hb["action"] == "cancel"
        ing = c.post(f"/api/runs/{running}/metrics", json={"series": {"loss/d": {"steps": [4], "values": [1.0]}}})
        assert ing.json()["action"] == "cancel"
        r = c.post(f"/api/runs/{running}/finish", json={"worker_id": "w1", "status": "cancelled", "step": 4})
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert run_of(c, running)["finished_at"] is not None
        r = c.post(f"/api/runs/{running}/cancel")
        assert r.status_code == 409 and "already cancelled" in r.json()["detail"]
        assert c.post("/api/runs/9999/cancel").status_code == 404


def test_finish_rules(server: ServerProc) -> None:
    with server.client() as c:
        rid = enqueue(c)
        claim(c, "w1")
        r = c.post(f"/api/runs/{rid}/finish", json={"worker_id": "intruder", "status": "succeeded"})
        assert r.status_code == 409 and "does not hold" in r.json()["detail"]
        r = c.post(f"/api/runs/{rid}/finish", json={"worker_id": "w1", "status": "exploded"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "status"
        assert c.post(f"/api/runs/{rid}/finish", json={"worker_id": "w1", "status": "failed",
                                                       "error": "CUDA out of memory"}).status_code == 200
        # a retried finish (the answer was lost) is harmless; a different verdict is not
        assert c.post(f"/api/runs/{rid}/finish", json={"worker_id": "w1", "status": "failed"}).status_code == 200
        assert c.post(f"/api/runs/{rid}/finish", json={"worker_id": "w1", "status": "succeeded"}).status_code == 409
        run = run_of(c, rid)
        assert run["status"] == "failed" and run["error"] == "CUDA out of memory"


def test_handback_requeues_without_counting_an_attempt(server: ServerProc) -> None:
    with server.client() as c:
        rid = enqueue(c, max_attempts=1)
        assert claim(c, "w1")["attempt"] == 1
        assert c.put(f"/api/runs/{rid}/checkpoints/40", content=b"state").status_code == 201
        r = c.post(f"/api/runs/{rid}/finish", json={"worker_id": "w1", "status": "handback", "step": 41})
        assert r.json()["status"] == "queued"
        again = claim(c, "w2")
        assert again["run_id"] == rid and again["attempt"] == 1
        assert again["resume"] == {"step": 40, "url": f"/api/runs/{rid}/checkpoints/latest"}
        # the first worker comes back late: the job is no longer its own
        hb = c.post("/api/workers/heartbeat", json={"worker_id": "w1", "run_id": rid, "step": 42}).json()
        assert hb["action"] == "release"


@pytest.fixture
def fast_stall_server(home: Path):
    s = start_server(home, GANSCOPE_STALL_SECONDS="1")
    yield s
    s.stop()


def test_silent_worker_job_is_requeued_then_failed(fast_stall_server: ServerProc) -> None:
    s = fast_stall_server
    with s.client() as c:
        rid = enqueue(c, max_attempts=2)
        claim(c, "w1")
        assert c.put(f"/api/runs/{rid}/checkpoints/7", content=b"ckpt").status_code == 201
        # w1 goes silent: the job comes back to the queue, resumable from its checkpoint
        run = wait_for(lambda: (r := run_of(c, rid))["status"] == "queued" and r, timeout=15, what="requeue")
        assert run["attempts"] == 1 and run["worker_id"] is None and "w1 went silent" in run["error"]
        job = claim(c, "w2")
        assert job["run_id"] == rid and job["attempt"] == 2 and job["resume"]["step"] == 7
        hb = c.post("/api/workers/heartbeat", json={"worker_id": "w1", "run_id": rid, "step": 9}).json()
        assert hb["action"] == "release"
        assert c.post(f"/api/runs/{rid}/finish", json={"worker_id": "w1", "status": "succeeded"}).status_code == 409
        # w2 goes silent too: out of attempts, the job fails with the reason
        run = wait_for(lambda: (r := run_of(c, rid))["status"] == "failed" and r, timeout=15, what="failure")
        assert "gave up after 2 of 2 attempts" in run["error"] and run["finished_at"]


def test_heartbeats_keep_a_job_alive_and_cancel_of_a_dead_worker_ends(fast_stall_server: ServerProc) -> None:
    s = fast_stall_server
    with s.client() as c:
        rid = enqueue(c)
        claim(c, "w1")
        for _ in range(8):  # 2.4 s of heartbeats, beyond the 1 s stall limit
            assert c.post("/api/workers/heartbeat", json={"worker_id": "w1", "run_id": rid}).json()["action"] == "continue"
            time.sleep(0.3)
        assert run_of(c, rid)["status"] == "running"
        c.post(f"/api/runs/{rid}/cancel")
        # the worker dies before it hears of the cancel: the run still ends, as cancelled, never 'running'
        run = wait_for(lambda: (r := run_of(c, rid))["status"] == "cancelled" and r, timeout=15, what="cancel")
        assert run["finished_at"] is not None


def test_worker_calls_validate_their_bodies(server: ServerProc) -> None:
    with server.client() as c:
        r = c.post("/api/workers/claim", json={"host": "x"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "worker_id"]
        r = c.post("/api/workers/heartbeat", json={"worker_id": "a b/../c", "run_id": 1})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "worker_id"]
        assert c.post("/api/runs/12345/finish", json={"worker_id": "w", "status": "succeeded"}).status_code == 404
        hb = c.post("/api/workers/heartbeat", json={"worker_id": "w", "run_id": 12345}).json()
        assert hb["action"] == "release"
