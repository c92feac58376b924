"""Ingest and read benchmark: ganscope against raw sqlite3, MLflow's SQL store and TensorBoard.

One stream for every store: 20 metrics x 10,000 steps (200,000 points), float64 values.
A second stream measures what the detectors cost where they really work: the 42 metrics a real
DCGAN run logs (a healthy 16px `shapes` run recorded at start-up, its plateau tiled to 10,000
steps), posted in 50-step flushes as a worker does, to SDK runs carrying that run's config.

* raw sqlite3: executemany of every point into an indexed (run, name, step, value) table, one
  transaction (the floor: no HTTP, no JSON, no chunking), same WAL settings as ganscope's.
* ganscope: the real server (uvicorn subprocess via tests/harness.py, SQLite), fed the way a worker
  feeds it: one keep-alive connection, sequential POSTs of 100 steps x 20 metrics, JSON encoded
  inside the timed loop. Detectors off for the headline figure.
* detectors on against off (`detector_overhead`, on both streams): two servers, every batch posted
  to each in turn (the order alternating), each request timed on its own; the median over passes of
  off/on throughput. Sequential whole passes measured the machine's drift instead: two identical
  servers differed by up to 16% that way on this 2-core machine.
* MLflow: MlflowClient on a sqlite:// tracking URI, log_batch of 1,000 metrics per call.
* TensorBoard: SummaryWriter.add_scalar per point, read back with EventAccumulator.

Reads: one metric's full 10,000-point history through each store's own read path (ours: GET
/api/runs/{id}/metrics over HTTP), median of several; and a 1,000,000-point metric downsampled to
2,000 points through our API. Usage: python -m bench.ingest [--repeat N] [--skip-peers] [--control]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import ServerProc, start_server  # noqa: E402

N_METRICS, N_STEPS, BATCH_STEPS = 20, 10_000, 100
NAMES = [f"bench/m{i:02d}" for i in range(N_METRICS)]
POINTS = N_METRICS * N_STEPS


def make_stream() -> np.ndarray:
    rng = np.random.default_rng(1234)
    return np.cumsum(rng.standard_normal((N_METRICS, N_STEPS)), axis=1) * 0.01 + 1.0


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (Linux /proc; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def server_cpu_ms(pid: int, fn: Callable[[], object], n: int) -> float:
    """Server CPU per call: on a busy machine wall time measures the queue for a core, this does not."""
    before = proc_cpu_s(pid)
    for _ in range(n):
        fn()
    return (proc_cpu_s(pid) - before) * 1000 / n


def median_ms(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def raw_rows(values: np.ndarray) -> list[tuple]:
    return [(1, NAMES[i], s, float(values[i, s])) for s in range(N_STEPS) for i in range(N_METRICS)]


def raw_sqlite_pass(path: Path, rows: list[tuple], per_commit: int | None = None) -> tuple[float, sqlite3.Connection]:
    """Points/s of executemany into an indexed table; one transaction unless per_commit is given."""
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE points (run_id INTEGER, name TEXT, step INTEGER, value REAL)")
    con.execute("CREATE INDEX ix_points ON points (run_id, name, step)")
    per = per_commit or len(rows)
    t = time.perf_counter()
    for lo in range(0, len(rows), per):
        con.executemany("INSERT INTO points VALUES (?, ?, ?, ?)", rows[lo:lo + per])
        con.commit()
    return POINTS / (time.perf_counter() - t), con


def raw_sqlite_read_ms(con: sqlite3.Connection) -> float:
    def read() -> None:
        rows = con.execute("SELECT step, value FROM points WHERE run_id = 1 AND name = ? ORDER BY step",
                           (NAMES[0],)).fetchall()
        assert len(rows) == N_STEPS
    return median_ms(read, 20)


@dataclass
class Stream:
    """What one pass posts: batches as {name: (steps, values)} lists, and the SDK run's config."""

    label: str
    batches: list[dict[str, tuple[list[int], list[float]]]]
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def points(self) -> int:
        return sum(len(st) for b in self.batches for st, _ in b.values())

    @property
    def names(self) -> int:
        return len({n for b in self.batches for n in b})


def generic_stream(values: np.ndarray) -> Stream:
    batches = []
    for lo in range(0, N_STEPS, BATCH_STEPS):
        steps = list(range(lo, lo + BATCH_STEPS))
        batches.append({n: (steps, values[i, lo:lo + BATCH_STEPS].tolist()) for i, n in enumerate(NAMES)})
    return Stream("generic", batches)


