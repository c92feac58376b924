"""The notifier: events in, webhook POSTs out, on background threads that never hold up a request.

`emit` only expands an event into one delivery per target and puts each on a bounded in-memory
queue (`put_nowait`): ingest, finish and the detectors never wait for a receiver. A full queue drops
the delivery, counts it and logs it. Deliveries go out on *lanes*, a thread and a queue each, one
per target URL (up to MAX_LANES; beyond that, targets share them by hash): a target's events arrive
in order, and a receiver that hangs or keeps failing holds up only its own lane.

Retries are a small bounded loop rather than a library: tenacity and backoff are not dependencies
of ours, httpx's transport retries cover connection errors only, and the loop needs to record each
attempt on the delivery's row (so the run page shows "retrying, HTTP 500") and to stop at once when
the server shuts down, which a library's sleep would not. Attempts: GANSCOPE_NOTIFY_ATTEMPTS, with
exponential backoff from GANSCOPE_NOTIFY_BACKOFF seconds (x2 each time, ±20 % jitter, at most 60 s;
a receiver's Retry-After is honoured up to 60 s). Connection errors, timeouts, 408, 425, 429 and 5xx
are retried; any other answer (a 404 webhook, a 3xx) fails at once, as retrying cannot fix it.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from ganscope.server.db import Database
from ganscope.server.notify import render
from ganscope.server.notify.events import EVENTS, TEST_EVENT
from ganscope.server.store import notifications as store
from ganscope.server.store.util import iso, utcnow

log = logging.getLogger("ganscope.notify")
MAX_LANES = 16
MAX_WAIT_S = 60.0
_RETRY_CODES = {408, 425, 429}


@dataclass(frozen=True)
class Target:
    url: str
    fmt: str  # json | slack | discord
    scope: str  # server | job
    signed: bool


@dataclass
class Delivery:
    target: Target
    payload: dict[str, Any]
    run_id: int | None
    alert_id: int | None
    queued_at: float = field(default_factory=time.monotonic)


class Notifier:
    def __init__(self, db: Database, settings: Any) -> None:
        self.db = db
        self.secret: str | None = settings.notify_secret or None
        self.events = set(settings.notify_events)
        self.base_url: str | None = settings.notify_base_url
        self.attempts = settings.notify_attempts
        self.backoff = settings.notify_backoff
        self.server_targets = [self._target(u, "server", settings.notify_format) for u in settings.notify_urls]
        self._queue_size = settings.notify_queue
        self._lanes: list[queue.Queue[Delivery]] = []
        self._lane_of: dict[str, queue.Queue[Delivery]] = {}
        self._http = httpx.Client(timeout=httpx.Timeout(settings.notify_timeout), follow_redirects=False,
                                  headers={"User-Agent": "ganscope-webhook/1"})
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight: set[int] = set()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()  # queued, sent, failed, dropped
        self.dropped_by_run: Counter[int] = Counter()

    def _target(self, raw: str, scope: str, default_fmt: str = "auto") -> Target:
        fmt, url = render.target_format(raw, default_fmt)
        # A job's own URLs are never signed: the server's secret must not sign bodies for whoever
        # can launch a job (they could replay them to the operator's receiver).
        return Target(url, fmt, scope, signed=scope == "server" and bool(self.secret))

    # --- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Lanes start on first use; this only says what is configured."""
        if self.server_targets:
            log.info("notifications: %d server-wide webhook(s) for %s", len(self.server_targets),
                     ", ".join(sorted(self.events)) or "no events")

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        left = self.queued()
        if left:
            log.warning("notifications: %d undelivered notification(s) dropped at shutdown", left)
        with self._lock:
            unfinished = list(self._in_flight)
        if unfinished:
            try:
                with self.db.write() as s:
                    store.fail_unfinished(s, unfinished, "the server stopped before delivery finished")
            except Exception:  # noqa: BLE001 - shutting down; the log says what happened
                log.warning("notifications: could not mark %d interrupted deliveries", len(unfinished))
        self._http.close()

    # --- events in ----------------------------------------------------------------------
    def emit(self, event: str, run: dict[str, Any] | None = None, alert: dict[str, Any] | None = None,
             job_urls: list[str] | None = None) -> int:
        """Queue `event` for every target that wants it; returns how many deliveries were queued. Never blocks."""
        if event == TEST_EVENT:
            targets = list(self.server_targets)
        elif event not in self.events:
            return 0
        else:
            targets = list(self.server_targets)
            seen = {t.url for t in targets}
            for raw in job_urls or []:
                try:
                    t = self._target(raw, "job")
                except ValueError as exc:  # validated at submit time; a stored config could predate that
                    log.warning("run %s: ignoring its notify URL: %s", run and run.get("id"), exc)
                    continue
                if t.url not in seen:
                    seen.add(t.url)
                    targets.append(t)
        if not targets:
            return 0
        payload = {"event": event, "delivery": None, "time": None, "text": "", "run": run, "alert": alert,
                   "description": EVENTS.get(event, "")}
        payload["text"] = render.summary_line(payload)
        run_id = run.get("id") if run else None
        alert_id = alert.get("id") if alert else None
        queued = 0
        for t in targets:
            lane = self._lane_for(t.url)
            try:
                lane.put_nowait(Delivery(t, payload, run_id, alert_id))
                queued += 1
            except queue.Full:
                self._count("dropped", run_id)
                log.warning("notifications: queue full, DROPPED %s for run %s to %s (%d dropped so far)",
                            event, run_id, render.redact(t.url), self.stats["dropped"])
        self._count("queued", n=queued)
        return queued

    def _count(self, what: str, run_id: int | None = None, n: int = 1) -> None:
        with self._lock:  # lanes and request threads count concurrently
            self.stats[what] += n
            if what == "dropped" and run_id is not None:
                self.dropped_by_run[run_id] += n

    # --- deliveries out ---------------------------------------------------------------------
    def _lane_for(self, url: str) -> queue.Queue[Delivery]:
        with self._lock:
            q = self._lane_of.get(url)
            if q is None:
                if len(self._lanes) < MAX_LANES:
                    q = queue.Queue(maxsize=self._queue_size)
                    t = threading.Thread(target=self._lane, args=(q,), name=f"ganscope-notify-{len(self._lanes)}",
                                         daemon=True)
                    self._lanes.append(q)
                    self._threads.append(t)
                    t.start()
                else:
                    q = self._lanes[hash(url) % MAX_LANES]
                self._lane_of[url] = q
            return q

    def _lane(self, q: queue.Queue[Delivery]) -> None:
        while not self._stop.is_set():
            try:
                d = q.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._deliver(d)
            except Exception:  # noqa: BLE001 - one bad delivery must not end the lane
                log.exception("notifications: delivering %s failed unexpectedly", d.payload.get("event"))

    def _deliver(self, d: Delivery) -> None:
        t = d.target
        payload = {**d.payload, "time": iso(utcnow())}
        shown = render.redact(t.url)
        row_id = self._insert(d, payload, shown)
        payload["delivery"] = row_id
        data = render.body(t.fmt, payload)
        headers = {"Content-Type": "application/json", "X-Ganscope-Event": payload["event"]}
        if row_id is not None:
            headers["X-Ganscope-Delivery"] = str(row_id)
        if t.signed and self.secret:
            headers[render.SIGNATURE_HEADER] = render.sign(self.secret, data)
        what = f"{payload['event']} (run {d.run_id}) to {shown}"
        for attempt in range(1, self.attempts + 1):
            code, why, retry_after = self._post(t.url, data, headers)
            if code is not None and 200 <= code < 300:
                self._record(row_id, "sent", attempt, code, None)
                self._count("sent")
                if attempt > 1:
                    log.info("notifications: %s delivered on attempt %d", what, attempt)
                return
            transient = code is None or code in _RETRY_CODES or code >= 500
            if not transient or attempt == self.attempts:
                self._record(row_id, "failed", attempt, code, why)
                self._count("failed")
                log.error("notifications: FAILED to deliver %s after %d attempt(s): %s", what, attempt, why)
                return
            wait = min(self.backoff * 2 ** (attempt - 1), MAX_WAIT_S) * random.uniform(0.8, 1.2)
            if retry_after is not None:
                wait = max(wait, min(retry_after, MAX_WAIT_S))
            self._record(row_id, "retrying", attempt, code, why)
            log.warning("notifications: %s attempt %d/%d failed (%s); retrying in %.1fs", what, attempt,
                        self.attempts, why, wait)
            if self._stop.wait(wait):
                self._record(row_id, "failed", attempt, code, f"{why}; the server stopped before the next attempt")
                self._count("failed")
                return

    def _post(self, url: str, data: bytes, headers: dict[str, str]) -> tuple[int | None, str, float | None]:
        """(HTTP status or None, why it is not a success, Retry-After seconds if given)."""
        try:
            r = self._http.post(url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500], None
        retry_after = None
        ra = r.headers.get("retry-after", "")
        if ra.strip().isdigit():
            retry_after = float(ra)
        return r.status_code, f"HTTP {r.status_code}: {r.text[:300]}", retry_after

    # --- the delivery's row --------------------------------------------------------------
    def _insert(self, d: Delivery, payload: dict[str, Any], shown: str) -> int | None:
        try:
            with self.db.write() as s:
                row_id = store.insert(s, run_id=d.run_id, alert_id=d.alert_id, event=payload["event"],
                                      scope=d.target.scope, target=shown, fmt=d.target.fmt, payload=payload)
        except Exception:  # noqa: BLE001 - the message matters more than its record: send anyway
            log.warning("notifications: could not record a delivery of %s; sending it anyway",
                        payload["event"], exc_info=True)
            return None
        with self._lock:
            self._in_flight.add(row_id)
        return row_id

    def _record(self, row_id: int | None, status: str, attempts: int, code: int | None, why: str | None) -> None:
        if row_id is None:
            return
        if status in ("sent", "failed"):
            with self._lock:
                self._in_flight.discard(row_id)
        try:
            with self.db.write() as s:
                store.record_attempt(s, row_id, status=status, attempts=attempts, http_status=code, error=why)
        except Exception:  # noqa: BLE001 - logged; the delivery itself goes on
            log.warning("notifications: could not record delivery %s as %s", row_id, status, exc_info=True)

    def queued(self) -> int:
        with self._lock:
            return sum(q.qsize() for q in self._lanes)
