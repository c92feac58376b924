"""Webhook notifications through the real server, delivered to a real receiver process on another port.

Events are caused the way production causes them: a NaN ingested opens the `nonfinite` alert, a
worker's (or SDK script's) `finish` ends a run. The receiver (tests/webhook_receiver.py) records
every request before answering, and answers 200, 500, 404, 429 or nothing as its path says.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import ServerProc, free_port, start_server, wait_for
from tests.webhook_receiver import Receiver, start_receiver

SECRET = "webhook-secret-for-tests"
BASE = "http://dash.example:8000"


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Any]:
    started: list[Receiver] = []

    def start(port: int | None = None, name: str = "rx") -> Receiver:
        rx = start_receiver(port or free_port(), tmp_path / f"{name}-{len(started)}.jsonl")
        started.append(rx)
        return rx

    yield start
    for rx in started:
        rx.stop()


@pytest.fixture
def servers() -> Iterator[Any]:
    started: list[ServerProc] = []

    def start(home: Path, **env: str) -> ServerProc:
        s = start_server(home, **env)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def sdk_run(c: httpx.Client, name: str = "sdk", **config: Any) -> int:
    r = c.post("/api/runs", json={"name": name, "config": config})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def post_nan(c: httpx.Client, run_id: int, step: int = 3) -> None:
    """One non-finite loss: the `nonfinite` signature opens a failing alert at once."""
    r = c.post(f"/api/runs/{run_id}/metrics", json={"series": {"loss/d": {
        "steps": [step - 2, step - 1, step], "values": [0.7, 0.6, None]}}})
    assert r.status_code == 200, r.text


def job_succeeds(c: httpx.Client, worker: str = "w-notify") -> int:
    """A queued job claimed and finished over the worker protocol: run.succeeded."""
    r = c.post("/api/jobs", json={"name": "to succeed", "dataset": "ring8", "steps": 10})
    assert r.status_code == 201, r.text
    claim = c.post("/api/workers/claim", json={"worker_id": worker, "devices": ["cpu"]})
    assert claim.status_code == 200, claim.text
    run_id = claim.json()["run_id"]
    done = c.post(f"/api/runs/{run_id}/finish", json={"worker_id": worker, "status": "succeeded", "step": 10})
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    return run_id


def expected_signature(body: str) -> str:
    """Computed here, independently of the server's code, as a receiver would."""
    return "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()


def deliveries(c: httpx.Client, run_id: int) -> list[dict[str, Any]]:
    r = c.get(f"/api/runs/{run_id}/notifications")
    assert r.status_code == 200, r.text
    return r.json()["notifications"]