GAN_FLUSH_STEPS = 50  # a worker's flush_every
GAN_RECORDED_STEPS, GAN_PLATEAU_FROM = 300, 150


def gan_stream() -> Stream:
    """A real healthy run's metrics (tests/scenarios.py's shapes_healthy: 16px, CPU, ~15 s), tiled.

    Steps 0-299 are the run itself, so the detectors see a real start (step-0 weights, early gradient
    levels); beyond that its steps 150-299 repeat, keeping the run on its healthy plateau.
    """
    from tests.scenarios import QUICK, run

    sc = next(s for s in QUICK if s.name == "shapes_healthy")
    recorded = run(sc).metrics
    by_step = {n: dict(zip(st.tolist(), v.tolist())) for n, (st, v) in recorded.items()}
    period = GAN_RECORDED_STEPS - GAN_PLATEAU_FROM

    def source(step: int) -> int:
        return step if step < GAN_RECORDED_STEPS else GAN_PLATEAU_FROM + (step - GAN_RECORDED_STEPS) % period
    batches = []
    for lo in range(0, N_STEPS, GAN_FLUSH_STEPS):
        batch = {}
        for n, points in by_step.items():  # a metric not logged at a source step is not logged at its copies
            steps = [k for k in range(lo, lo + GAN_FLUSH_STEPS) if source(k) in points]
            if steps:
                batch[n] = (steps, [points[source(k)] for k in steps])
        batches.append(batch)
    return Stream("gan", batches, {**sc.config, "steps": N_STEPS})


def ingest_http(c: httpx.Client, run_id: int, stream: Stream) -> float:
    t = time.perf_counter()
    for batch in stream.batches:
        body = orjson.dumps({"series": {n: {"steps": st, "values": v} for n, (st, v) in batch.items()}})
        r = c.post(f"/api/runs/{run_id}/metrics", content=body, headers={"content-type": "application/json"})
        if r.status_code != 200 or r.json()["accepted"] != sum(len(st) for st, _ in batch.values()):
            raise RuntimeError(f"ingest failed: {r.status_code} {r.text[:200]}")
    return time.perf_counter() - t


def ours_pass(server: ServerProc, c: httpx.Client, stream: Stream, label: str) -> tuple[float, float, int]:
    """(points/s, server CPU seconds, run id) of one pass of the stream into a fresh SDK run."""
    r = c.post("/api/runs", json={"name": label, "config": stream.config})
    if r.status_code != 201:
        raise RuntimeError(f"creating the run failed: {r.status_code} {r.text[:200]}")
    run_id = r.json()["id"]
    before = proc_cpu_s(server.proc.pid)
    elapsed = ingest_http(c, run_id, stream)
    return stream.points / elapsed, proc_cpu_s(server.proc.pid) - before, run_id


def paired_pass(servers: dict[str, ServerProc], clients: dict[str, httpx.Client], stream: Stream,
                label: str, flip: bool) -> tuple[dict[str, tuple[float, float]], dict[str, int]]:
    """({mode: (points/s, server CPU seconds)}, {mode: run id}): each batch posted to every server in turn, the order
    alternating batch by batch, each request timed on its own. Whatever else the machine does meets all
    servers alike at a batch's scale, where whole passes one after another measure that drift instead
    (two identical servers differed by up to 16% that way here)."""
    runs = {}
    for mode, c in clients.items():
        r = c.post("/api/runs", json={"name": f"{label}-{mode}", "config": stream.config})
        if r.status_code != 201:
            raise RuntimeError(f"creating the run failed: {r.status_code} {r.text[:200]}")
        runs[mode] = r.json()["id"]
    order = list(servers)[::-1] if flip else list(servers)
    elapsed = dict.fromkeys(servers, 0.0)
    cpu_before = {m: proc_cpu_s(s.proc.pid) for m, s in servers.items()}
    for i, batch in enumerate(stream.batches):
        body = orjson.dumps({"series": {n: {"steps": st, "values": v} for n, (st, v) in batch.items()}})
        want = sum(len(st) for st, _ in batch.values())
        for mode in order if i % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            r = clients[mode].post(f"/api/runs/{runs[mode]}/metrics", content=body,
                                   headers={"content-type": "application/json"})
            elapsed[mode] += time.perf_counter() - t
            if r.status_code != 200 or r.json()["accepted"] != want:
                raise RuntimeError(f"ingest failed: {r.status_code} {r.text[:200]}")
    return {m: (stream.points / elapsed[m], proc_cpu_s(s.proc.pid) - cpu_before[m]) for m, s in servers.items()}, runs


