"""Alerts and quality in Chromium: evidence as a table with its remedy and relaunch button in view without
scrolling; quality charts and each run's alerts at the top of the compare page, so a healthy and a failing
run differ at a glance; the learning verdict beside the health badge when the server gives one."""

from __future__ import annotations

import pytest

from tests.browser import watched_page
from tests.test_browser_dashboard import shot

pytestmark = pytest.mark.browser
VIEW = (1400, 900)
N = 600


def _in_view(page, selector: str) -> bool:
    """The element's box lies inside the viewport at the page's scroll position 0."""
    return page.evaluate(f"""(() => {{ const e = document.querySelector({selector!r}); if (!e) return false;
        const r = e.getBoundingClientRect(); return window.scrollY === 0 && r.width > 0 && r.top >= 0 &&
        r.bottom <= window.innerHeight && r.left >= 0 && r.right <= window.innerWidth; }})()""")


def _runs(c) -> tuple[int, int]:
    """A healthy and a failing SDK run of the same length, with the quality metrics the worker logs."""
    steps = list(range(N))
    evals = steps[::100]
    good = c.post("/api/runs", json={"name": "healthy", "config": {"dataset": "shapes", "steps": N}}).json()["id"]
    bad = c.post("/api/runs", json={"name": "D overpowers G", "config": {"dataset": "shapes", "steps": N}}).json()["id"]
    series = {
        good: {"loss/d": [1.3 - 0.1 * (s % 5) / 5 for s in steps], "loss/g": [0.9 + 0.1 * (s % 3) / 3 for s in steps],
               "pred/real": [0.6] * N, "pred/fake": [0.4] * N},
        bad: {"loss/d": [max(0.004, 1.3 - s / 60) for s in steps], "loss/g": [2 + s / 50 for s in steps],
              "pred/real": [0.999] * N, "pred/fake": [0.002] * N},
    }
    quality = {good: [180 - 20 * k for k in range(len(evals))], bad: [180 + 25 * k for k in range(len(evals))]}
    for rid in (good, bad):
        body = {name: {"steps": steps, "values": vals} for name, vals in series[rid].items()}
        body["quality/fid"] = {"steps": evals, "values": quality[rid]}
        body["quality/recall"] = {"steps": evals, "values": [0.5 if rid == good else 0.05] * len(evals)}
        r = c.post(f"/api/runs/{rid}/metrics", json={"series": body})
        assert r.status_code == 200, r.text
    return good, bad


def test_alert_evidence_table_and_remedy_in_view(server, browser) -> None:
    with server.client() as c:
        good, bad = _runs(c)
        alert = next(a for a in c.get(f"/api/runs/{bad}/alerts").json()["alerts"] if a["signature"] == "d_overpowering")
    with watched_page(browser, server.url, viewport=VIEW) as (page, log):
        page.goto(f"{server.url}/runs/{bad}")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        card = f'.alert[data-alert-id="{alert["id"]}"]'
        page.wait_for_selector(card)
        # Evidence is a table: metric, observed value (rounded), threshold with its comparison, unit.
        rows = page.eval_on_selector_all(f"{card} table.evidence tbody tr",
                                         "rs => rs.map(r => [...r.cells].map(c => c.textContent))")
        by_metric = {r[0]: r for r in rows}
        assert set(alert["evidence"]["observed"]) == set(by_metric)
        loss = by_metric["loss/d"]
        assert loss[2].startswith("<") and loss[3] == "loss"
        assert len(loss[1]) < 30 and "0.00400000" not in loss[1]  # rounded, not a raw float
        assert by_metric["pred/fake"][3] == "probability"
        assert "steps" in page.inner_text(f"{card} .ev-window")
        assert page.locator(f"{card} pre").count() == 0  # no raw JSON
        # The remedy is visible on arrival, no scroll area of their own. An SDK run is the user's script:
        # its remedy says what to change there, and offers no relaunch of a job it never was (the relaunch
        # button on job runs: test_browser_dashboard).
        assert _in_view(page, f"{card} .remedy")
        assert page.inner_text(f"{card} .remedy").startswith("Remedy: In your script:")
        assert page.locator(f"{card} button.relaunch").count() == 0
        assert page.evaluate("getComputedStyle(document.getElementById('alerts')).overflowY") == "visible"
        shot(page, "run-page-failing.png")
    assert not log.problems(), log.problems()


def test_compare_puts_quality_and_alerts_at_the_top(server, browser) -> None:
    with server.client() as c:
        good, bad = _runs(c)
        summaries = {rid: c.get(f"/api/runs/{rid}").json() for rid in (good, bad)}
    with watched_page(browser, server.url, viewport=VIEW) as (page, log):
        page.goto(f"{server.url}/compare?ids={good},{bad}")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        # The first chart is the quality one, fully in view, with both runs drawn.
        first = page.eval_on_selector("#compare-charts .chart", "e => e.dataset.metric")
        assert first == "quality/fid"
        assert _in_view(page, "#compare-charts .chart")
        traces = page.evaluate("""document.querySelector('#compare-charts .chart .plot').data
            .filter(t => t.showlegend !== false).map(t => t.name)""")
        assert any(f"#{good}" in t for t in traces) and any(f"#{bad}" in t for t in traces)
        # Each run's alerts beside the charts: the failing run's d_overpowering card is in view, the
        # healthy run says it has none.
        assert _in_view(page, f'.run-alerts[data-id="{bad}"] .alert[data-signature="d_overpowering"] summary')
        assert "No alerts" in page.inner_text(f'.run-alerts[data-id="{good}"]')
        # Health badges of both runs in the header strip, and the learning verdict where the server has one.
        strip = page.inner_text("#run-strip")
        assert "failing" in strip and "healthy" in strip
        for rid, s in summaries.items():
            verdict = (s.get("learning") or {}).get("verdict")
            if verdict:
                badge = page.locator(f'.run-chip[data-id="{rid}"] [data-verdict]')
                assert badge.get_attribute("data-verdict") == verdict
        shot(page, "compare-page.png")
    assert not log.problems(), log.problems()


def test_learning_verdict_beside_the_health_badge(server, browser) -> None:
    with server.client() as c:
        good, bad = _runs(c)
        learning = c.get(f"/api/runs/{bad}").json().get("learning")
    if not learning:
        pytest.skip("this server's run summary has no `learning` verdict yet (added on another branch)")
    with watched_page(browser, server.url, viewport=VIEW) as (page, log):
        page.goto(f"{server.url}/runs/{bad}")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        assert page.get_attribute("#run-learning [data-verdict]", "data-verdict") == learning["verdict"]
        page.goto(server.url + "/")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        cell = page.locator(f'tr[data-id="{bad}"] td.health [data-verdict]')
        assert cell.get_attribute("data-verdict") == learning["verdict"]
    assert not log.problems(), log.problems()
