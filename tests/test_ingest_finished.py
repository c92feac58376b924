"""Ingest after a run has finished answers 409; a client that leaves mid-request is logged in one line."""

from __future__ import annotations

import socket
import time

import httpx

from tests.harness import ServerProc, wait_for

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def _sdk_run(c: httpx.Client) -> int:
    r = c.post("/api/runs", json={"name": "sdk", "config": {"dataset": "ring8"}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_finished_runs_take_no_more_data(any_server: ServerProc) -> None:
    with any_server.client() as c:
        run_id = _sdk_run(c)
        series = {"loss/d": {"steps": [1, 2], "values": [0.5, 0.6]}}
        assert c.post(f"/api/runs/{run_id}/metrics", json={"series": series}).status_code == 200
        r = c.post(f"/api/runs/{run_id}/finish", json={"status": "succeeded", "step": 2})
        assert r.status_code == 200, r.text
        late = {"loss/d": {"steps": [3], "values": [0.7]}}
        r = c.post(f"/api/runs/{run_id}/metrics", json={"series": late})
        assert r.status_code == 409 and "already succeeded" in r.json()["detail"], r.text
        r = c.post(f"/api/runs/{run_id}/samples", params={"step": 3}, content=PNG, headers={"Content-Type": "image/png"})
        assert r.status_code == 409, r.text
        r = c.post(f"/api/runs/{run_id}/snapshots", json={"step": 3, "payload": {"x": 1}})
        assert r.status_code == 409, r.text
        # Nothing changed: the stored points, step and status are what they were at the finish.
        got = c.get(f"/api/runs/{run_id}/metrics").json()["metrics"]["loss/d"]
        assert got["steps"] == [1, 2]
        run = c.get(f"/api/runs/{run_id}").json()
        assert (run["status"], run["step"]) == ("succeeded", 2)
        assert c.get(f"/api/runs/{run_id}/samples").json().get("samples", []) == []


def _half_request(port: int, head: str, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(head.encode() + sent)
        time.sleep(0.3)  # the server is now waiting for the rest of the body


def test_client_leaving_mid_request_is_one_log_line(server: ServerProc) -> None:
    with server.client() as c:
        run_id = _sdk_run(c)
    before = server.log(None)
    _half_request(server.port, f"POST /api/runs/{run_id}/metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n", b'{"series": {')
    _half_request(server.port, f"PUT /api/runs/{run_id}/checkpoints/5 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n", b"\0" * 1000)
    new = wait_for(lambda: (lambda t: t if t.count("disconnected mid-request") >= 2 else None)(
        server.log(None)[len(before):]), timeout=20, what="two disconnect lines")
    lines = [ln for ln in new.splitlines() if ln.strip()]
    assert len(lines) == 2, new
    assert "POST /api/runs/" in lines[0] and "PUT /api/runs/" in lines[1], new
    assert "Traceback" not in new and "unhandled" not in new
    with server.client() as c:
        assert c.get(f"/api/runs/{run_id}/checkpoints").json()["checkpoints"] == []
        assert c.get(f"/api/runs/{run_id}/metrics").json()["metrics"] == {}
