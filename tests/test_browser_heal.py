"""A healed run in Chromium: the heal is listed on the run page with its changes and config history, and every
chart draws a marker at the step training resumed from — live (the page open while the worker heals) and
after a reload."""

from __future__ import annotations

import pytest

from tests.browser import watched_page
from tests.harness import wait_for
from tests.test_browser_dashboard import shot
from tests.test_heal import D_WINS, FINAL

pytestmark = pytest.mark.browser

MARKERS = """(id) => [...window.ganscope.charts.values()].map((c) =>
    ((c.div.layout && c.div.layout.shapes) || []).some((s) => s.name === 'event-' + id))"""


def _check_page(page, ev: dict) -> None:
    item = f'#events li.run-event[data-id="{ev["id"]}"]'
    page.wait_for_selector(item, timeout=60_000)
    text = page.inner_text(item)
    assert "d_overpowering" in text and f"to step {ev['rollback_step']}" in text and "d_steps 3 → 1" in text
    assert page.is_visible("#events-panel")
    row = page.inner_text(f'#config-history tr[data-step="{ev["rollback_step"]}"]')
    assert "d_steps = 1" in row
    page.wait_for_function(f"({MARKERS})({ev['id']}).length > 1 && ({MARKERS})({ev['id']}).every(Boolean)",
                           timeout=30_000)


def test_heal_listed_and_marked_on_every_chart(any_server, spawn_worker, browser) -> None:
    cfg = {**D_WINS, "steps": 300, "on_failure": "heal", "max_heals": 3}
    with any_server.client() as c:
        run_id = c.post("/api/jobs", json=cfg).json()["id"]
        with watched_page(browser, any_server.url) as (page, log):
            page.goto(f"{any_server.url}/runs/{run_id}")
            page.wait_for_function("window.ganscope.stream && window.ganscope.stream.connections > 0",
                                   timeout=30_000)
            spawn_worker(any_server.url)
            run = wait_for(lambda: (r := c.get(f"/api/runs/{run_id}").json())["status"] in FINAL and r,
                           timeout=240, what="the run to end")
            events = c.get(f"/api/runs/{run_id}/events").json()["events"]
            assert events and run["status"] == "succeeded", run
            ev = events[0]
            _check_page(page, ev)  # arrived live, through the stream's `event`
            # the charts hold the healed stretch: no step after the run's last, one point per step
            page.wait_for_function("Math.max(...[...window.ganscope.charts.values()].map((c) => c.topStep())) === "
                                   f"{cfg['steps']}", timeout=30_000)
            steps = page.evaluate("(() => { const c = window.ganscope.charts.get('d_loss'); "
                                  "return c.data['loss/d'].steps; })()")
            assert all(b > a for a, b in zip(steps, steps[1:])), "the abandoned stretch is still drawn"
            page.reload()
            page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
            _check_page(page, ev)  # and from GET /api/runs/{id}/events on load
            shot(page, "run-page-heal.png")
        assert not log.problems(), log.problems()
