"""SDK runs describe themselves, over real HTTP on SQLite and PostgreSQL: the script's own config kept as given,
a validated declared part the detectors read, idempotent creation by key, declared-config updates, heartbeats."""

from __future__ import annotations

import json
import math
import uuid

import httpx
import pytest

from tests.harness import ServerProc

# What `vars(opt)` of a public DCGAN script looks like, with things JSON has no room for made readable.
OPT = {"dataset": "mnist", "dataroot": "/data", "workers": 2, "batchSize": 64, "imageSize": 28, "nz": 100,
       "ngf": 64, "niter": 25, "lr": 0.0002, "beta1": 0.5, "cuda": False, "netG": "", "manualSeed": None,
       "classes": "bedroom", "schedule": {"milestones": [10, 20], "gamma": 0.1}, "clip": math.inf}


@pytest.fixture
def c(any_server: ServerProc) -> httpx.Client:
    return any_server.client()


def test_users_config_is_kept_as_given_and_nothing_is_filled_in(c: httpx.Client) -> None:
    body = {"name": "mnist mlp", "config": OPT,
            "declared": {"loss": "nonsaturating", "loss_d_reduction": "mean", "image_size": 28, "total_steps": 23450}}
    # Python's json writes Infinity for inf, as a script's json.dumps(vars(opt)) would.
    r = c.post("/api/runs", content=json.dumps(body), headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text
    run = c.get(f"/api/runs/{r.json()['id']}").json()
    assert run["user_config"] == {**OPT, "clip": "inf"}  # every key of the script's own, none refused
    # The declared part, and nothing of the built-in trainer's defaults (image_size 64, ngf 64, steps 2000).
    assert run["config"] == {"loss": "nonsaturating", "loss_d_reduction": "mean", "image_size": 28,
                             "total_steps": 23450, "dataset": "mnist", "nz": 100, "beta1": 0.5}
    assert run["total_steps"] == 23450 and run["dataset"] == "mnist"
    assert run["key_config"] == {"dataset": "mnist", "image_size": 28, "loss": "nonsaturating",
                                 "loss_d_reduction": "mean", "total_steps": 23450}
    listed = next(x for x in c.get("/api/runs", params={"kind": "sdk"}).json()["runs"] if x["id"] == run["id"])
    assert listed["total_steps"] == 23450 and listed["key_config"] == run["key_config"]


def test_a_run_that_declares_nothing_has_no_progress_total_nor_dataset(c: httpx.Client) -> None:
    r = c.post("/api/runs", json={"name": "bare", "config": {"whatever": [1, {"deep": True}]}})
    assert r.status_code == 201
    run = c.get(f"/api/runs/{r.json()['id']}").json()
    assert run["config"] == {} and run["total_steps"] is None and run["dataset"] is None and run["key_config"] == {}


def test_declared_part_is_validated_field_by_field(c: httpx.Client) -> None:
    r = c.post("/api/runs", json={"declared": {"loss": "bce", "image_size": 0, "los": "hinge", "total_steps": -1}})
    assert r.status_code == 422
    by_loc = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    assert set(by_loc) == {("body", "declared", "loss"), ("body", "declared", "image_size"),
                           ("body", "declared", "los"), ("body", "declared", "total_steps")}
    assert "unknown declared field 'los'" in by_loc[("body", "declared", "los")]
    assert "nonsaturating" in by_loc[("body", "declared", "loss")]
    r = c.post("/api/runs", json={"declared": {"detectors": {"mode_colapse": {"diversity_min": 0.1}}}})
    assert r.status_code == 422 and "unknown signature 'mode_colapse'" in r.text
    r = c.post("/api/runs", json={"declared": {"layers": {"g": ["fc1", "bad,name"]}}})
    assert r.status_code == 422 and "bad layer name" in r.text
    for image_size in (28, 1, 1000):  # any positive size: the server trains nothing of an SDK run
        assert c.post("/api/runs", json={"declared": {"image_size": image_size}}).status_code == 201


def test_users_config_is_refused_only_for_shape_and_size(c: httpx.Client) -> None:
    r = c.post("/api/runs", json={"config": [1, 2]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "config"]
    deep: dict = {}
    node = deep
    for _ in range(40):
        node["k"] = {}
        node = node["k"]
    r = c.post("/api/runs", json={"config": deep})
    assert r.status_code == 422 and "nested" in r.text
    r = c.post("/api/runs", json={"config": {"blob": "x" * 300_000}})
    assert r.status_code == 422 and "bytes of JSON" in r.text
    r = c.post("/api/runs", content=b'{"config": {"a": NaN}}', headers={"Content-Type": "application/json"})
    assert r.status_code == 201 and c.get(f"/api/runs/{r.json()['id']}").json()["user_config"] == {"a": "nan"}
    assert c.post("/api/runs", content=b'{"config": ', headers={"Content-Type": "application/json"}).status_code == 422


def test_older_clients_sending_jobconfig_keys_in_config_keep_their_meaning(c: httpx.Client) -> None:
    r = c.post("/api/runs", json={"name": "old", "config": {"dataset": "ring8", "lr_d": 1e-3, "on_failure": "stop",
                                                            "steps": 500, "loss": "bce", "my_flag": True}})
    assert r.status_code == 201
    body = r.json()
    # Valid values of declared names are read as declared; the rest is the user's and only noted.
    assert body["config"] == {"dataset": "ring8", "lr_d": 1e-3, "on_failure": "stop", "total_steps": 500}
    assert len(body["notes"]) == 1 and "config['loss'] = 'bce'" in body["notes"][0]
    run = c.get(f"/api/runs/{body['id']}").json()
    assert run["user_config"]["loss"] == "bce" and run["user_config"]["my_flag"] is True
    # An explicit declaration wins over the same name in config.
    r = c.post("/api/runs", json={"config": {"loss": "minimax"}, "declared": {"loss": "hinge"}})
    assert r.json()["config"] == {"loss": "hinge"} and r.json()["notes"] == []


def test_creation_with_a_key_is_idempotent(c: httpx.Client) -> None:
    key = uuid.uuid4().hex
    first = c.post("/api/runs", json={"name": "retried", "key": key, "declared": {"total_steps": 10}})
    again = c.post("/api/runs", json={"name": "retried", "key": key, "declared": {"total_steps": 10}})
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert c.get("/api/runs", params={"q": "retried"}).json()["total"] == 1
    for bad in ("short", "x" * 65, "has space!", 12345678):
        r = c.post("/api/runs", json={"key": bad})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "key"], bad


def test_declared_config_can_be_updated(c: httpx.Client) -> None:
    rid = c.post("/api/runs", json={"declared": {"loss": "minimax", "dataset": "cifar10"}}).json()["id"]
    r = c.patch(f"/api/runs/{rid}/config", json={"declared": {"layers": {"g": ["main.0", "main.3"], "d": ["main.0"]},
                                                              "total_steps": 100, "dataset": None}})
    assert r.status_code == 200, r.text
    run = c.get(f"/api/runs/{rid}").json()
    assert run["config"] == {"loss": "minimax", "total_steps": 100,
                             "layers": {"g": ["main.0", "main.3"], "d": ["main.0"]}}
    assert run["total_steps"] == 100 and run["dataset"] is None
    r = c.patch(f"/api/runs/{rid}/config", json={"declared": {"image_sise": 32}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "declared", "image_sise"]
    assert c.patch(f"/api/runs/{rid}/config", json={"layers": []}).status_code == 422
    assert c.patch("/api/runs/987654/config", json={"declared": {}}).status_code == 404
    job = c.post("/api/jobs", json={"name": "a job", "steps": 10}).json()["id"]
    assert c.patch(f"/api/runs/{job}/config", json={"declared": {"loss": "hinge"}}).status_code == 409


def test_sdk_heartbeat_answers_with_what_the_script_should_do(c: httpx.Client) -> None:
    rid = c.post("/api/runs", json={"name": "beating"}).json()["id"]
    r = c.post(f"/api/runs/{rid}/heartbeat", json={"step": 42})
    assert r.status_code == 200 and r.json() == {"action": "continue", "reason": None}
    assert c.get(f"/api/runs/{rid}").json()["step"] == 42
    c.post(f"/api/runs/{rid}/cancel")
    assert c.post(f"/api/runs/{rid}/heartbeat", json={}).json()["action"] == "cancel"
    c.post(f"/api/runs/{rid}/finish", json={"status": "cancelled"})
    assert c.post(f"/api/runs/{rid}/heartbeat", json={}).json()["action"] == "release"
    assert c.post("/api/runs/987654/heartbeat", json={}).status_code == 404
    job = c.post("/api/jobs", json={"name": "a job", "steps": 10}).json()["id"]
    assert c.post(f"/api/runs/{job}/heartbeat", json={}).status_code == 409
    assert c.post(f"/api/runs/{rid}/heartbeat", json={"step": -1}).status_code == 422


def test_the_sdk_sends_whatever_options_object_a_script_has() -> None:
    import argparse
    import dataclasses
    import enum
    from pathlib import Path

    from ganscope.trainer.sdk import check_declared, user_config

    class Mode(enum.Enum):
        FAST = "fast"

    @dataclasses.dataclass
    class Opts:
        lr: float = 2e-4
        out: Path = Path("/runs/x")

    ns = argparse.Namespace(lr=1e-3, out=Path("/tmp/o"), clip=float("nan"), mode=Mode.FAST, sizes=(28, 28),
                            fn=print, nested={"a": {1: "one"}})
    assert user_config(ns) == {"lr": 1e-3, "out": "/tmp/o", "clip": "nan", "mode": "fast", "sizes": [28, 28],
                               "fn": "<built-in function print>", "nested": {"a": {"1": "one"}}}
    assert user_config(Opts()) == {"lr": 2e-4, "out": "/runs/x"}
    assert user_config(None) == {}
    with pytest.raises(ValueError, match="declared: los: .*docs/sdk.md"):
        check_declared({"los": "minimax"})


@pytest.mark.browser
def test_run_page_shows_the_scripts_own_config(server: ServerProc) -> None:
    pytest.importorskip("playwright")
    from tests.browser import chromium_path, launch_browser, watched_page

    if chromium_path() is None:
        pytest.skip("no chromium")
    c = server.client()
    rid = c.post("/api/runs", json={"name": "page", "config": {"imageSize": 28, "dataroot": "<b>/data</b>"},
                                    "declared": {"loss": "hinge"}}).json()["id"]
    with launch_browser() as browser, watched_page(browser, server.url) as (page, log):
        page.goto(f"{server.url}/runs/{rid}")
        page.wait_for_selector("#config tr")
        rows = page.locator("#config tr").all_inner_texts()
        assert [r.split("\t") for r in rows] == [["imageSize", "28"], ["dataroot", "<b>/data</b>"],
                                                  ["declared: loss", "hinge"]], rows
        assert log.problems() == []
