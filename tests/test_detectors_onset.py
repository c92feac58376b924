"""One onset per alert: its first_step never moves later, and message, API and chart band agree on it.

Regression: a d_overpowering alert opened at step 11 read "since step 415" (and its shaded band began
there) once the rule's trailing window no longer reached back to 11; a mode-collapse alert's message
moved from "since 212" to "since 415". The engine now tells every update from the alert's own onset.
"""

from __future__ import annotations

import re

import numpy as np

from ganscope.server.detectors import catalog, rules
from ganscope.server.detectors.engine import RunDetector
from tests.harness import wait_for


def since(message: str) -> int:
    m = re.search(r"since step (\d+)", message)
    assert m, message
    return int(m.group(1))


def test_engine_keeps_the_onset_in_first_step_message_and_window():
    n = 1200
    ld = np.where(np.arange(1, n + 1) < 11, 0.9, 0.002)
    pf = np.where(np.arange(1, n + 1) < 11, 0.3, 0.001)
    det = RunDetector({"dataset": "ring8"})
    for lo in range(0, n, 50):
        steps = np.arange(lo + 1, min(lo + 50, n) + 1)
        det.feed({"loss/d": (steps, ld[lo:lo + 50]), "pred/fake": (steps, pf[lo:lo + 50])})
    [a] = [a for a in det.history if a.signature == "d_overpowering"]
    assert a.status == "open" and a.last_step == n
    assert a.first_step == 11 and since(a.message) == 11 and a.evidence["window"] == [11, n]
    # The rule on its own, seeing only the trailing window, now dates the onset much later: the path the
    # engine must correct.
    raw = rules.RULES["d_overpowering"](det.recent, det.early, catalog.thresholds_for("d_overpowering", None),
                                        det.ctx)
    assert raw is not None and raw.first_step > 400 and since(raw.message) == raw.first_step


def test_mode_collapse_alert_keeps_its_onset_as_its_window_slides():
    n = 900
    spread = np.where(np.arange(1, n + 1) < 212, 0.5, 0.002)
    det = RunDetector({"dataset": "shapes", "image_size": 16})
    messages = []
    for lo in range(0, n, 50):
        steps = np.arange(lo + 1, min(lo + 50, n) + 1)
        for ch in det.feed({"sample/diversity": (steps, spread[lo:lo + 50])}):
            messages.append((ch.alert.first_step, ch.alert.message, list(ch.alert.evidence["window"])))
    assert messages
    onsets = {since(m) for _, m, _ in messages} | {f for f, _, _ in messages} | {w[0] for _, _, w in messages}
    assert len(onsets) == 1 and 212 <= onsets.pop() <= 215


def test_alerts_api_agrees_with_the_message_and_the_band(server):
    """Through the real server: first_step, the message's 'since step N' and evidence.window[0] are one."""
    with server.client() as c:
        run_id = c.post("/api/runs", json={"name": "onset", "config": {"dataset": "ring8"}}).json()["id"]
        steps = list(range(1, 11))
        c.post(f"/api/runs/{run_id}/metrics", json={"series": {"loss/d": {"steps": steps, "values": [0.9] * 10},
                                                              "pred/fake": {"steps": steps, "values": [0.3] * 10}}})
        for lo in range(11, 1011, 50):
            steps = list(range(lo, lo + 50))
            r = c.post(f"/api/runs/{run_id}/metrics",
                       json={"series": {"loss/d": {"steps": steps, "values": [0.002] * 50},
                                        "pred/fake": {"steps": steps, "values": [0.001] * 50}}})
            assert r.status_code == 200, r.text

        def settled():
            alerts = c.get(f"/api/runs/{run_id}/alerts").json()["alerts"]
            return alerts if alerts and alerts[0]["last_step"] == 1010 else None
        [a] = wait_for(settled, timeout=15, what="the alert to reach step 1010")
        assert a["signature"] == "d_overpowering" and a["first_step"] == 11
        assert since(a["message"]) == 11 and a["evidence"]["window"] == [11, 1010]


def test_a_backlog_fed_at_once_keeps_its_early_onset():
    """A spool's backlog (or batches queued between judgements) arrives as one long batch: the engine
    judges it in slices, so the onset at step 11 is not lost behind the kept window."""
    n = 1200
    ld = np.where(np.arange(1, n + 1) < 11, 0.9, 0.002)
    pf = np.where(np.arange(1, n + 1) < 11, 0.3, 0.001)
    steps = np.arange(1, n + 1)
    det = RunDetector({"dataset": "ring8"})
    changes = det.feed({"loss/d": (steps, ld), "pred/fake": (steps, pf)})
    [a] = [a for a in det.history if a.signature == "d_overpowering"]
    assert [c.kind for c in changes if c.alert is a][0] == "open"
    assert a.first_step == 11 and since(a.message) == 11 and a.evidence["window"] == [11, n]
