"""Managing runs in Chromium: the runs list as a new user reads it (queued runs, dates, whole words),
tags, notes, archive and delete from the run page, filters by tag and config, downloads."""

from __future__ import annotations

import re

import pytest

from tests.browser import watched_page

pytestmark = pytest.mark.browser
LONG_NAMES = ["D overpowers G on ring8", "capacity imbalance (unnamed layers)", "averyveryverylongsinglewordname"]


def _ready(page) -> None:
    page.wait_for_function("window.ganscope && window.ganscope.ready === true", timeout=60_000)


def test_runs_list_reads_right_for_queued_runs_dates_and_names(server, browser) -> None:
    with server.client() as c:
        queued = c.post("/api/jobs", json={"name": "waiting job", "dataset": "ring8", "steps": 10}).json()["id"]
        sdk = [c.post("/api/runs", json={"name": n, "config": {"dataset": "ring8", "lr_d": 1e-3, "batch_size": 64,
                                                                "d_steps": 5, "label_smoothing": 0.9}}).json()["id"]
               for n in LONG_NAMES]
        c.post(f"/api/runs/{sdk[0]}/metrics", json={"series": {"loss/d": {"steps": [1], "values": [0.7]}}})
    with watched_page(browser, server.url, viewport=(1100, 900)) as (page, log):
        page.goto(server.url + "/")
        _ready(page)
        row = f'tr[data-id="{queued}"]'
        page.wait_for_selector(row)
        cells = page.locator(f"{row} td").all_inner_texts()
        assert "NaN" not in " ".join(cells)
        assert cells[4].startswith("queued · 1st") and "healthy" not in cells[4]
        assert cells[8] == "— · —" and cells[10] == "not yet"
        started = page.inner_text(f'tr[data-id="{sdk[0]}"] td:nth-child(11)')
        assert re.match(r"^(today|yesterday|\d{1,2} \w{3}) ", started), started  # a date, not just a time
        # Names wrap between words only: no word of a name is split over two lines.
        split = page.evaluate("""[...document.querySelectorAll('#runs .run-name')].flatMap(a => {
            const text = a.firstChild; const out = []; let i = 0;
            for (const w of a.textContent.split(' ')) { const r = document.createRange();
              r.setStart(text, i); r.setEnd(text, i + w.length); i += w.length + 1;
              const tops = new Set([...r.getClientRects()].map(x => Math.round(x.top)));
              if (w.length < 25 && tops.size > 1) out.push(w); }
            return out; })""")
        assert split == [], split
    assert not log.problems(), log.problems()


def test_tags_note_archive_filters_downloads_and_delete(server, browser, tmp_path) -> None:
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "managed", "config": {"dataset": "ring8", "lr_d": 1e-3}}).json()["id"]
        other = c.post("/api/runs", json={"name": "other", "config": {"dataset": "grid25"}}).json()["id"]
        steps = list(range(50))
        r = c.post(f"/api/runs/{run_id}/metrics", json={"series": {"loss/d": {"steps": steps, "values": [0.5] * 50}}})
        assert r.status_code == 200
        expected_csv = c.get(f"/api/runs/{run_id}/export", params={"format": "csv"}).content
    with watched_page(browser, server.url) as (page, log):
        page.goto(f"{server.url}/runs/{run_id}")
        _ready(page)
        # Tags: add two with Enter, remove one.
        for tag in ("baseline", "sweep-1"):
            page.fill("#tag-input", tag)
            page.press("#tag-input", "Enter")
            page.wait_for_selector(f'#run-tags [data-tag="{tag}"]')
        page.click('#run-tags [data-tag="sweep-1"] .chip-x')
        page.wait_for_function("document.querySelectorAll('#run-tags .tag').length === 1")
        # A note.
        page.click("#note-btn")
        page.fill("#note-input", "lr_d 1e-3 looks too fast")
        page.click("#note-save")
        page.wait_for_function("document.getElementById('run-note').innerText === 'lr_d 1e-3 looks too fast'")
        with server.client() as c:
            detail = c.get(f"/api/runs/{run_id}").json()
        assert detail["tags"] == ["baseline"] and detail["note"] == "lr_d 1e-3 looks too fast"
        # Downloads: the metrics CSV is the export the CLI writes.
        page.click("#downloads summary")
        with page.expect_download() as dl:
            page.click("#dl-csv")
        path = tmp_path / "m.csv"
        dl.value.save_as(path)
        assert dl.value.suggested_filename == f"run-{run_id}-metrics.csv" and path.read_bytes() == expected_csv
        assert not page.is_visible("#dl-ckpt")  # an SDK run has no checkpoint to offer

        # Runs list: filter by tag and by config value.
        page.goto(server.url + "/")
        _ready(page)
        page.wait_for_function("document.querySelectorAll('#runs tbody tr').length === 2")
        page.select_option("#filter-tag", "baseline")
        page.wait_for_function(f"[...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.id).join() === '{run_id}'")
        page.select_option("#filter-tag", "")
        page.fill("#filter-config", "dataset=grid25")
        page.dispatch_event("#filter-config", "change")
        page.wait_for_function(f"[...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.id).join() === '{other}'")
        assert "config=dataset%3Dgrid25" in page.url or "config=dataset=grid25" in page.url
        page.fill("#filter-config", "")
        page.dispatch_event("#filter-config", "change")

        # Archive from the run page: it leaves the list, and shows with "archived" ticked.
        page.goto(f"{server.url}/runs/{run_id}")
        _ready(page)
        page.click("#archive-btn")
        page.wait_for_function("document.getElementById('archive-btn').innerText === 'Unarchive'")
        page.goto(server.url + "/")
        _ready(page)
        page.wait_for_function(f"[...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.id).join() === '{other}'")
        page.check("#filter-archived")
        page.wait_for_function(f"[...document.querySelectorAll('#runs tbody tr')].map(r => r.dataset.id).join() === '{run_id}'")

        # Delete, with a confirmation that names what goes; "Keep it" keeps it.
        page.goto(f"{server.url}/runs/{run_id}")
        _ready(page)
        page.click("#delete-btn")
        assert "cannot be undone" in page.inner_text("#delete-confirm")
        page.click("#delete-no")
        assert page.is_hidden("#delete-confirm")
        page.click("#delete-btn")
        page.click("#delete-yes")
        page.wait_for_url(re.compile(r"/\?deleted="))
        _ready(page)
        with server.client() as c:
            assert c.get(f"/api/runs/{run_id}").status_code == 404
        page.uncheck("#filter-archived") if page.is_checked("#filter-archived") else None
        page.wait_for_function(f"![...document.querySelectorAll('#runs tbody tr')].some(r => r.dataset.id === '{run_id}')")
    # The deleted run's page answered 404 once the page navigated away; nothing else failed.
    assert not [p for p in log.problems() if "404" not in p], log.problems()
