"""`make up`'s two demo runs, shortened, through a real server, two real workers and Chromium: the failing
one is flagged and stopped, the healthy one's quality improves (the shapes classifier recognises more),
and the compare page shows the contrast at the top without scrolling."""

from __future__ import annotations

import pytest

from ganscope.up import DEMO_FAILING_JOB, DEMO_JOB
from tests.browser import watched_page
from tests.harness import wait_for
from tests.test_browser_alerts import VIEW, _in_view

pytestmark = pytest.mark.browser
# The demo's model and recipes as `make up` queues them; shorter, and evaluated more often (on fewer
# images) so a test sees several evaluations within a minute of one CPU core.
SHORT = {"steps": 300, "eval_every": 50, "eval_samples": 128, "device": "cpu"}


@pytest.mark.timeout(600)
def test_demo_runs_side_by_side_failing_flagged_healthy_improving(server, spawn_worker, browser) -> None:
    with server.client() as c:
        good = c.post("/api/jobs", json={**DEMO_JOB, **SHORT}).json()["id"]
        bad = c.post("/api/jobs", json={**DEMO_FAILING_JOB, **SHORT}).json()["id"]
        spawn_worker(server.url, OMP_NUM_THREADS="1")
        spawn_worker(server.url, OMP_NUM_THREADS="1")

        def ended(rid: int) -> dict | None:
            run = c.get(f"/api/runs/{rid}").json()
            return run if run["status"] in ("succeeded", "stopped", "failed", "cancelled") else None

        failing = wait_for(lambda: ended(bad), timeout=400, what="the failing demo run to end")
        healthy = wait_for(lambda: ended(good), timeout=400, what="the healthy demo run to end")
        assert failing["status"] == "stopped" and failing["health"] == "failing", failing
        sigs = {a["signature"] for a in c.get(f"/api/runs/{bad}/alerts").json()["alerts"]}
        assert "d_overpowering" in sigs, sigs
        assert healthy["status"] == "succeeded", healthy
        got = c.get(f"/api/runs/{good}/metrics",
                    params={"names": "quality/recognisable,quality/modes"}).json()["metrics"]
        rec, modes = got["quality/recognisable"], got["quality/modes"]
        assert len(rec["steps"]) >= 5 and rec["steps"][0] == 50, rec
        # Quality rises: the reference classifier recognises more of G's samples, over more classes, at the
        # end than at the first evaluation (the ground truth the detectors and bench.detect read on shapes).
        assert max(rec["values"][-2:]) >= rec["values"][0] + 0.1 or max(modes["values"][-2:]) >= modes["values"][0] + 2, got

    with watched_page(browser, server.url, viewport=VIEW) as (page, log):
        page.goto(f"{server.url}/compare?ids={good},{bad}")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        first = page.eval_on_selector("#compare-charts .chart", "e => e.dataset.metric")
        assert first.startswith("quality/"), first
        assert _in_view(page, "#compare-charts .chart")
        traces = page.evaluate("""document.querySelector('#compare-charts .chart .plot').data
            .filter(t => t.showlegend !== false).map(t => [t.name, t.x.length])""")
        assert any(f"#{good}" in name and n >= 5 for name, n in traces), traces  # every evaluation drawn
        assert any(f"#{bad}" in name for name, _ in traces), traces
        assert _in_view(page, f'.run-alerts[data-id="{bad}"] .alert[data-signature="d_overpowering"] summary')
        strip = page.inner_text("#run-strip")
        assert "failing" in strip, strip
    assert not log.problems(), log.problems()
