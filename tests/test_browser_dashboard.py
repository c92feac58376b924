"""The dashboard in real headless Chromium against the real server and real workers.

Every page opened here is watched (tests/browser.py): console errors, uncaught
exceptions, dialogs, failed responses and requests to any other host fail the test.
Screenshots land in test-artifacts/ (gitignored); the run page's also in docs/ for the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.browser import watched_page
from tests.harness import start_server, wait_for

pytestmark = pytest.mark.browser
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
EVIL = "<img src=x onerror=alert(1)>"
TINY_SHAPES = {"name": "live tiny shapes", "dataset": "shapes", "image_size": 16, "batch_size": 8, "ngf": 8,
               "ndf": 8, "nz": 16, "steps": 20000, "sample_every": 25, "checkpoint_every": 100000,
               "flush_every": 5, "flush_seconds": 0.5, "device": "cpu"}
# The seeds' failure: D far faster than G on the ring of 8 (D loss → 0, D(G(z)) → 0).
RING8_D_WINS = {"name": "ring8 D wins", "dataset": "ring8", "lr_d": 2e-3, "lr_g": 1e-5, "d_steps": 3,
                "steps": 20000, "batch_size": 64, "toy_every": 50, "flush_every": 10, "flush_seconds": 0.5,
                "device": "cpu", "checkpoint_every": 100000}
CORE_CHARTS = ["d_loss", "g_loss", "pred", "grad_first", "grad_d_heat", "grad_g_heat", "update", "perf", "diversity"]
CHARTS_STATE = """() => { const out = {}; for (const [k, c] of window.ganscope.charts || []) {
  const steps = Object.values(c.lastStep); out[k] = {n: c.pointCount(), drawn: !!c.drawn,
  last: steps.length ? Math.max(...steps) : -1, names: c.names}; } return out; }"""


def ready(page, timeout: float = 60_000) -> None:
    page.wait_for_function("window.ganscope && window.ganscope.ready === true", timeout=timeout)


def shot(page, name: str) -> Path:
    """The whole page. The viewport is stretched to the page first: charts out of view skip live redraws
    (run.js), so they must be in view, and get a moment to catch up, to be pictured as they are."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    size = page.viewport_size
    page.set_viewport_size({"width": size["width"], "height": page.evaluate("document.documentElement.scrollHeight")})
    page.wait_for_timeout(2500)
    page.screenshot(path=str(path), timeout=120_000)
    page.set_viewport_size(size)
    return path


def ingest(c: httpx.Client, run_id: int, series: dict) -> None:
    r = c.post(f"/api/runs/{run_id}/metrics", json={"series": series})
    assert r.status_code == 200, r.text


def test_live_run_page_with_a_real_worker(server, spawn_worker, browser) -> None:
    with server.client() as c:
        run_id = c.post("/api/jobs", json=TINY_SHAPES).json()["id"]
    spawn_worker(server.url)
    with watched_page(browser, server.url) as (page, log):
        # Opened before the worker has sent a point: charts must appear and fill from the stream alone.
        page.goto(f"{server.url}/runs/{run_id}")
        ready(page)
        page.evaluate("window.__same_document = true")
        page.wait_for_function(
            f"() => {{ const c = window.ganscope.charts; return {json.dumps(CORE_CHARTS)}.every(k => c.has(k))"
            " && [...c.values()].every(x => x.drawn && x.pointCount() > 0) }", timeout=180_000)
        first = page.evaluate(CHARTS_STATE)
        assert all(v["n"] > 0 for v in first.values()), first  # every chart shown has data
        assert first["grad_first"]["names"] == ["grad/d/conv1", "grad/g/convT1"]  # first layers, in layer order

        # The data grows without a reload: every chart's last step moves on.
        before = {k: v["last"] for k, v in first.items()}
        page.wait_for_function(
            f"() => {{ const c = window.ganscope.charts; const before = {json.dumps(before)};"
            "return Object.entries(before).every(([k, s]) => Math.max(...Object.values(c.get(k).lastStep)) > s + 10) }",
            timeout=120_000)
        assert page.evaluate("window.__same_document === true")
        # Appended by the live path (extendTraces), which logs a point once the frame showing it is painted.
        page.wait_for_function("window.ganscope.drawLog.length > 0", timeout=10_000)
        # What the chart holds is what Plotly draws: the trace's last x is the last step received.
        drawn_x, held = page.evaluate("""() => { const c = window.ganscope.charts.get('d_loss');
            const xs = c.div.data[1].x; return [xs[xs.length - 1], c.lastStep['loss/d']]; }""")
        assert drawn_x == held
        page.wait_for_function("""() => { const i = document.getElementById('sample-img');
            return !i.hidden && i.complete && i.naturalWidth > 0 }""", timeout=60_000)
        shot(page, "run-page.png")

        # Runs list: the row's progress moves while we watch.
        page.goto(server.url + "/")
        ready(page)
        cell = page.locator(f'tr[data-id="{run_id}"] td.progress-cell')
        start_text = cell.inner_text()
        page.wait_for_function(
            f"""() => {{ const c = document.querySelector('tr[data-id="{run_id}"] td.progress-cell');
            return c && c.innerText !== {json.dumps(start_text)} }}""", timeout=60_000)
        shot(page, "runs-list.png")

        # Cancel from the run page (two clicks, no modal dialog) reaches the worker.
        page.goto(f"{server.url}/runs/{run_id}")
        ready(page)
        page.click("#cancel-btn")
        assert page.inner_text("#cancel-btn") == "Really cancel?"
        with page.expect_response(lambda r: r.url.endswith(f"/api/runs/{run_id}/cancel")) as answer:
            page.click("#cancel-btn")
        assert answer.value.status == 200, page.inner_text("#run-error")
        page.wait_for_function("document.getElementById('run-status').innerText.trim() === 'cancelled'",
                               timeout=90_000)
    assert not log.problems(), log.problems()


