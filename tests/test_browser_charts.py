"""Run-page charts in headless Chromium: heatmap zoom and columns, smoothing, log y, time axes, PNG
download, legends grouped by net with distinct colours, labelled reference lines, constant series."""

from __future__ import annotations

import math
import time

import pytest

from tests.browser import watched_page

pytestmark = pytest.mark.browser
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS_D = ["conv1", "bn2", "conv2", "bn3", "conv3", "bn4", "conv4", "conv5"]
LAYERS_G = ["convT1", "bn1", "convT2", "bn2", "convT3", "bn3", "convT4", "convT5"]


def _post(c, run_id: int, series: dict) -> None:
    r = c.post(f"/api/runs/{run_id}/metrics", json={"series": series})
    assert r.status_code == 200, r.text


def _ready(page) -> None:
    page.wait_for_function("window.ganscope && window.ganscope.ready === true", timeout=60_000)


def test_heatmap_zoom_keeps_every_column_and_long_runs_draw_no_stripes(server, browser) -> None:
    n = 6000
    every = 5  # probes every 5th step, as probe_every=5 runs log them
    steps = list(range(0, n, every))
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "heat", "config": {}}).json()["id"]
        grads = {f"grad/d/{layer}": {"steps": steps, "values": [0.1 * (1 + i % 13) * (k + 1) for i, _ in enumerate(steps)]}
                 for k, layer in enumerate(["conv1", "conv2", "conv3"])}
        dense = list(range(n))
        _post(c, run_id, {**grads, "loss/d": {"steps": dense, "values": [1.0 + (s % 11) / 10 for s in dense]}})
    with watched_page(browser, server.url) as (page, log):
        page.goto(f"{server.url}/runs/{run_id}")
        _ready(page)
        page.wait_for_function("window.ganscope.charts.get('grad_d_heat').drawn")
        heat = "window.ganscope.charts.get('grad_d_heat').div.data[0]"
        # The overview: no column left blank across every layer (the barcode of white stripes).
        z = page.evaluate(f"{heat}.z")
        cols = len(z[0])
        assert cols > 100
        blank = [j for j in range(cols) if all(row[j] is None for row in z)]
        assert blank == [], f"{len(blank)} blank columns of {cols}"
        # Zoom on the line chart (what a drag does): the heatmap re-queries the range at full resolution,
        # one column per logged step in it, and stays inside the range.
        page.evaluate("Plotly.relayout(window.ganscope.charts.get('d_loss').div, {'xaxis.range': [4080, 4910]})")
        page.wait_for_function(f"{heat}.x.length > 0 && Math.max(...{heat}.x) <= 4910 && Math.min(...{heat}.x) >= 4080",
                               timeout=20_000)
        xs = page.evaluate(f"{heat}.x")
        in_range = [s for s in steps if 4080 <= s <= 4910]
        assert len(xs) == len(in_range), (len(xs), len(in_range))  # finer than the overview, not coarser
        assert max(b - a for a, b in zip(xs, xs[1:])) <= every + 1e-9
        page.evaluate("Plotly.relayout(window.ganscope.charts.get('d_loss').div, {'xaxis.autorange': true})")
        page.wait_for_function(f"Math.max(...{heat}.x) > 5000", timeout=20_000)
    assert not log.problems(), log.problems()


