"""Server-sent events: /api/runs/{id}/stream and /api/stream against the real server.

A reader thread consumes the stream over real HTTP and records each frame with the
time it arrived, so latency, ids, keep-alives and catch-up hints are observed as a
browser would see them.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.harness import start_server, wait_for


@dataclass
class Frame:
    at: float
    event: str | None = None
    id: str | None = None
    data: dict | None = None
    comment: str | None = None
    retry: int | None = None


@dataclass
class Reader:
    """Parses an SSE response line by line in a thread (the format of the HTML spec)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    frames: list[Frame] = field(default_factory=list)
    status: int | None = None
    content_type: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "Reader":
        threading.Thread(target=self._run, daemon=True).start()
        wait_for(lambda: any(f.event == "ready" for f in self.frames), timeout=10, what="ready event")
        return self

    def _run(self) -> None:
        try:
            self._read()
        except httpx.HTTPError:
            pass  # the server stopped at the end of the test: the frames read so far stand

    def _read(self) -> None:
        with httpx.stream("GET", self.url, headers=self.headers, timeout=httpx.Timeout(30, read=60)) as resp:
            self.status, self.content_type = resp.status_code, resp.headers.get("content-type")
            cur = Frame(at=0)
            for line in resp.iter_lines():
                if self.stop.is_set():
                    return
                if line == "":
                    if cur.event or cur.comment or cur.retry is not None:
                        cur.at = time.monotonic()
                        self.frames.append(cur)
                    cur = Frame(at=0)
                elif line.startswith(":"):
                    cur.comment = line[1:].strip()
                elif line.startswith("retry:"):
                    cur.retry = int(line[6:].strip())
                elif line.startswith("event:"):
                    cur.event = line[6:].strip()
                elif line.startswith("id:"):
                    cur.id = line[3:].strip()
                elif line.startswith("data:"):
                    cur.data = json.loads(line[5:].strip())

    def events(self, name: str) -> list[Frame]:
        return [f for f in self.frames if f.event == name]


def sdk_run(client: httpx.Client, name: str = "stream test") -> int:
    r = client.post("/api/runs", json={"name": name, "config": {"dataset": "ring8", "steps": 100000}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def ingest(client: httpx.Client, run_id: int, series: dict) -> None:
    r = client.post(f"/api/runs/{run_id}/metrics", json={"series": series})
    assert r.status_code == 200, r.text


def test_run_stream_delivers_points_with_ids_fast(server) -> None:
    with server.client() as c:
        run_id = sdk_run(c)
        reader = Reader(f"{server.url}/api/runs/{run_id}/stream").start()
        try:
            assert reader.status == 200 and reader.content_type.startswith("text/event-stream")
            # The first frame tells the browser how fast to reconnect; `ready` says the subscription is live.
            assert reader.frames[0].retry == 1000
            ready = reader.events("ready")[0]
            assert ready.data == {"run_id": run_id, "resume_from": None}
            sent = time.monotonic()
            ingest(c, run_id, {"loss/d": {"steps": [10, 11, 12], "values": [1.2, "nan", 0.9]},
                               "pred/real": {"steps": [12], "values": [0.7]}})
            got = wait_for(lambda: reader.events("metrics"), timeout=5, what="metrics event")[0]
        finally:
            reader.stop.set()
    assert got.at - sent < 1.0, f"ingest-to-event took {got.at - sent:.3f}s"
    assert got.id == "12"  # the highest step in the event: Last-Event-ID on reconnect
    assert got.data["run_id"] == run_id
    assert got.data["metrics"]["loss/d"] == {"steps": [10, 11, 12], "values": [1.2, None, 0.9]}
    assert got.data["metrics"]["pred/real"]["values"] == [0.7]


def test_resume_hint_and_keepalive(home: Path) -> None:
    server = start_server(home, GANSCOPE_SSE_KEEPALIVE_S="0.3")
    try:
        with server.client() as c:
            run_id = sdk_run(c)
        reader = Reader(f"{server.url}/api/runs/{run_id}/stream", headers={"Last-Event-ID": "41"}).start()
        try:
            # A reconnecting browser learns where it left off; the page then fetches since_step=41.
            ready = reader.events("ready")[0]
            assert ready.data["resume_from"] == 41 and ready.id == "41"
            wait_for(lambda: len([f for f in reader.frames if f.comment and f.comment.startswith("keep-alive")]) >= 2,
                     timeout=5, what="two keep-alive comments")
        finally:
            reader.stop.set()
    finally:
        server.stop()


def test_catch_up_after_a_gap_reads_exactly_the_missed_points(server) -> None:
    """The page's catch-up: it held step 20, the stream was down while 21..40 arrived."""
    with server.client() as c:
        run_id = sdk_run(c)
        ingest(c, run_id, {"loss/d": {"steps": list(range(0, 21)), "values": [1.0] * 21}})
        ingest(c, run_id, {"loss/d": {"steps": list(range(21, 41)), "values": [0.5] * 20}})
        reader = Reader(f"{server.url}/api/runs/{run_id}/stream", headers={"Last-Event-ID": "20"}).start()
        reader.stop.set()
        since = reader.events("ready")[0].data["resume_from"]
        missed = c.get(f"/api/runs/{run_id}/metrics", params={"names": "loss/d", "since_step": since}).json()
    assert missed["metrics"]["loss/d"]["steps"] == list(range(21, 41))


def test_all_runs_stream_status_and_throttled_progress(server) -> None:
    with server.client() as c:
        reader = Reader(f"{server.url}/api/stream").start()
        try:
            run_id = sdk_run(c, "listed live")
            status = wait_for(lambda: [f for f in reader.events("status") if f.data.get("id") == run_id],
                              timeout=5, what="status event for the new run")[0]
            assert status.data["name"] == "listed live" and status.data["status"] == "running"
            for k in range(10):  # ten quick batches: progress is throttled, the last one must still arrive
                ingest(c, run_id, {"loss/d": {"steps": [k], "values": [1.0 - k / 10]},
                                   "grad/d/conv1": {"steps": [k], "values": [0.1]}})
            wait_for(lambda: any(f.data["step"] == 9 for f in reader.events("progress")), timeout=5,
                     what="progress up to step 9")
            progress = reader.events("progress")
        finally:
            reader.stop.set()
    # Throttled to a few per second per run, not one per batch; per-layer series are not forwarded.
    assert 1 <= len(progress) < 10
    last = progress[-1].data
    assert last["run_id"] == run_id and last["last"]["loss/d"] == pytest.approx(0.1)
    assert "grad/d/conv1" not in last["last"]
    assert not reader.events("metrics"), "raw metric events must not flood the runs list"


def test_stream_of_unknown_run_is_404(server) -> None:
    r = httpx.get(f"{server.url}/api/runs/424242/stream", timeout=10)
    assert r.status_code == 404


def test_server_stops_promptly_with_open_streams(home: Path) -> None:
    """An event stream never ends by itself; a stopping server must end it rather than wait on it."""
    server = start_server(home)
    with server.client() as c:
        run_id = sdk_run(c)
    readers = [Reader(f"{server.url}/api/runs/{run_id}/stream").start(), Reader(f"{server.url}/api/stream").start()]
    t0 = time.monotonic()
    server.stop(timeout=8)
    took = time.monotonic() - t0
    for r in readers:
        r.stop.set()
    assert took < 5, f"server took {took:.1f}s to stop with two open streams"