def test_alert_and_run_events_in_every_format_signed(home: Path, receivers, servers) -> None:
    rx = receivers()
    urls = [rx.url("ok/json"), "slack+" + rx.url("ok/slack"), "discord+" + rx.url("ok/discord")]
    s = servers(home, GANSCOPE_NOTIFY_URLS=",".join(urls), GANSCOPE_NOTIFY_SECRET=SECRET,
                GANSCOPE_NOTIFY_BASE_URL=BASE)
    c = s.client()
    name = "<!channel> @everyone sneaky"
    run_id = sdk_run(c, name, notify=[rx.url("ok/job")])
    post_nan(c, run_id)
    wait_for(lambda: len(rx.requests()) >= 4, timeout=30, what="alert.opened at four targets\n" + s.log())

    by_path = {r["path"]: r for r in rx.requests()}
    generic = by_path["/ok/json"]
    body = json.loads(generic["body"])
    assert body["event"] == "alert.opened" and generic["headers"]["X-Ganscope-Event"] == "alert.opened"
    assert body["run"]["id"] == run_id and body["run"]["name"] == name
    assert body["run"]["url"] == f"{BASE}/runs/{run_id}"
    assert body["alert"]["signature"] == "nonfinite" and body["alert"]["severity"] == "failing"
    assert body["alert"]["status"] == "open" and body["alert"]["last_step"] >= 3
    assert body["alert"]["id"] == c.get(f"/api/runs/{run_id}/alerts").json()["alerts"][0]["id"]
    assert "nonfinite" in body["text"] and body["delivery"] == int(generic["headers"]["X-Ganscope-Delivery"])
    # The signature is HMAC-SHA256 of the exact bytes received; another secret does not verify.
    assert generic["headers"]["X-Ganscope-Signature"] == expected_signature(generic["body"])
    forged = "sha256=" + hmac.new(b"other", generic["body"].encode(), hashlib.sha256).hexdigest()
    assert forged != generic["headers"]["X-Ganscope-Signature"]

    slack = by_path["/ok/slack"]
    text = json.loads(slack["body"])["text"]
    assert set(json.loads(slack["body"])) == {"text"}
    assert "nonfinite" in text and f"<{BASE}/runs/{run_id}|Open run {run_id}>" in text
    assert "<!channel>" not in text and "&lt;!channel&gt;" in text  # a run name cannot ping the channel
    assert slack["headers"]["X-Ganscope-Signature"] == expected_signature(slack["body"])

    discord = json.loads(by_path["/ok/discord"]["body"])
    assert "nonfinite" in discord["content"] and discord["content"].endswith(f"{BASE}/runs/{run_id}")
    assert discord["allowed_mentions"] == {"parse": []}  # nor @everyone

    job = by_path["/ok/job"]
    assert json.loads(job["body"])["event"] == "alert.opened"
    assert "X-Ganscope-Signature" not in job["headers"], "a job's own URL never gets the server's signature"

    # The script ends the run as failed: run.failed reaches the same four, with the error.
    assert c.post(f"/api/runs/{run_id}/finish", json={"status": "failed", "error": "CUDA out of memory"}
                  ).status_code == 200
    wait_for(lambda: len(rx.requests()) >= 8, timeout=30, what="run.failed at four targets")
    failed = [json.loads(r["body"]) for r in rx.requests("/ok/json")][-1]
    assert failed["event"] == "run.failed" and failed["alert"] is None
    assert failed["run"]["status"] == "failed" and failed["run"]["error"] == "CUDA out of memory"
    assert "CUDA out of memory" in json.loads(rx.requests("/ok/slack")[-1]["body"])["text"]
    # A retried finish (its first answer lost) changes nothing and notifies nobody again.
    assert c.post(f"/api/runs/{run_id}/finish", json={"status": "failed"}).status_code == 200

    # The run's JSON lists each delivery with its outcome; chat webhook paths (their secrets) never show.
    wait_for(lambda: all(d["status"] == "sent" for d in deliveries(c, run_id)), timeout=15, what="rows sent")
    rows = deliveries(c, run_id)
    assert sorted((d["event"], d["scope"], d["format"]) for d in rows) == sorted(
        [("alert.opened", "server", f) for f in ("json", "slack", "discord")] + [("alert.opened", "job", "json")]
        + [("run.failed", "server", f) for f in ("json", "slack", "discord")] + [("run.failed", "job", "json")])
    assert all(d["attempts"] == 1 and d["http_status"] == 200 and d["sent_at"] for d in rows)
    assert not any("/ok/" in d["target"] for d in rows)
    assert len(rx.requests()) == 8


def test_a_job_that_succeeds_notifies(home: Path, receivers, servers) -> None:
    rx = receivers()
    s = servers(home, GANSCOPE_NOTIFY_URLS=rx.url("ok/json"))
    c = s.client()
    run_id = job_succeeds(c)
    wait_for(lambda: rx.requests(), timeout=30, what="run.succeeded")
    body = json.loads(rx.requests()[0]["body"])
    assert body["event"] == "run.succeeded" and body["run"]["id"] == run_id and body["run"]["step"] == 10
    assert body["run"]["url"] is None  # no GANSCOPE_NOTIFY_BASE_URL: no link
    assert "X-Ganscope-Signature" not in rx.requests()[0]["headers"]  # no secret, no signature


def test_a_job_whose_worker_goes_silent_fails_and_notifies(home: Path, receivers, servers) -> None:
    """The 3 a.m. case: the worker dies and the job is out of attempts; stall recovery fails it."""
    rx = receivers()
    s = servers(home, GANSCOPE_NOTIFY_URLS=rx.url("ok/json"), GANSCOPE_STALL_SECONDS="1")
    c = s.client()
    r = c.post("/api/jobs", json={"name": "orphan", "dataset": "ring8", "steps": 10, "max_attempts": 1})
    run_id = r.json()["id"]
    assert c.post("/api/workers/claim", json={"worker_id": "dies", "devices": ["cpu"]}).json()["run_id"] == run_id
    wait_for(lambda: rx.requests(), timeout=30, what="run.failed from stall recovery\n" + s.log())
    body = json.loads(rx.requests()[0]["body"])
    assert body["event"] == "run.failed" and body["run"]["id"] == run_id and body["run"]["status"] == "failed"
    assert "went silent" in body["run"]["error"] and "gave up after 1 of 1 attempts" in body["run"]["error"]