def test_failing_toy_run_alert_on_page_and_chart_then_relaunch(server, spawn_worker, browser) -> None:
    with server.client() as c:
        run_id = c.post("/api/jobs", json=RING8_D_WINS).json()["id"]
    spawn_worker(server.url)
    with watched_page(browser, server.url) as (page, log):
        page.goto(f"{server.url}/runs/{run_id}")
        ready(page)
        card = page.locator('.alert[data-signature="d_overpowering"]').first
        card.wait_for(timeout=240_000)
        alert_id = int(card.get_attribute("data-alert-id"))
        assert "D has overpowered G" in card.inner_text() or "overpower" in card.inner_text().lower()
        # Drawn on the charts its evidence names (loss/d, pred/fake): a shaded span over its steps.
        spans = page.evaluate(f"""() => ['d_loss', 'pred'].map(k => (window.ganscope.charts.get(k).div.layout.shapes || [])
            .filter(s => s.name === 'alert-{alert_id}').map(s => [s.x0, s.x1]))""")
        with server.client() as c:
            alert = next(a for a in c.get(f"/api/runs/{run_id}/alerts").json()["alerts"] if a["id"] == alert_id)
        for chart_spans in spans:
            assert chart_spans, spans
            x0, x1 = chart_spans[0]
            assert x0 <= alert["last_step"] and x1 >= alert["first_step"]
        # Toy set: the scatter over the mixture is drawn, modes chart present.
        page.wait_for_function("""() => { const d = document.getElementById('toy-plot');
            return !document.getElementById('toy-panel').hidden && d.data && d.data.some(t => t.name === 'generated' && t.x.length > 0) }""",
                               timeout=60_000)
        assert page.evaluate("window.ganscope.charts.has('toy')")
        # The README's picture: a failing run with its alert drawn on the charts, once they have caught up.
        page.wait_for_function(f"""[...window.ganscope.charts.values()].every(c =>
            Math.max(...Object.values(c.lastStep)) >= {alert['last_step']} - 60)""", timeout=60_000)
        picture = shot(page, "run-page-alert.png")
        if os.environ.get("GANSCOPE_UPDATE_SCREENSHOT"):  # a test run leaves the checkout as it found it
            shutil.copy(picture, REPO / "docs" / "screenshot.png")

        # Relaunch with the remedy: the launch form opens with the run's config plus the fix, highlighted.
        remedy = alert["remedy"]["config"]
        card.locator("button", has_text="Relaunch with this remedy").click()
        page.wait_for_url(re.compile(r"/launch\?"))
        for knob, value in remedy.items():
            assert "remedy" in (page.get_attribute(f"#knob-{knob}", "class") or "")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert float(page.input_value(f"#f-{knob}")) == pytest.approx(value), knob
        assert page.input_value("#f-dataset") == "ring8" and page.input_value("#f-batch_size") == "64"
        page.click("#launch-form button[type=submit]")
        page.wait_for_url(re.compile(r"/runs/\d+$"))
        new_id = int(page.url.rsplit("/", 1)[1])
        assert new_id != run_id
        with server.client() as c:
            old_cfg = c.get(f"/api/runs/{run_id}").json()["config"]
            cfg = c.get(f"/api/runs/{new_id}").json()["config"]
            c.post(f"/api/runs/{run_id}/cancel")
            c.post(f"/api/runs/{new_id}/cancel")
        # The relaunched job is the failing run's config with exactly the remedy's changes (and a new name).
        expected = {**old_cfg, **remedy}
        for knob in expected:
            if knob != "name":
                assert cfg[knob] == pytest.approx(expected[knob]), knob
        assert cfg["name"] != old_cfg["name"] and "d_overpowering" in cfg["name"]
    assert not log.problems(), log.problems()