def ours_reads(server: ServerProc, c: httpx.Client, run_id: int) -> dict[str, float]:
    out: dict[str, float] = {}

    def read10k() -> None:
        m = c.get(f"/api/runs/{run_id}/metrics", params={"names": NAMES[0], "max_points": N_STEPS}).json()
        assert len(m["metrics"][NAMES[0]]["steps"]) == N_STEPS
    read10k()
    out["read10k_ms"] = median_ms(read10k, 30)
    out["read10k_cpu_ms"] = server_cpu_ms(server.proc.pid, read10k, 100)

    # A 1,000,000-point metric (a long run's loss), read downsampled to 2,000 points.
    big = c.post("/api/runs", json={"name": "bench-1m"}).json()["id"]
    rng = np.random.default_rng(5)
    for lo in range(0, 1_000_000, 20_000):
        vals = (np.sin(np.arange(lo, lo + 20_000) / 5000.0) + 0.05 * rng.standard_normal(20_000)).tolist()
        body = orjson.dumps({"series": {"loss/d": {"steps": list(range(lo, lo + 20_000)), "values": vals}}})
        r = c.post(f"/api/runs/{big}/metrics", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text

    def read1m() -> None:
        m = c.get(f"/api/runs/{big}/metrics", params={"names": "loss/d", "max_points": 2000}).json()
        assert 0 < len(m["metrics"]["loss/d"]["steps"]) <= 2000
    read1m()
    out["read1m_ms"] = median_ms(read1m, 15)
    out["read1m_cpu_ms"] = server_cpu_ms(server.proc.pid, read1m, 30)
    return out


def bench_mlflow(tmp: Path, values: np.ndarray) -> tuple[float, float] | str:
    try:
        import logging

        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient
        logging.getLogger("mlflow").setLevel(logging.ERROR)
        logging.getLogger("alembic").setLevel(logging.ERROR)
    except ImportError as exc:
        return f"not installed ({exc}); pip install 'ganscope[bench]'"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("bench")).info.run_id
    ts = int(time.time() * 1000)
    metrics = [Metric(NAMES[i], float(values[i, s]), ts, s) for s in range(N_STEPS) for i in range(N_METRICS)]
    t = time.perf_counter()
    for lo in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[lo:lo + 1000])
    elapsed = time.perf_counter() - t

    def read() -> None:
        assert len(client.get_metric_history(run_id, NAMES[0])) == N_STEPS
    return POINTS / elapsed, median_ms(read, 3)