def test_retries_on_500_429_and_a_receiver_that_is_down(home: Path, receivers, servers) -> None:
    rx = receivers()
    down_port = free_port()  # nothing listens here yet
    urls = [rx.url("flaky/2/a"), rx.url("retry-after/b"), rx.url("status/404/c"), rx.url("status/500/d"),
            f"http://127.0.0.1:{down_port}/ok/e"]
    s = servers(home, GANSCOPE_NOTIFY_URLS=",".join(urls), GANSCOPE_NOTIFY_ATTEMPTS="5",
                GANSCOPE_NOTIFY_BACKOFF="0.5")
    c = s.client()
    run_id = job_succeeds(c)

    def down_rows() -> list[dict[str, Any]]:
        return [d for d in deliveries(c, run_id) if f":{down_port}/" in d["target"]]

    # The down receiver: a connection error is retried, not given up on.
    wait_for(lambda: any(d["status"] == "retrying" for d in down_rows()), timeout=30,
             what="the unreachable target to be retried\n" + s.log())
    first = down_rows()[0]
    assert first["http_status"] is None and "Connect" in (first["error"] or "")
    late = receivers(down_port, name="late")
    wait_for(lambda: late.requests(), timeout=30, what="a retry to reach the receiver once it is up")

    by_path: dict[str, list[dict[str, Any]]] = {}
    wait_for(lambda: len(rx.requests("/status/500")) == 5, timeout=60, what="five attempts at the 500 target")
    for r in rx.requests():
        by_path.setdefault(r["path"].split("/")[1], []).append(r)
    assert len(by_path["flaky"]) == 3  # 500, 500, then 200
    assert len(by_path["retry-after"]) == 2
    gap = by_path["retry-after"][1]["time"] - by_path["retry-after"][0]["time"]
    assert gap >= 0.9, f"Retry-After: 1 honoured (waited {gap:.2f}s)"
    assert len(by_path["status"]) == 1 + 5  # a 404 is not retried; the 500 is tried five times
    assert len(late.requests()) == 1
    # Every retry carries the same body (same delivery id), so a receiver can deduplicate.
    assert len({r["body"] for r in by_path["flaky"]}) == 1

    def outcome() -> dict[str, tuple[str, int, int | None]]:
        out = {}
        for d in deliveries(c, run_id):
            key = "down" if f":{down_port}/" in d["target"] else d["payload"]["event"] + str(d["id"])
            out[key] = (d["status"], d["attempts"], d["http_status"])
        return out

    wait_for(lambda: all(v[0] in ("sent", "failed") for v in outcome().values()) and len(outcome()) == 5,
             timeout=30, what="every delivery settled")
    settled = sorted(outcome().values())
    assert ("failed", 1, 404) in settled and ("failed", 5, 500) in settled
    assert ("sent", 3, 200) in settled and ("sent", 2, 200) in settled
    assert outcome()["down"][0] == "sent" and outcome()["down"][1] >= 2
    failed = [d for d in deliveries(c, run_id) if d["status"] == "failed"]
    assert all("receiver says no" in d["error"] for d in failed)
    log = s.log(tail=None)
    assert log.count("FAILED to deliver run.succeeded") == 2, log[-3000:]
    stats = c.get("/api/notifications").json()["stats"]
    assert stats["sent"] == 3 and stats["failed"] == 2 and stats["dropped"] == 0