def test_nonfinite_marker_alert_and_catch_up_after_a_dropped_stream(server, browser) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "nan run", "config": {"dataset": "shapes"}}).json()["id"]
        steps = list(range(100))
        ingest(c, run_id, {"loss/d": {"steps": steps, "values": [1.3 - s / 500 for s in steps]},
                           "loss/g": {"steps": steps, "values": [0.8] * 100},
                           "pred/real": {"steps": steps, "values": [0.55] * 100}})
        with watched_page(browser, server.url) as (page, log):
            page.goto(f"{server.url}/runs/{run_id}")
            ready(page)
            sent = time.monotonic()
            ingest(c, run_id, {"loss/d": {"steps": list(range(100, 111)), "values": ["nan"] + [0.7] * 10}})
            card = page.locator('.alert[data-signature="nonfinite"]').first
            card.wait_for(timeout=10_000)
            assert time.monotonic() - sent < 5
            alert_id = int(card.get_attribute("data-alert-id"))
            # The card renders at once; charts draw on the next frame (run.js merges events per flush).
            page.wait_for_function("window.ganscope.charts.get('d_loss').div.data[0].x.includes(100)", timeout=10_000)
            chart = page.evaluate(f"""() => {{ const c = window.ganscope.charts.get('d_loss');
                return {{bad: c.div.data[0].x, color: c.div.data[0].marker.color,
                         spans: (c.div.layout.shapes || []).filter(s => s.name === 'alert-{alert_id}').map(s => [s.x0, s.x1])}} }}""")
            assert 100 in chart["bad"] and chart["color"] == "#d0342c"  # a red x at the NaN step
            assert chart["spans"] and chart["spans"][0][0] <= 100 <= chart["spans"][0][1]

            # Drop the stream, ingest while it is down, reconnect: the page catches up exactly.
            page.evaluate("window.ganscope.stream.close()")
            ingest(c, run_id, {"loss/d": {"steps": list(range(111, 151)), "values": [0.6] * 40}})
            time.sleep(0.5)
            assert page.evaluate("window.ganscope.charts.get('d_loss').lastStep['loss/d']") == 110
            page.evaluate("window.ganscope.stream.open()")
            page.wait_for_function("window.ganscope.charts.get('d_loss').lastStep['loss/d'] === 150", timeout=10_000)
            xs = page.evaluate("window.ganscope.charts.get('d_loss').div.data[1].x")
            assert xs == list(range(151))  # nothing missing, nothing twice
    assert not log.problems(), log.problems()


