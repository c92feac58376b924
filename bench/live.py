"""Live dashboard benchmark: ingest-to-drawn latency in the browser, and opening a 1,000,000-step run.

1. Latency. An SDK run is open in headless Chromium. Batches (10 steps x 30 metrics, what a
   worker flushes) are POSTed one at a time; the wall-clock time before each POST is compared
   with the time the page records once the new point is on screen (run.js pushes
   {step, t: Date.now()} to window.ganscope.drawLog two animation frames after
   Plotly.extendTraces, i.e. after the frame that shows it). Same machine, same clock.
2. Scale. 1,000,000 steps x 30 metrics are ingested through the API, then the run page is
   opened; the figure is the time from navigation start to every chart drawn (run.js sets
   window.ganscope.readyAt = performance.now() after the last chart's first draw). The browser
   has plotly.js cached from step 1, as a returning user would; a cold open is printed too.

Last line: `live_p95_ms <ms> open_1m_ms <ms>`. Targets: p95 <= 1000, open <= 2000.
Usage: python bench/live.py [--batches 60] [--steps 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.browser import launch_browser, watched_page  # noqa: E402
from tests.harness import start_server  # noqa: E402

# 30 metrics with the product's names, so every chart of the run page is in play.
NAMES = (["loss/d", "loss/d_real", "loss/d_fake", "loss/g", "loss/g_adv", "loss/g_fm",
          "pred/real", "pred/fake", "pred/fake_g"]
         + [f"grad/d/conv{i}" for i in range(1, 6)] + [f"grad/g/convT{i}" for i in range(1, 6)]
         + [f"update/d/conv{i}" for i in range(1, 4)] + [f"update/g/convT{i}" for i in range(1, 4)]
         + ["perf/step_s", "perf/img_s", "sample/diversity", "lr/d", "lr/g"])
assert len(NAMES) == 30


def series(steps: np.ndarray, rng: np.random.Generator) -> dict:
    """Plausible values per metric: a random walk around a level, positive where the metric is."""
    out = {}
    n = steps.size
    for k, name in enumerate(NAMES):
        level = 0.5 + 0.1 * k
        walk = level + 0.05 * np.cumsum(rng.standard_normal(n)) / np.sqrt(max(n, 1))
        vals = np.abs(walk + 0.02 * rng.standard_normal(n)) + 1e-6
        out[name] = {"steps": steps, "values": vals}
    return out


def post(client, run_id: int, body: dict) -> None:
    data = orjson.dumps({"series": body}, option=orjson.OPT_SERIALIZE_NUMPY)
    r = client.post(f"/api/runs/{run_id}/metrics", content=data, headers={"Content-Type": "application/json"})
    r.raise_for_status()


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def bench_latency(server, page, client, batches: int) -> list[float]:
    rng = np.random.default_rng(1)
    run_id = client.post("/api/runs", json={"name": "bench live", "config": {"steps": 10_000_000}}).json()["id"]
    post(client, run_id, series(np.arange(0, 100), rng))  # charts exist before we measure
    page.goto(f"{server.url}/runs/{run_id}")
    page.wait_for_function("window.ganscope && window.ganscope.ready === true", timeout=60_000)
    page.wait_for_timeout(500)
    latencies = []
    step = 100
    for _ in range(batches):
        steps = np.arange(step, step + 10)
        step += 10
        last = int(steps[-1])
        sent_ms = time.time() * 1000
        post(client, run_id, series(steps, rng))
        page.wait_for_function(f"window.ganscope.drawLog.some(e => e.step >= {last})", timeout=30_000, polling=20)
        drawn_ms = page.evaluate(f"window.ganscope.drawLog.find(e => e.step >= {last}).t")
        latencies.append(drawn_ms - sent_ms)
        time.sleep(0.2)  # a worker flushes every few hundred ms at the fastest
    return latencies


def ingest_1m(client, total_steps: int, chunk: int = 25_000) -> tuple[int, float]:
    rng = np.random.default_rng(2)
    run_id = client.post("/api/runs", json={"name": "bench 1M steps x 30 metrics",
                                            "config": {"steps": total_steps}}).json()["id"]
    t0 = time.monotonic()
    for start in range(0, total_steps, chunk):
        post(client, run_id, series(np.arange(start, min(start + chunk, total_steps)), rng))
    return run_id, time.monotonic() - t0


def open_time(page, url: str, charts_expected: int) -> tuple[float, float]:
    """(ms from navigation start to every chart drawn, ms at which the last metrics answer arrived)."""
    page.goto(url)
    page.wait_for_function("window.ganscope && window.ganscope.ready === true", timeout=120_000)
    ms = page.evaluate("window.ganscope.readyAt")
    data_ms = page.evaluate("""Math.max(...performance.getEntriesByType('resource')
        .filter(r => r.name.includes('/metrics?')).map(r => r.responseEnd))""")
    drawn = page.evaluate("[...window.ganscope.charts.values()].filter(c => c.drawn && c.pointCount() > 0).length")
    assert drawn >= charts_expected, f"only {drawn} charts drawn"
    return float(ms), float(data_ms)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, default=None, help="keep the server's home here")
    args = ap.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="ganscope-bench-live-"))
    server = start_server(home)
    try:
        with server.client() as client, launch_browser() as browser:
            with watched_page(browser, server.url) as (page, log):
                lat = bench_latency(server, page, client, args.batches)
                flush = page.evaluate("window.ganscope.flushStats || []")
                print(f"latency over {len(lat)} batches (10 steps x 30 metrics each): "
                      f"p50 {pct(lat, 50):.0f} ms, p95 {pct(lat, 95):.0f} ms, max {max(lat):.0f} ms; "
                      f"in-page draw of one batch (all charts in view) p50 {pct([f['cost'] for f in flush], 50):.0f} ms")
                run_id, took = ingest_1m(client, args.steps)
                print(f"ingested {args.steps:,} steps x {len(NAMES)} metrics in {took:.1f} s "
                      f"({args.steps * len(NAMES) / took / 1e6:.2f} M points/s)")
                url = f"{server.url}/runs/{run_id}"
                # Warm: plotly.js is cached from the latency run, as for anyone who used the dashboard before.
                opens = [open_time(page, url, 10) for _ in range(3)]
                warm = [o[0] for o in opens]
                problems = log.problems()
            with watched_page(browser, server.url) as (cold_page, _):
                cold, _d = open_time(cold_page, url, 10)
            print(f"open run page of {args.steps:,} steps x 30 metrics (all charts drawn): "
                  f"warm {', '.join(f'{w:.0f}' for w in warm)} ms (median {np.median(warm):.0f}; the last metrics "
                  f"answer arrived at {', '.join(f'{o[1]:.0f}' for o in opens)} ms); cold cache {cold:.0f} ms")
            if problems:
                print("page problems:", json.dumps(problems[:10]))
        out = REPO / "bench" / "out"
        out.mkdir(parents=True, exist_ok=True)
        (out / "live.json").write_text(json.dumps({"latency_ms": lat, "open_warm_ms": warm, "open_cold_ms": cold}))
        print(f"live_p95_ms {pct(lat, 95):.0f} open_1m_ms {np.median(warm):.0f}")
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