def bench_tensorboard(tmp: Path, values: np.ndarray) -> tuple[float, float] | str:
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        return f"not installed ({exc}); pip install 'ganscope[bench]' (and torch for SummaryWriter)"
    logdir = tmp / "tb"
    t = time.perf_counter()
    writer = SummaryWriter(log_dir=str(logdir))
    for s in range(N_STEPS):
        for i in range(N_METRICS):
            writer.add_scalar(NAMES[i], float(values[i, s]), s)
    writer.close()
    elapsed = time.perf_counter() - t

    def read() -> None:
        # TensorBoard's read path: load the event file(s), then take one tag's scalars.
        acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
        acc.Reload()
        assert len(acc.Scalars(NAMES[0])) == N_STEPS
    return POINTS / elapsed, median_ms(read, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3,
                    help="interleaved passes of raw sqlite3 / ganscope (detectors off) / ganscope (on); best kept")
    ap.add_argument("--skip-peers", action="store_true", help="skip MLflow and TensorBoard")
    ap.add_argument("--control", action="store_true",
                    help="run the 'on' server with detectors off too: detector_overhead is then the method's noise floor")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    values = make_stream()
    with tempfile.TemporaryDirectory(prefix="ganscope-bench-") as d:
        tmp = Path(d)
        streams = {"generic": generic_stream(values), "gan": gan_stream()}
        print(f"stream: {N_METRICS} metrics x {N_STEPS} steps = {POINTS} points; ganscope batches of "
              f"{BATCH_STEPS} steps x {N_METRICS} metrics over one HTTP connection; {args.repeat} "
              "interleaved passes (best kept; detectors: medians of paired passes)", flush=True)
        gan = streams["gan"]
        print(f"gan stream: {gan.names} metrics of a real 16px DCGAN run x {N_STEPS} steps = {gan.points} points, "
              f"in {GAN_FLUSH_STEPS}-step flushes", flush=True)
        rows = raw_rows(values)
        modes = ("off", "on")
        servers = {mode: start_server(tmp / f"ganscope-{mode}", GANSCOPE_DETECTORS="off" if args.control else mode)
                   for mode in modes}
        best = {"raw": 0.0, "raw_batched": 0.0, "off": 0.0}
        paired: dict[str, list[dict[str, tuple[float, float]]]] = {name: [] for name in streams}
        alerts_on_healthy = 0
        try:
            clients = {m: httpx.Client(base_url=s.url, timeout=60.0) for m, s in servers.items()}
            raw_con = None
            run_off = 0
            # Interleaved, so a burst of load from elsewhere on the machine hits every contender alike.
            for k in range(args.repeat):
                pts, con = raw_sqlite_pass(tmp / f"raw{k}.db", rows)
                best["raw"] = max(best["raw"], pts)
                if raw_con is not None:
                    raw_con.close()
                raw_con = con
                pts, con = raw_sqlite_pass(tmp / f"raw-batched{k}.db", rows, N_METRICS * BATCH_STEPS)
                best["raw_batched"] = max(best["raw_batched"], pts)
                con.close()
                pts, _, run_off = ours_pass(servers["off"], clients["off"], streams["generic"], f"bench-{k}")
                best["off"] = max(best["off"], pts)
                for name, stream in streams.items():  # detectors on against off, batch by batch
                    res, rids = paired_pass(servers, clients, stream, f"bench-{name}-{k}", flip=k % 2 == 1)
                    paired[name].append(res)
                    if name == "gan":  # the stream is healthy: what was measured is the common path
                        time.sleep(0.8)  # the sweeper judges what the last batches left queued
                        alerts_on_healthy += len(clients["on"].get(f"/api/runs/{rids['on']}/alerts").json()["alerts"])
            raw_read = raw_sqlite_read_ms(raw_con)
            raw_con.close()
            reads = ours_reads(servers["off"], clients["off"], run_off)
            for cl in clients.values():
                cl.close()
        finally:
            for s in servers.values():
                s.stop()
        off = best["off"]
        print(f"raw_sqlite3     ingest {best['raw']:12,.0f} points/s   read10k {raw_read:8.2f} ms   (one transaction: "
              f"the floor; committed per {N_METRICS * BATCH_STEPS} points: {best['raw_batched']:,.0f} points/s)")
        print(f"ganscope(http)  ingest {off:12,.0f} points/s   read10k {reads['read10k_ms']:8.2f} ms   "
              f"read1m->2k {reads['read1m_ms']:.2f} ms")
        overhead = {}
        for name, stream in streams.items():
            passes = paired[name]
            wall = statistics.median(p["off"][0] / p["on"][0] for p in passes)
            cpu = statistics.median(p["on"][1] / p["off"][1] for p in passes)
            overhead[name] = wall
            print(f"detectors, {name} stream ({stream.points:,} points, {len(stream.batches)} batches): ingest "
                  f"{statistics.median(p['off'][0] for p in passes):,.0f} points/s off, "
                  f"{statistics.median(p['on'][0] for p in passes):,.0f} on; time x{wall:.3f}, server CPU x{cpu:.3f} "
                  f"(medians over {len(passes)} paired passes; per pass: "
                  + ", ".join(f"{p['off'][0] / p['on'][0]:.3f}" for p in passes) + ")")
        print(f"alerts raised on the healthy gan stream: {alerts_on_healthy}")
        print(f"server CPU: read10k {reads['read10k_cpu_ms']:.2f} ms/call, read1m->2k {reads['read1m_cpu_ms']:.2f} "
              f"ms/call (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        if args.control:
            print("control run: both servers had detectors off; the figures below are the method's noise floor")
        print(f"detector_overhead {max(overhead.values()):.3f} (generic {overhead['generic']:.3f}, gan "
              f"{overhead['gan']:.3f}; target <= 1.05)", flush=True)
        if not args.skip_peers:
            for label, fn in (("mlflow(sqlite)", bench_mlflow), ("tensorboard", bench_tensorboard)):
                res = fn(tmp, values)
                if isinstance(res, str):
                    print(f"{label:15} skipped: {res}", flush=True)
                else:
                    print(f"{label:15} ingest {res[0]:12,.0f} points/s   read10k {res[1]:8.2f} ms   "
                          f"(ganscope ingest = {off / res[0]:.1f}x)", flush=True)
        print("targets: ingest >= 0.5x raw sqlite3, read10k <= 15 ms, read1m <= 50 ms")
        print(f"ingest_vs_sqlite3 {off / best['raw']:.2f} read10k_ms {reads['read10k_ms']:.2f} "
              f"read1m_ms {reads['read1m_ms']:.2f}")


if __name__ == "__main__":
    main()
