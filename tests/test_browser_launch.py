"""The launch form: grouped knobs, only those that apply to the chosen dataset, every error at once."""

from __future__ import annotations

import json
import re

import pytest

from ganscope.server.launch_form import GROUPS, group_of
from ganscope.trainer.config import knob_catalog
from tests.browser import watched_page

pytestmark = pytest.mark.browser


def test_every_bad_field_is_named_in_one_answer(server) -> None:
    # The caps and cross-field checks used to come only once every field was valid: one more error per fix.
    with server.client() as c:
        r = c.post("/api/jobs", json={"batch_size": 5000, "image_size": 20, "lr_d": -1, "steps": 10**9,
                                      "dataset": "folder"})
    assert r.status_code == 422
    fields = {d["loc"][1] for d in r.json()["detail"]}
    assert fields == {"batch_size", "image_size", "lr_d", "steps", "data_root"}, r.json()
    assert any("cap of 1024" in d["msg"] for d in r.json()["detail"] if d["loc"][1] == "batch_size")


def test_groups_are_data_driven_with_a_default() -> None:
    ids = [g[0] for g in GROUPS]
    for knob in knob_catalog():
        assert group_of(knob["name"], knob["schema"]) in ids
    # Knobs other branches add land somewhere sensible with no change to the page.
    assert group_of("eval_every", {}) == "reporting" and group_of("r1_every", {}) == "tricks"
    assert group_of("gp_weight", {}) == "optimisation" and group_of("max_heals", {}) == "policy"
    assert group_of("some_new_knob", {}) == "other" and group_of("some_new_knob", {"group": "networks"}) == "networks"


def test_grouped_form_shows_what_applies_and_every_error_at_once(server, browser) -> None:
    with watched_page(browser, server.url) as (page, log):
        page.goto(server.url + "/launch")
        page.wait_for_function("window.ganscope.ready === true")
        legends = page.eval_on_selector_all("fieldset.knob-group legend", "ls => ls.map(l => l.firstChild.textContent.trim())")
        assert legends[:3] == ["Data", "Networks", "Optimisation"] and "Failure policy and queue" in legends
        visible = lambda name: page.is_visible(f"#knob-{name}")  # noqa: E731
        # shapes (an image set): image knobs shown, toy knobs and data_root hidden.
        assert visible("image_size") and visible("ngf") and visible("sample_every")
        assert not visible("toy_hidden") and not visible("toy_every") and not visible("data_root")
        page.select_option("#f-dataset", "ring8")
        assert visible("toy_hidden") and visible("toy_every") and not visible("image_size") and not visible("ngf")
        assert not visible("epochs")  # a toy set is endless
        page.select_option("#f-dataset", "mnist")
        assert visible("data_root") and visible("epochs")
        page.check("#show-all")
        assert visible("toy_hidden")
        page.uncheck("#show-all")
        page.select_option("#f-dataset", "shapes")

        # Every error at once, each next to its field.
        page.fill("#f-batch_size", "5000")
        page.fill("#f-image_size", "20")
        page.fill("#f-lr_d", "-1")
        page.click("#launch-form button[type=submit]")
        page.wait_for_selector("#knob-batch_size.invalid")
        for name in ("batch_size", "image_size", "lr_d"):
            assert page.inner_text(f"#knob-{name} .error").strip(), name
        assert "cap of 1024" in page.inner_text("#knob-batch_size .error")
        assert page.inner_text("#form-errors").startswith("3 fields need fixing")

        # A toy job: the image knobs it hides are not sent.
        page.click("#reset-btn")
        page.select_option("#f-dataset", "ring8")
        page.fill("#f-steps", "10")
        # A list knob (webhook URLs) is typed one per comma or line and sent as a list.
        page.fill("#f-notify", "http://127.0.0.1:9/a,\n slack+http://127.0.0.1:9/b")
        with page.expect_request(lambda r: r.url.endswith("/api/jobs") and r.method == "POST") as req:
            page.click("#launch-form button[type=submit]")
        body = json.loads(req.value.post_data)
        assert body["dataset"] == "ring8" and "toy_hidden" in body and "image_size" not in body and "ngf" not in body
        assert body["notify"] == ["http://127.0.0.1:9/a", "slack+http://127.0.0.1:9/b"]
        page.wait_for_url(re.compile(r"/runs/\d+$"))
    rest = [p for p in log.problems() if "422" not in p and "Failed to load resource" not in p]
    assert not rest, rest