def test_overview_keeps_spikes_and_zoom_requeries_at_full_resolution(server, browser) -> None:
    n = 20_000
    values = [1.0 + 0.001 * (s % 7) for s in range(n)]
    values[12_345] = 50.0  # one spike: downsampling must not average it away
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "zoom", "config": {}}).json()["id"]
        ingest(c, run_id, {"loss/d": {"steps": list(range(n)), "values": values},
                           "pred/real": {"steps": list(range(n)), "values": [0.5] * n}})
    with watched_page(browser, server.url) as (page, log):
        page.goto(f"{server.url}/runs/{run_id}")
        ready(page)
        xs, ys = page.evaluate("(() => { const t = window.ganscope.charts.get('d_loss').div.data[1]; return [t.x, t.y]; })()")
        assert len(xs) <= 1200 < n and max(ys) == 50.0 and xs[ys.index(50.0)] == 12_345
        # A user's zoom (plotly_relayout): the visible steps are fetched again, every one of them,
        # and the other charts follow to the same range.
        page.evaluate("Plotly.relayout(window.ganscope.charts.get('d_loss').div, {'xaxis.range': [12300, 12400]})")
        page.wait_for_function("""() => { const x = window.ganscope.charts.get('d_loss').div.data[1].x;
            return x.length === 101 && x[0] === 12300 }""", timeout=15_000)
        page.wait_for_function("""() => { const x = window.ganscope.charts.get('pred').div.data[1].x;
            return x.length === 101 && x[0] === 12300 }""", timeout=15_000)
        # Double-click's autoscale returns to the downsampled overview.
        page.evaluate("Plotly.relayout(window.ganscope.charts.get('d_loss').div, {'xaxis.autorange': true})")
        page.wait_for_function("window.ganscope.charts.get('d_loss').div.data[1].x.length > 1000", timeout=15_000)
    assert not log.problems(), log.problems()


def test_hostile_run_name_renders_as_text(server, browser) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": EVIL, "config": {}}).json()["id"]
        ingest(c, run_id, {"loss/d": {"steps": [0, 1], "values": [1.0, 0.9]}})
    with watched_page(browser, server.url) as (page, log):
        for path in ("/", f"/runs/{run_id}", f"/compare?ids={run_id},{run_id}"):
            page.goto(server.url + path)
            ready(page)
            assert page.get_by_text(EVIL).first.is_visible(), path  # the name, shown as text
            assert page.locator('img[src="x"]').count() == 0, path
        # Filter and sort on the runs list.
        with server.client() as c:
            c.post("/api/runs", json={"name": "plain run", "config": {}})
        page.goto(server.url + "/")
        ready(page)
        page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 2")
        page.fill("#filter-text", "plain")
        page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 1")
        assert page.inner_text("#runs tbody tr .run-name") == "plain run"
        page.fill("#filter-text", "")
        page.click("#runs th[data-sort=name]")  # ascending by name: '<img…' sorts before 'plain run'
        page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 2")
        names = page.eval_on_selector_all("#runs tbody .run-name", "els => els.map(e => e.textContent)")
        assert names == sorted(names) and EVIL in names
        assert "sort=name" in page.url
    assert log.dialogs == []
    assert not log.problems(), log.problems()


def test_launch_form_token_and_server_messages_next_to_fields(home: Path, browser) -> None:
    server = start_server(home, token="s3cret-token")
    try:
        with watched_page(browser, server.url) as (page, log):
            page.goto(server.url + "/launch")
            page.fill("#f-name", "from the form")
            page.fill("#f-image_size", "20")
            page.fill("#f-batch_size", "lots")
            page.click("#launch-form button[type=submit]")
            page.wait_for_function("document.getElementById('form-errors').innerText.includes('token')")
            page.fill("#token", "s3cret-token")
            page.dispatch_event("#token", "change")
            page.click("#launch-form button[type=submit]")
            page.wait_for_selector("#knob-image_size.invalid")
            assert "image_size must be one of" in page.inner_text("#knob-image_size .error")
            assert page.inner_text("#knob-batch_size .error").strip()
            assert not page.is_visible("#knob-nz .error")
            page.fill("#f-image_size", "16")
            page.fill("#f-batch_size", "8")
            page.click("#launch-form button[type=submit]")
            page.wait_for_url(re.compile(r"/runs/\d+$"))
            ready(page)
            assert page.inner_text("#run-name") == "from the form"
            assert page.evaluate("localStorage.getItem('ganscope.token')") == "s3cret-token"
        # The 401 and 422 answers were the point of the exercise; anything else is a problem.
        rest = [p for p in log.problems() if not re.search(r"\b(401|422)\b", p)
                and "Failed to load resource" not in p]
        assert not rest, rest
        assert any("401" in f for f in log.failed) and any("422" in f for f in log.failed)
        run = wait_for(lambda: httpx.get(server.url + "/api/runs", timeout=5).json()["runs"], timeout=10)[0]
        assert run["name"] == "from the form" and run["key_config"]["batch_size"] == 8
    finally:
        server.stop()
