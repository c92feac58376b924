"""Every chart of the run page keeps advancing to the run's latest step without a reload, whatever its
metric's cadence, whether it had data when the page loaded, and whether it is scrolled into view.

The regression: charts below the fold skipped their live redraws until scrolled to, so on a page left
open (or pictured whole) 9 of 12 charts sat at their first points while the run was thousands of steps on.
Here the page is opened before the run has any data, in a viewport that shows only the top charts, and
what Plotly has drawn (not just what the page holds) is compared with what the server holds.
"""

from __future__ import annotations

import json
import math
import threading
import time

import httpx
import pytest

from tests.browser import watched_page
from tests.harness import wait_for

pytestmark = pytest.mark.browser
STATE = "window.ganscope.chartState()"
# Cadences of a DCGAN-like stream (every step, every 5th probe step, per flush, evaluations).
EVERY = {"loss/d": 1, "loss/g": 1, "pred/real": 1, "pred/fake": 1, "score/real": 1, "grad/d/conv1": 5,
         "grad/d/conv2": 5, "grad/g/convT1": 5, "grad/g/convT2": 5, "update/d/conv1": 5, "update/g/convT1": 5,
         "sample/diversity": 5, "perf/step_s": 250, "perf/img_s": 250, "lr/d": 250, "lr/g": 250,
         "quality/fid": 1000, "toy/fit": 500}


def _batch(lo: int, hi: int) -> dict:
    """Points of steps lo..hi (inclusive) for every metric at its cadence; values vary so nothing is flat."""
    out = {}
    for name, every in EVERY.items():
        steps = [s for s in range(lo, hi + 1) if s % every == 0]
        if steps:
            out[name] = {"steps": steps, "values": [1.0 + ((s * 7919) % 97) / 100 for s in steps]}
    return out


def _last_step(name: str, top: int) -> int:
    return top - top % EVERY[name]


def test_sdk_stream_of_thousands_of_steps_a_second_keeps_every_chart_live(server, browser) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "fast sdk", "config": {"dataset": "shapes"}}).json()["id"]
    sent = {"top": 0}
    stop = threading.Event()

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            step = 1
            while not stop.is_set():
                r = c.post(f"/api/runs/{run_id}/metrics", json={"series": _batch(step, step + 499)})
                assert r.status_code == 200, r.text
                sent["top"] = step + 499
                step += 500
                time.sleep(0.05)

    # A viewport that shows the first row of charts only: the rest are below the fold.
    with watched_page(browser, server.url, viewport=(1200, 700)) as (page, log):
        page.goto(f"{server.url}/runs/{run_id}")
        page.wait_for_function("window.ganscope && window.ganscope.ready === true", timeout=60_000)
        poster = threading.Thread(target=post, daemon=True)
        poster.start()
        try:
            wait_for(lambda: sent["top"] >= 5000, timeout=60, what="5,000 steps posted")
            page.wait_for_function("Object.keys(window.ganscope.chartState()).length >= 10", timeout=30_000)
            # The viewport leaves most charts out of view (each learns so once it has drawn).
            page.wait_for_function("Object.values(window.ganscope.chartState()).filter(s => !s.visible).length >= 5",
                                   timeout=30_000)
            first = page.evaluate(STATE)
            # While the run streams, every chart's drawing moves on, in view or not (out of view: every
            # few seconds; this machine may be loaded, hence the generous timeout).
            before = {k: v["drawn"] for k, v in first.items()}
            page.wait_for_function(
                f"() => {{ const s = window.ganscope.chartState(); const before = {json.dumps(before)};"
                " return Object.entries(before).every(([k, d]) => s[k].drawn > d + 1000); }", timeout=60_000)
            assert not page.evaluate("window.ganscope.ready === false")
        finally:
            stop.set()
            poster.join(30)
        top = sent["top"]
        second = page.evaluate(STATE)
        # Once it stops, every chart draws up to its metrics' last step: nothing is left behind.
        expected = {k: max(_last_step(n, top) for n in v["names"]) for k, v in second.items()}
        page.wait_for_function(
            f"() => {{ const s = window.ganscope.chartState(); const want = {json.dumps(expected)};"
            " return Object.entries(want).every(([k, w]) => s[k] && s[k].drawn === w); }", timeout=30_000)
        with server.client() as c:
            api = c.get(f"/api/runs/{run_id}/metrics", params={"names": "lr/d,sample/diversity", "max_points": 100000}).json()
        state = page.evaluate(STATE)
        assert state["lr"]["drawn"] == api["metrics"]["lr/d"]["steps"][-1]
        assert state["diversity"]["drawn"] == api["metrics"]["sample/diversity"]["steps"][-1]
        # A learning rate that never changes is drawn around its value, not as a line at 0 on a -1..1 axis.
        axis = page.evaluate("window.ganscope.charts.get('lr').div._fullLayout.yaxis")
        values = api["metrics"]["lr/d"]["values"]
        if axis["type"] == "log":  # learning rates default to a log axis: its range is in decades
            values = [math.log10(v) for v in values]
        assert axis["range"][0] < min(values) and max(values) < axis["range"][1], axis["range"]
    assert not log.problems(), log.problems()


FAST_TOY = {"name": "fast ring8", "dataset": "ring8", "steps": 200_000, "batch_size": 16, "toy_hidden": 8,
            "toy_layers": 1, "nz": 2, "toy_every": 100, "flush_every": 50, "flush_seconds": 0.5,
            "checkpoint_every": 1_000_000, "device": "cpu"}


def test_a_fast_toy_run_through_a_real_worker_keeps_every_chart_live(server, spawn_worker, browser) -> None:
    with server.client() as c:
        run_id = c.post("/api/jobs", json=FAST_TOY).json()["id"]
    with watched_page(browser, server.url, viewport=(1200, 700)) as (page, log):
        # Opened before the worker exists: every chart is born from the stream.
        page.goto(f"{server.url}/runs/{run_id}")
        page.wait_for_function("window.ganscope && window.ganscope.ready === true", timeout=60_000)
        assert page.evaluate("window.ganscope.charts.size") == 0
        spawn_worker(server.url)
        try:
            wait_for(lambda: httpx.get(f"{server.url}/api/runs/{run_id}").json()["step"] >= 600, timeout=180,
                     what="the toy run to pass step 600")
            page.wait_for_function("window.ganscope.charts.size >= 8", timeout=30_000)
            reached = httpx.get(f"{server.url}/api/runs/{run_id}").json()["step"]
            # Within a few seconds every chart has drawn past where the run was when we looked.
            page.wait_for_function(
                f"() => Object.values(window.ganscope.chartState()).every(s => s.drawn >= {reached} - 100)",
                timeout=30_000)
            state = page.evaluate(STATE)
            assert {"d_loss", "pred", "toy", "lr", "perf", "diversity", "grad_d_heat"} <= set(state), state
            assert any(not s["visible"] for s in state.values())
            later = httpx.get(f"{server.url}/api/runs/{run_id}").json()["step"]
            page.wait_for_function(
                f"() => Object.values(window.ganscope.chartState()).every(s => s.drawn >= {later} - 100)",
                timeout=30_000)
            assert later > reached
        finally:
            httpx.post(f"{server.url}/api/runs/{run_id}/cancel")
    assert not log.problems(), log.problems()