def test_smoothing_log_time_axes_png_legend_and_reference_lines(server, browser, tmp_path) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "charts", "config": {}}).json()["id"]
        for lo in (0, 200, 400):  # three batches, apart in time: the clock has points to place steps by
            steps = list(range(lo, lo + 200))
            series = {"loss/d": {"steps": steps, "values": [1.4 + 0.3 * ((s * 37) % 7 - 3) / 3 for s in steps]},
                      "lr/d": {"steps": [lo + 199], "values": [2e-4]}, "lr/g": {"steps": [lo + 199], "values": [2e-4]},
                      "perf/step_s": {"steps": [lo + 199], "values": [0.0153 + lo / 1e5]},
                      "perf/img_s": {"steps": [lo + 199], "values": [2000 + lo]}}
            for net, layers in (("d", LAYERS_D), ("g", LAYERS_G)):
                for k, layer in enumerate(layers):
                    series[f"update/{net}/{layer}"] = {"steps": steps, "values": [10 ** (-3 - k / 4)] * 200}
            _post(c, run_id, series)
            time.sleep(0.4)
        clock = c.get(f"/api/runs/{run_id}/clock").json()
    assert len(clock["steps"]) >= 2 and clock["t"] == sorted(clock["t"])
    with watched_page(browser, server.url, viewport=(1500, 1300)) as (page, log):
        page.goto(f"{server.url}/runs/{run_id}")
        _ready(page)
        d_loss = "window.ganscope.charts.get('d_loss').div"
        page.wait_for_function(f"{d_loss}.data && {d_loss}.data.length === 2")  # smoothing starts off
        page.fill("#smoothing", "0.6")
        page.dispatch_event("#smoothing", "input")
        page.wait_for_function(f"{d_loss}.data.length === 3")
        # Smoothing: a smoothed trace over a faint raw one; the slider changes it, 0 leaves raw only.
        raw, smooth = page.evaluate(f"[{d_loss}.data[1], {d_loss}.data[2]]")
        assert raw["opacity"] < 0.5 and smooth["opacity"] == 1 and raw["x"] == smooth["x"]
        spread = lambda ys: max(ys) - min(ys)  # noqa: E731
        assert spread(smooth["y"][50:]) < spread(raw["y"][50:]) / 2
        page.fill("#smoothing", "0")
        page.dispatch_event("#smoothing", "input")
        page.wait_for_function(f"{d_loss}.data.length === 2 && {d_loss}.data[1].opacity === 1")
        page.fill("#smoothing", "0.9")
        page.dispatch_event("#smoothing", "input")
        page.wait_for_function(f"{d_loss}.data.length === 3")
        # Log y per chart.
        page.click("#chart-d_loss [data-tool=log]")
        page.wait_for_function(f"{d_loss}._fullLayout.yaxis.type === 'log'")
        # x axis: wall time (a date axis), relative time (seconds from 0), back to steps.
        page.select_option("#xmode", "wall")
        page.wait_for_function(f"{d_loss}._fullLayout.xaxis.type === 'date'")
        page.select_option("#xmode", "relative")
        page.wait_for_function(f"{d_loss}._fullLayout.xaxis.type === 'linear' && {d_loss}.data[1].x[0] === 0")
        rel = page.evaluate(f"{d_loss}.data[1].x")
        assert rel == sorted(rel) and 0.5 < rel[-1] < 60, rel[-1]  # seconds: three batches 0.4 s apart
        page.select_option("#xmode", "step")
        page.wait_for_function(f"{d_loss}.data[1].x[599] === 599")
        # PNG download of one chart.
        with page.expect_download() as dl:
            page.click("#chart-d_loss [data-tool=png]")
        path = tmp_path / "chart.png"
        dl.value.save_as(path)
        assert dl.value.suggested_filename == f"run-{run_id}-d_loss.png" and path.read_bytes()[:8] == PNG_MAGIC
        # Update ratios: legend grouped by net, a distinct colour per layer, D and G toggled by net.
        upd = "window.ganscope.charts.get('update').div"
        traces = page.evaluate(f"{upd}.data.filter(t => t.showlegend !== false && t.meta)")
        colours = [t["line"]["color"] for t in traces]
        assert len(traces) == 16 and len(set(colours)) == 16, colours
        assert {t["legendgroup"] for t in traces} == {"d", "g"}
        page.click("#chart-update [data-tool=net-d]")
        page.wait_for_function(f"{upd}.data.filter(t => t.meta && t.meta.startsWith('update/d/')).every(t => t.visible === 'legendonly')")
        assert page.evaluate(f"{upd}.data.some(t => t.meta === 'update/g/convT1' && t.visible === true)")
        # Labelled reference lines; a constant learning rate drawn around its value.
        labels = page.evaluate(f"{d_loss}.layout.annotations.filter(a => a.name === 'ref').map(a => a.text)")
        assert labels and "2·ln 2" in labels[0]
        lr_axis = "window.ganscope.charts.get('lr').div._fullLayout.yaxis"
        assert page.evaluate(f"{lr_axis}.type") == "log"  # the default for learning rates
        lo, hi = page.evaluate(f"{lr_axis}.range")
        assert lo < math.log10(2e-4) < hi and hi - lo <= 1.01, (lo, hi)
        page.click("#chart-lr [data-tool=log]")
        page.wait_for_function(f"{lr_axis}.type === 'linear'")
        lo, hi = page.evaluate(f"{lr_axis}.range")
        assert 0 < lo < 2e-4 < hi, (lo, hi)
        # The throughput chart's right axis (s/step) gets its own round ticks, not ones synced to the left grid.
        y2 = page.evaluate("(() => { const a = window.ganscope.charts.get('perf').div._fullLayout.yaxis2;"
                           " return [a.tickmode, Number(a.dtick)]; })()")
        assert y2[0] == "auto", y2
        mantissa = y2[1] / 10 ** math.floor(math.log10(y2[1]))
        assert any(abs(mantissa - m) < 1e-6 for m in (1, 2, 2.5, 5)), y2
    assert not log.problems(), log.problems()
