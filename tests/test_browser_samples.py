"""Samples on the run page with a real worker: G's grid beside a grid of real images, click to enlarge,
and the checkpoint's latent walk with each row labelled by the dimension it sweeps."""

from __future__ import annotations

import httpx
import pytest

from tests.browser import watched_page
from tests.harness import wait_for

pytestmark = pytest.mark.browser
TINY_IMAGES = {"name": "tiny images", "dataset": "shapes", "image_size": 16, "batch_size": 8, "ngf": 8, "ndf": 8,
               "nz": 16, "steps": 12, "sample_every": 4, "checkpoint_every": 6, "flush_every": 4, "device": "cpu"}


def test_real_grid_beside_g_lightbox_and_labelled_walk(server, spawn_worker, browser) -> None:
    with server.client() as c:
        run_id = c.post("/api/jobs", json=TINY_IMAGES).json()["id"]
    spawn_worker(server.url)
    wait_for(lambda: httpx.get(f"{server.url}/api/runs/{run_id}").json()["status"] == "succeeded", timeout=240,
             what="the tiny image job")
    samples = httpx.get(f"{server.url}/api/runs/{run_id}/samples").json()["samples"]
    assert [s["step"] for s in samples if s["kind"] == "real"] == [0]  # uploaded once, at the start
    with watched_page(browser, server.url) as (page, log):
        page.goto(f"{server.url}/runs/{run_id}")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        loaded = "(id) => { const i = document.getElementById(id); return !i.hidden && i.complete && i.naturalWidth > 0 }"
        page.wait_for_function(f"({loaded})('real-img') && ({loaded})('sample-img')", timeout=30_000)
        real, fake = page.eval_on_selector_all("#samples-panel .sample-pair img", "is => is.map(i => i.getBoundingClientRect())")
        assert abs(real["top"] - fake["top"]) < 2 and real["x"] < fake["x"]  # side by side
        assert page.inner_text("#real-figure figcaption") == "real data"
        # Click to enlarge; Escape closes.
        page.click("#sample-img")
        page.wait_for_function("document.getElementById('lightbox').open")
        assert page.evaluate("document.getElementById('lightbox-img').src === document.getElementById('sample-img').src")
        big = page.eval_on_selector("#lightbox-img", "i => i.getBoundingClientRect().width")
        assert big > fake["width"] * 1.5
        page.keyboard.press("Escape")
        page.wait_for_function("!document.getElementById('lightbox').open")
        # The latent walk: one label per row, naming the dimension it sweeps (nz 16: dims 4, 8, 12; two bases).
        page.wait_for_selector('.checkpoint-figure[data-kind="walk"] .row-labels span')
        labels = page.eval_on_selector_all('.checkpoint-figure[data-kind="walk"] .row-labels span', "s => s.map(x => x.textContent)")
        assert labels == [f"z{b} · dim {d}" for b in (1, 2) for d in (4, 8, 12)]
        assert "from −2.5 to +2.5" in page.inner_text('.checkpoint-figure[data-kind="walk"] figcaption')
    assert not log.problems(), log.problems()
