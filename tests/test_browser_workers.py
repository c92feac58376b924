"""The workers and queue page in Chromium with a real worker: who is training what, the queue in claim
order with priorities that move jobs, and a queued run's page saying where it stands and why."""

from __future__ import annotations

import json

import httpx
import pytest

from ganscope import __version__
from tests.browser import watched_page
from tests.harness import wait_for
from tests.test_browser_dashboard import shot

pytestmark = pytest.mark.browser
LONG_TOY = {"dataset": "ring8", "steps": 100_000, "batch_size": 16, "toy_hidden": 8, "toy_layers": 1,
            "toy_every": 500, "flush_every": 25, "checkpoint_every": 1_000_000, "device": "cpu"}


def test_workers_page_queue_priorities_and_a_queued_runs_standing(server, spawn_worker, browser) -> None:
    with server.client() as c:
        ids = [c.post("/api/jobs", json={**LONG_TOY, "name": f"job {k}"}).json()["id"] for k in range(4)]
    busy, waiting = ids[0], ids[1:]
    with watched_page(browser, server.url) as (page, log):
        # Before any worker: the queued run's page says so.
        page.goto(f"{server.url}/runs/{waiting[-1]}")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        note = page.inner_text("#queue-note")
        assert "4th in queue" in note and "no worker has been seen" in note, note
        assert page.inner_text("#run-health") == "queued · 4th"

        spawn_worker(server.url)
        wait_for(lambda: httpx.get(f"{server.url}/api/runs/{busy}").json()["step"] > 0, timeout=180,
                 what="the worker to train the first job")
        # The page follows by itself: the worker is busy with the first job, this one is 3rd now.
        page.wait_for_function(f"""document.getElementById('queue-note').innerText.includes('3rd in queue; 1 worker, busy with #{busy}')""",
                               timeout=30_000)

        page.goto(server.url + "/workers")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        row = page.locator("#workers tbody tr").first
        cells = row.locator("td").all_inner_texts()
        worker = httpx.get(server.url + "/api/workers").json()["workers"][0]
        assert cells[0] == worker["id"] and cells[1] == worker["host"] and cells[2] == "cpu"
        assert cells[3] == __version__ and cells[4] == "busy" and cells[5].startswith(f"#{busy} job 0")
        assert "/ 100000" in cells[6] and "ago" in cells[7]
        # The step column moves while we watch.
        first_step = int(cells[6].split(" / ")[0])
        page.wait_for_function(f"""parseInt(document.querySelector('#workers tbody tr td:nth-child(7)').innerText) > {first_step}""",
                               timeout=30_000)
        # The queue in claim order; raising the last job's priority moves it to the front.
        order = lambda: page.eval_on_selector_all("#queue tbody tr", "rs => rs.map(r => Number(r.dataset.id))")  # noqa: E731
        assert order() == waiting
        assert page.eval_on_selector_all("#queue tbody tr td:first-child", "tds => tds.map(t => t.innerText)") == ["1st", "2nd", "3rd"]
        page.fill(f'#queue tr[data-id="{waiting[-1]}"] input.priority', "10")
        page.dispatch_event(f'#queue tr[data-id="{waiting[-1]}"] input.priority', "change")
        page.locator("h1").click()  # leave the field: the page refreshes the table again
        page.wait_for_function(f"document.querySelector('#queue tbody tr').dataset.id === '{waiting[-1]}'", timeout=30_000)
        api_queue = httpx.get(server.url + "/api/workers").json()["queue"]
        assert [q["run_id"] for q in api_queue] == [waiting[-1], *waiting[:-1]] and api_queue[0]["priority"] == 10
        assert json.loads(page.evaluate("JSON.stringify(window.ganscope.ready)")) is True
        shot(page, "workers-page.png")

        # The run page of a job that now leads the queue says it is next.
        page.goto(f"{server.url}/runs/{waiting[-1]}")
        page.wait_for_function("window.ganscope.ready === true", timeout=60_000)
        assert f"1st in queue; 1 worker, busy with #{busy}" in page.inner_text("#queue-note")
        for rid in ids:
            httpx.post(f"{server.url}/api/runs/{rid}/cancel")
    assert not log.problems(), log.problems()
