"""Bounded memory under slow event-stream clients (server/live.py, server/api/stream.py).

A client that connects to /api/runs/{id}/stream and never reads is dropped: the server closes its
connection once a frame has waited GANSCOPE_SSE_SEND_TIMEOUT_S, and the broker unsubscribes it once its
queue is full, so nothing piles up for it. A reader that keeps up is not affected, and a reconnect with
Last-Event-ID is told where to resume from. Real server, real sockets.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx

from tests.harness import ServerProc, start_server, wait_for

BATCHES = 400  # ~9 MB of events: more than the kernel buffers a localhost socket pair holds
POINTS = 500


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _never_reading(port: int, run_id: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's writes back up soon
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET /api/runs/{run_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
              .encode())
    return s


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    """Read everything the server sent; True when it ends in EOF (the server closed), False on timeout."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:  # an overall deadline: keep-alive frames would reset a per-recv one
            s.settimeout(max(0.1, deadline - time.monotonic()))
            if not s.recv(1 << 16):
                return True
        return False
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_slow_stream_clients_are_dropped_and_readers_keep_up(home: Path) -> None:
    server: ServerProc = start_server(home, GANSCOPE_SSE_SEND_TIMEOUT_S="1", GANSCOPE_DETECTORS="off")
    try:
        with server.client() as c:
            run_id = c.post("/api/runs", json={"name": "sse", "config": {"dataset": "ring8"}}).json()["id"]
        last_id: list[int] = []

        def read_all() -> None:
            with httpx.stream("GET", f"{server.url}/api/runs/{run_id}/stream", timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("id: "):
                        last_id.append(int(line[4:]))
                        if last_id[-1] == BATCHES * POINTS:
                            return

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        slow = [_never_reading(server.port, run_id) for _ in range(5)]
        time.sleep(1.0)
        rss_start = _rss_mb(server.proc.pid)
        with server.client() as c:
            for b in range(BATCHES):
                steps = list(range(b * POINTS + 1, (b + 1) * POINTS + 1))
                series = {f"m/{k}": {"steps": steps, "values": [float(k)] * POINTS} for k in range(4)}
                assert c.post(f"/api/runs/{run_id}/metrics", json={"series": series}).status_code == 200
        reader.join(60)
        # The reader that keeps up saw every batch, to the last step.
        assert last_id and last_id[-1] == BATCHES * POINTS, last_id[-3:]
        # Every never-reading client was disconnected by the server (EOF, not our timeout).
        for s in slow:
            assert _closed_by_server(s, timeout=15), "a client that never reads is still connected"
            s.close()
        wait_for(lambda: server.log(None).count("event stream dropped") >= 5, timeout=10, what="5 drop lines")
        rss_end = _rss_mb(server.proc.pid)
        print(f"server RSS {rss_start:.1f} -> {rss_end:.1f} MB with 5 never-reading clients")
        assert rss_end - rss_start < 40, (rss_start, rss_end)
        # A reconnect with Last-Event-ID is told where to resume (the page then reads since that step).
        with httpx.stream("GET", f"{server.url}/api/runs/{run_id}/stream", timeout=10,
                          headers={"Last-Event-ID": str(POINTS * 3)}) as r:
            data = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(data[6:])["resume_from"] == POINTS * 3
        with server.client() as c:
            r = c.get(f"/api/runs/{run_id}/metrics", params={"since_step": POINTS * 3, "names": "m/0",
                                                            "max_points": 10**6})
            assert len(r.json()["metrics"]["m/0"]["steps"]) == (BATCHES - 3) * POINTS
        assert "Traceback" not in server.log(None)
    finally:
        server.stop()
