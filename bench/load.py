"""Load: one real server, 4 ingest loops (standing in for workers), 20 SSE clients (5 never reading), a loop
of metric reads; for a bounded time on SQLite or PostgreSQL (issue 14, "bounded memory").

Prints p50/p99 of reads (4 metrics, 500 points each, from runs holding 5,000) and of timed ingest calls
(4 metrics x 50 points), the count of 5xx answers and transport errors, and the server's RSS at the end of
warm-up and at the end. Last line: `load_p99_ms <read p99 ms> errors <n> rss_growth_mb <mb>`.
Targets: read p99 <= 100 ms, 0 errors, RSS growth after warm-up <= 20 MB.

Usage: python -m bench.load [--db sqlite|postgres] [--seconds 60] [--warmup 15]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import create_pg_database, drop_pg_database, start_server  # noqa: E402

NAMES = ("loss/d", "loss/g", "pred/real", "pred/fake")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def batch(first: int, n: int) -> dict:
    steps = list(range(first, first + n))
    return {"series": {name: {"steps": steps, "values": [float(np.sin(s / 50.0)) for s in steps]} for name in NAMES}}


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reads: list[float] = []
        self.ingests: list[float] = []
        self.errors = 0

    def add(self, kind: list[float], ms: float, status: int | None) -> None:
        with self.lock:
            kind.append(ms)
            if status is None or status >= 500:
                self.errors += 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=15.0)
    ap.add_argument("--detectors", choices=("on", "off"), default="on")
    ap.add_argument("--stalled", type=int, default=5, help="SSE clients that never read (of the 20)")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="gs-load-"))
    url = create_pg_database() if args.db == "postgres" else None
    server = start_server(home, database_url=url, GANSCOPE_SSE_SEND_TIMEOUT_S="5",
                          GANSCOPE_DETECTORS=args.detectors)
    stats, stop, measuring = Stats(), threading.Event(), threading.Event()
    threads: list[threading.Thread] = []
    try:
        with server.client() as c:
            runs = [c.post("/api/runs", json={"name": f"load{i}", "config": {"dataset": "ring8"}}).json()["id"]
                    for i in range(4)]
            for rid in runs:  # 5,000 points per metric to read back downsampled
                for first in range(1, 5001, 1000):
                    c.post(f"/api/runs/{rid}/metrics", json=batch(first, 1000)).raise_for_status()

        def ingest(rid: int) -> None:
            step = 5001
            with server.client() as c:
                while not stop.is_set():
                    t = time.perf_counter()
                    try:
                        status = c.post(f"/api/runs/{rid}/metrics", json=batch(step, 50)).status_code
                    except httpx.HTTPError:
                        status = None
                    if measuring.is_set():
                        stats.add(stats.ingests, (time.perf_counter() - t) * 1000, status)
                    step += 50
                    time.sleep(0.05)

        def read() -> None:
            with server.client() as c:
                i = 0
                while not stop.is_set():
                    rid = runs[i % 4]
                    i += 1
                    t = time.perf_counter()
                    try:
                        r = c.get(f"/api/runs/{rid}/metrics", params={"names": ",".join(NAMES), "max_points": 500})
                        status = r.status_code
                    except httpx.HTTPError:
                        status = None
                    if measuring.is_set():
                        stats.add(stats.reads, (time.perf_counter() - t) * 1000, status)
                    time.sleep(0.02)

        def sse_reader(rid: int) -> None:
            while not stop.is_set():
                try:
                    with httpx.stream("GET", f"{server.url}/api/runs/{rid}/stream", timeout=10) as r:
                        for _ in r.iter_lines():
                            if stop.is_set():
                                return
                except httpx.HTTPError:
                    time.sleep(0.2)

        stalled = []
        for k in range(args.stalled):  # never read: the server must drop them, not hold their events
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", server.port))
            s.sendall(f"GET /api/runs/{runs[k % 4]}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            stalled.append(s)
        targets = [(ingest, (r,)) for r in runs] + [(read, ())] + [(sse_reader, (runs[k % 4],)) for k in range(20 - args.stalled)]
        for fn, a in targets:
            threads.append(threading.Thread(target=fn, args=a, daemon=True))
            threads[-1].start()
        time.sleep(args.warmup)
        rss_warm = rss_mb(server.proc.pid)
        measuring.set()
        timeline = [rss_warm]  # every tenth of the measured time: flat, or still climbing at the end?
        for _ in range(10):
            time.sleep(args.seconds / 10)
            timeline.append(rss_mb(server.proc.pid))
        measuring.clear()
        rss_end = timeline[-1]
        stop.set()
        for s in stalled:
            s.close()
    finally:
        stop.set()
        server.stop()
        if url:
            drop_pg_database(url)
    reads, ingests = np.array(stats.reads), np.array(stats.ingests)
    print(f"db {args.db}: {len(reads)} reads p50 {np.percentile(reads, 50):.1f} ms p99 {np.percentile(reads, 99):.1f} ms; "
          f"{len(ingests)} ingests p50 {np.percentile(ingests, 50):.1f} ms p99 {np.percentile(ingests, 99):.1f} ms")
    print(f"errors (5xx or transport) {stats.errors}; server RSS {rss_warm:.1f} MB after warm-up, {rss_end:.1f} MB at end")
    print("server RSS every tenth of the measured time (MB): " + " ".join(f"{x:.0f}" for x in timeline))
    print(f"load_p99_ms {np.percentile(reads, 99):.1f} errors {stats.errors} rss_growth_mb {rss_end - rss_warm:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