def test_ingest_answers_while_the_receiver_hangs_and_a_full_queue_drops(home: Path, receivers, servers) -> None:
    rx = receivers()
    s = servers(home, GANSCOPE_NOTIFY_URLS=rx.url("hang/x"), GANSCOPE_NOTIFY_TIMEOUT="120",
                GANSCOPE_NOTIFY_QUEUE="2")
    c = s.client()
    run_id = sdk_run(c, "hung receiver")
    post_nan(c, run_id)
    wait_for(lambda: rx.requests(), timeout=30, what="the hanging receiver to get the alert")
    # The lane is now stuck inside a request that will not be answered for two minutes.
    slowest = 0.0
    for i in range(20):
        t0 = time.monotonic()
        r = c.post(f"/api/runs/{run_id}/metrics", json={"series": {"loss/d": {
            "steps": [10 + i], "values": [None if i % 5 == 0 else 0.5]}}})
        slowest = max(slowest, time.monotonic() - t0)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    assert slowest < 3.0, f"an ingest call took {slowest:.2f}s while the receiver hangs"
    # Finishing runs queues run events behind the stuck one: two wait, the rest are dropped and counted.
    finished = []
    for i in range(5):
        rid = sdk_run(c, f"finisher {i}")
        t0 = time.monotonic()
        assert c.post(f"/api/runs/{rid}/finish", json={"status": "succeeded"}).status_code == 200
        assert time.monotonic() - t0 < 3.0
        finished.append(rid)
    stats = c.get("/api/notifications").json()["stats"]
    assert stats["dropped"] == 3 and stats["waiting"] == 2, stats
    assert [c.get(f"/api/runs/{rid}/notifications").json()["dropped"] for rid in finished] == [0, 0, 1, 1, 1]
    hung = deliveries(c, run_id)
    assert len(hung) == 1 and hung[0]["status"] == "sending" and hung[0]["attempts"] == 0
    assert "DROPPED run.succeeded" in s.log(tail=None)
    assert len(rx.requests()) == 1


def test_escalation_is_notified_once_committed(tmp_path: Path, receivers) -> None:
    """The detectors' call, in process on a real database: a stored warning that the change makes failing
    is announced as alert.escalated, after the commit; a rolled-back change announces nothing."""
    from ganscope.server import notify
    from ganscope.server.db import Database
    from ganscope.server.detectors.engine import AlertState, Change
    from ganscope.server.settings import Settings
    from ganscope.server.store import alerts as alerts_store
    from ganscope.server.store import runs as runs_store
    from ganscope.server.store.migrate import migrate

    rx = receivers()
    settings = Settings(home=tmp_path, notify_urls=[rx.url("ok/server")], notify_backoff=0.1)
    db = Database(settings.sqlalchemy_url)
    migrate(db)
    notifier = notify.Notifier(db, settings)
    notify.register(db.engine, notifier)
    try:
        with db.write() as s:
            run, _ = runs_store.create_sdk_run(s, "escalating", {"notify": [rx.url("ok/job")]}, None)
            row = alerts_store.insert(s, run.id, {"signature": "mode_collapse", "severity": "warning",
                                                  "first_step": 10, "last_step": 20, "message": "narrowing",
                                                  "evidence": {}, "remedy": {}})
            run_id, alert_id = run.id, row.id
        worse = AlertState("mode_collapse", "failing", 10, 40, "collapsed to one mode", {}, {}, id=alert_id)

        with pytest.raises(RuntimeError):
            with db.write() as s:
                notify.alert_changes(s, run_id, [Change("update", worse)])
                alerts_store.save(s, alert_id, worse.to_dict())
                raise RuntimeError("the write failed")
        time.sleep(1.0)
        assert rx.requests() == [], "a rolled-back change notifies nobody"

        with db.write() as s:
            notify.alert_changes(s, run_id, [Change("update", worse)])
            alerts_store.save(s, alert_id, worse.to_dict())
        wait_for(lambda: len(rx.requests()) == 2, timeout=30, what="alert.escalated at both targets")
        bodies = {r["path"]: json.loads(r["body"]) for r in rx.requests()}
        for body in bodies.values():
            assert body["event"] == "alert.escalated" and body["run"]["id"] == run_id
            assert body["alert"]["id"] == alert_id and body["alert"]["severity"] == "failing"
            assert body["alert"]["previous_severity"] == "warning" and body["alert"]["last_step"] == 40
            assert body["text"].startswith("FAILING (was warning): mode_collapse")

        # Already failing: a later update is no escalation.
        later = AlertState("mode_collapse", "failing", 10, 60, "still collapsed", {}, {}, id=alert_id)
        with db.write() as s:
            notify.alert_changes(s, run_id, [Change("update", later)])
            alerts_store.save(s, alert_id, later.to_dict())
        time.sleep(1.0)
        assert len(rx.requests()) == 2
    finally:
        notify.unregister(db.engine)
        notifier.close()
        db.dispose()


def test_alerts_since_for_pollers(any_server: ServerProc) -> None:
    c = any_server.client()
    before = c.get("/api/alerts").json()
    assert before == {"alerts": [], "next": "0", "more": False}
    t0 = "2000-01-01T00:00:00Z"
    runs = [sdk_run(c, f"poll {i}") for i in range(3)]
    for rid in runs:
        post_nan(c, rid)
    page = wait_for(lambda: (p := c.get("/api/alerts").json())["alerts"] and len(p["alerts"]) == 3 and p,
                    timeout=30, what="three alerts")
    ids = [a["id"] for a in page["alerts"]]
    assert ids == sorted(ids) and [a["run_id"] for a in page["alerts"]] == runs
    assert page["alerts"][0]["run_name"] == "poll 0" and page["alerts"][0]["signature"] == "nonfinite"
    assert page["next"] == str(ids[-1]) and page["more"] is False
    # By id: what opened after the one a script saw last; pages of one, following `next`.
    assert [a["id"] for a in c.get("/api/alerts", params={"since": ids[0]}).json()["alerts"]] == ids[1:]
    seen, since = [], None
    while True:
        p = c.get("/api/alerts", params={"limit": 1, **({"since": since} if since else {})}).json()
        seen += [a["id"] for a in p["alerts"]]
        since = p["next"]
        if not p["more"]:
            break
    assert seen == ids and c.get("/api/alerts", params={"since": since}).json()["alerts"] == []
    # By time: everything opened, updated or closed after it; the cursor pages without gaps or repeats.
    seen, since = [], t0
    for _ in range(10):
        p = c.get("/api/alerts", params={"limit": 2, "since": since}).json()
        seen += [a["id"] for a in p["alerts"]]
        since = p["next"]
        if not p["more"]:
            break
    assert sorted(seen) == ids and len(seen) == 3
    assert c.get("/api/alerts", params={"since": since}).json()["alerts"] == []
    assert c.get("/api/alerts", params={"since": "2999-01-01T00:00:00Z"}).json()["alerts"] == []
    closed = c.get("/api/alerts", params={"status": "closed"}).json()["alerts"]
    assert closed == []
    bad = c.get("/api/alerts", params={"since": "yesterday"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "since"]
    assert c.get("/api/alerts", params={"limit": 0}).status_code == 422


def test_job_notify_urls_are_validated(server: ServerProc) -> None:
    c = server.client()
    for bad in (["ftp://example.com/x"], ["not a url"], ["https://"], ["https://a.example/x"] * 2,
                [f"https://a.example/{i}" for i in range(11)], "https://a.example/x"):
        r = c.post("/api/jobs", json={"dataset": "ring8", "notify": bad})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["detail"][0]["loc"][:2] == ["body", "notify"], r.text
    ok = c.post("/api/jobs", json={"dataset": "ring8", "notify": ["slack+https://chat.example/hook"]})
    assert ok.status_code == 201, ok.text
    # No server-wide webhook: the test call says so.
    t = c.post("/api/notifications/test")
    assert t.status_code == 409 and "GANSCOPE_NOTIFY_URLS" in t.json()["detail"]


def test_test_event_and_bad_settings(home: Path, tmp_path: Path, receivers, servers) -> None:
    rx = receivers()
    s = servers(home, GANSCOPE_NOTIFY_URLS=rx.url("ok/test"), GANSCOPE_NOTIFY_SECRET=SECRET,
                GANSCOPE_TOKEN="tok", GANSCOPE_NOTIFY_EVENTS="run.failed")
    assert httpx.post(s.url + "/api/notifications/test").status_code == 401
    r = s.client("tok").post("/api/notifications/test")
    assert r.status_code == 202 and r.json()["queued"] == 1
    wait_for(lambda: rx.requests(), timeout=30, what="the test event")
    got = rx.requests()[0]
    assert json.loads(got["body"])["event"] == "test"
    assert got["headers"]["X-Ganscope-Signature"] == expected_signature(got["body"])
    info = s.client().get("/api/notifications").json()
    assert info["events"] == ["run.failed"] and info["targets"][0]["signed"] is True
    assert "/ok/test" not in info["targets"][0]["target"]
    # Only run.failed is wanted: a success notifies nobody.
    job_succeeds(s.client("tok"))
    time.sleep(1.0)
    assert len(rx.requests()) == 1
    # A bad setting stops the server at start, naming it.
    with pytest.raises(RuntimeError) as exc:
        start_server(tmp_path / "bad", GANSCOPE_NOTIFY_URLS="ftp://nope.example/x")
    assert "notify_urls" in str(exc.value) and "ftp://nope.example/x" in str(exc.value)
    with pytest.raises(RuntimeError) as exc:
        start_server(tmp_path / "bad2", GANSCOPE_NOTIFY_EVENTS="run.exploded")
    assert "run.exploded" in str(exc.value)
