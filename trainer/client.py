"""HTTP client for workers and the SDK: bearer auth, retries with backoff, and an ordered disk spool.

Every ingest call (metrics, samples, snapshots, checkpoints, finish) is first written to the
spool: one file per request, named by a sequence number, fsync'd before `put` returns. A
sender thread delivers the files oldest first and deletes each only after a 2xx. So when the
server is down, restarting or failing, training goes on and nothing is lost; when it returns
the spool replays in order. Ingest is idempotent on (run, name, step), so a replay of a batch
the server had already accepted (say the answer was lost) does no harm.

Outcomes by answer:
* connection error, 502, 504, 401, 403 -> the server is unreachable (or the token is wrong):
  keep everything, back off, retry from the oldest entry; never give up.
* 503, 408, 429 -> the server is up but cannot take *this* request now (the store answers 503
  for a database or disk error): the entry waits and is retried with backoff, without limit,
  while later entries go ahead (a broken artifacts disk must not hold up metrics); several in a
  row mean the whole server is unavailable, and everything backs off.
* other 5xx -> retried a few times (later entries go ahead), then moved to `rejected/`.
* other 4xx -> a bad request that retrying cannot fix: moved to `rejected/` at once.
Rejected files stay on disk with their reason (replayable with `Spool.requeue_rejected`) and are
logged loudly: nothing is dropped silently.

Runs created offline (the SDK started while the server was down): the run's creation is itself a spool
entry (`create_run`, kind "create", carrying a client-made key that makes creation idempotent), and the
entries logged before the server answered name the run by that key (header `run_key`, path with a
`{run}` placeholder). The sender learns the run's id when the creation is accepted, keeps the mapping in
the spool folder (`run-keys.json`, so a later replay still knows it), and fills the id in at send time;
an entry whose run is not created yet waits. If the server refuses the creation, the run's entries are
moved to `rejected/` with that reason. A run's `finish` and `checkpoint` entries wait while an
earlier entry of that run is pending: the server sees a final status, or a resume point, only after
the points it covers. An image, snapshot or checkpoint that has failed `entry_attempts` times no longer
holds them back (it keeps retrying on its own); metric batches and config changes always do.

Replay order (issue 14, disk pressure): each pass sends creations, config changes and metric batches
first, then samples and snapshots, then checkpoints, then finishes; each kind in its own spool order
(per run, an entry of a kind still pending holds back the later ones of that kind).
So when the artifacts disk fills (the server answers 503 to images and uploads while it still stores
metrics), and when space returns, the light metric batches are never stuck behind a backlog of images.
A `finish` or `checkpoint` still waits for the *earlier* (lower sequence) pending entries of its run.
After three 503 answers of one kind in a pass, the rest of that kind waits for the next pass.

This module imports no torch: the SDK uses it inside any training script.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from ganscope.trainer.spool import Entry, Spool, SpoolBusy  # noqa: F401 - SpoolBusy is part of this API

log = logging.getLogger("ganscope.client")

OK, DOWN, BUSY, RETRY, REJECT = "ok", "down", "busy", "retry", "reject"
_DOWN_CODES = {401, 403, 502, 504}
_BUSY_CODES = {408, 429, 503}
_BARRIERS = ("checkpoint", "finish")  # sent only after the earlier entries of their run (see _pass)
# Entries that hold their run's barriers however often they fail: a finish sent ahead of them would make the
# server refuse them (409, a finished run takes no more data) and their points would be lost. Images may be
# given up on after `entry_attempts`, so a run whose artifact disk stays full can still end.
_ALWAYS_HOLD = ("create", "config", "metrics")
# Replay priority within a pass (lower first); creation first, the run's barriers last (see the docstring).
_PRIORITY = {"create": 0, "config": 0, "metrics": 0, "sample": 1, "snapshot": 1, "checkpoint": 2, "finish": 3}
_STREAM_ABOVE = 8 << 20  # bodies larger than this are streamed from the spool file, not read into memory
ActionCallback = Callable[[int, str, "str | None"], None]
CreatedCallback = Callable[[str, int, "dict[str, Any]"], None]  # (run key, run id, the server's answer)
RunRef = "int | str"  # a run id, or the key of a run created through the spool (create_run)


class ServerUnavailable(RuntimeError):
    """A direct (unspooled) call could not reach a working server within its retry budget."""


def encode_values(values: Any) -> list[float | str | None]:
    """Floats for JSON: finite numbers as such, non-finite as the strings the wire protocol allows."""
    out: list[float | str | None] = []
    for v in values:
        if v is None:
            out.append(None)
            continue
        f = float(v)
        out.append(f if math.isfinite(f) else ("nan" if f != f else ("inf" if f > 0 else "-inf")))
    return out


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None anywhere in a payload: bare NaN is not JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, without importing numpy
        return json_safe(obj.tolist())
    return obj


class Client:
    """Talks to one ganscope server. Direct calls retry for a while; ingest goes through the spool."""

    def __init__(self, server: str, spool_dir: Path, *, token: str | None = None,
                 on_action: ActionCallback | None = None, max_backoff: float = 2.0, entry_attempts: int = 5,
                 batch_points: int = 20_000, flush_seconds: float = 1.0, timeout: float = 30.0,
                 on_created: CreatedCallback | None = None) -> None:
        self.base = server.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.spool = Spool(spool_dir)
        self.on_action = on_action
        self.on_created = on_created
        self.run_ids: dict[str, int] = self.spool.load_run_keys()  # run key -> id, for runs made by create_run
        self._dead_keys: dict[str, str] = {}  # run key -> why the server refused to create it
        self.max_backoff = max_backoff
        self.entry_attempts = entry_attempts
        self.batch_points = batch_points  # memory bound of the metric buffer
        self.flush_seconds = flush_seconds
        timeouts = httpx.Timeout(timeout, connect=5.0)
        # Separate connection pools: a long checkpoint upload never delays a heartbeat or a claim.
        self._direct = httpx.Client(base_url=self.base, headers=self.headers, timeout=timeouts)
        self._sender_http = httpx.Client(base_url=self.base, headers=self.headers, timeout=timeouts)
        self._buf: dict[int | str, dict[str, tuple[list[int], list[Any]]]] = {}
        self._buf_points = 0
        self._buf_since = 0.0
        self._buf_lock = threading.Lock()
        self._wake = threading.Event()
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._deferred: dict[int, tuple[int, float]] = {}  # seq -> (attempts, next try at)
        self._down_reason: str | None = None
        self._delay = 0.0
        self._thread = threading.Thread(target=self._sender, name="ganscope-spool", daemon=True)
        self._thread.start()
        if n := self.spool.count():
            log.info("spool %s holds %d undelivered entries from before: replaying them", self.spool.root, n)

    # --- direct calls ---------------------------------------------------------
    def call(self, method: str, path: str, *, retry_for: float = 30.0, stop: threading.Event | None = None,
             **kw: Any) -> httpx.Response:
        """One request; connection errors and 502/503/504 are retried with backoff for `retry_for` s."""
        deadline = time.monotonic() + retry_for
        delay = 0.2
        while True:
            try:
                r = self._direct.request(method, path, **kw)
                if r.status_code not in (502, 503, 504):
                    return r
                why = f"HTTP {r.status_code}: {_detail(r)}"
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise ServerUnavailable(f"{method} {path} failed: {why}")
            (stop or self._stop).wait(delay)
            delay = min(delay * 2, self.max_backoff)

    def download(self, path: str, dest: Path, *, retry_for: float = 60.0) -> httpx.Response | None:
        """GET path into dest (streamed); the response (headers) or None on 404."""
        deadline = time.monotonic() + retry_for
        delay = 0.2
        while True:
            try:
                with self._direct.stream("GET", path) as r:
                    if r.status_code == 404:
                        return None
                    if r.status_code == 200:
                        tmp = dest.with_suffix(dest.suffix + ".part")
                        with open(tmp, "wb") as f:
                            for chunk in r.iter_bytes(1 << 20):
                                f.write(chunk)
                        os.replace(tmp, dest)
                        return r
                    if r.status_code not in _DOWN_CODES | _BUSY_CODES:
                        r.read()
                        raise RuntimeError(f"GET {path}: HTTP {r.status_code}: {_detail(r)}")
                    why = f"HTTP {r.status_code}"
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + delay > deadline:
                raise ServerUnavailable(f"GET {path} failed: {why}")
            time.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    # --- spooled ingest -------------------------------------------------------
    def log_metrics(self, run_id: int | str, series: dict[str, tuple[list[int], list[Any]]]) -> None:
        """Buffer points; they reach the spool when the buffer is full or flush_seconds old."""
        with self._buf_lock:
            run = self._buf.setdefault(run_id, {})
            for name, (steps, values) in series.items():
                if len(steps) != len(values):
                    raise ValueError(f"metric {name!r}: {len(steps)} steps but {len(values)} values")
                s, v = run.setdefault(name, ([], []))
                s.extend(int(x) for x in steps)
                v.extend(values)
                self._buf_points += len(steps)
            if self._buf_points and not self._buf_since:
                self._buf_since = time.monotonic()
            full = self._buf_points >= self.batch_points
        if full:
            self.flush_metrics()

    def flush_metrics(self) -> None:
        """Write the metric buffer to the spool: one fsync'd entry per run."""
        with self._buf_lock:
            buf, self._buf, self._buf_points, self._buf_since = self._buf, {}, 0, 0.0
            for run_id, series in buf.items():
                body = {"series": {name: _sorted_unique(steps, values) for name, (steps, values) in series.items()}}
                self._put_json("metrics", run_id, "POST", "/metrics", body)

    def put_sample(self, run_id: int | str, step: int, kind: str, png: bytes) -> None:
        self.spool.put("sample", {**self._route(run_id, "/samples"), "method": "POST",
                                  "params": {"step": int(step), "kind": kind}, "content_type": "image/png"}, png)
        self._wake.set()

    def put_snapshot(self, run_id: int | str, step: int, kind: str, payload: dict[str, Any]) -> None:
        self._put_json("snapshot", run_id, "POST", "/snapshots",
                       {"step": int(step), "kind": kind, "payload": json_safe(payload)})

    def create_run(self, key: str, body: dict[str, Any]) -> int:
        """Spool an SDK run's creation (POST /api/runs with `key`); entries naming `key` wait for it. Its seq."""
        data = json.dumps({**body, "key": key}, allow_nan=False, separators=(",", ":")).encode()
        seq = self.spool.put("create", {"run_key": key, "method": "POST", "path": "/api/runs",
                                        "content_type": "application/json"}, data)
        self._wake.set()
        return seq

    def put_config(self, run_id: int | str, declared: dict[str, Any]) -> int:
        """Spool a change of an SDK run's declared config (PATCH /api/runs/{id}/config), in order with its data."""
        return self._put_json("config", run_id, "PATCH", "/config", {"declared": json_safe(declared)})

    def put_checkpoint(self, run_id: int, step: int, path: Path) -> None:
        # The points up to this step go first: a checkpoint on the server means a resumed job starts
        # after it, so its points must never arrive later (or die with this process in the buffer).
        self.flush_metrics()
        # Copied into the spool now: the loop may overwrite or prune its own file later.
        self.spool.put("checkpoint", {**self._route(run_id, f"/checkpoints/{int(step)}"), "method": "PUT",
                                      "content_type": "application/octet-stream"}, body_file=path)
        self._wake.set()

    def finish(self, run_id: int | str, body: dict[str, Any]) -> int:
        """Spooled behind the run's data: the server sees the final status after every point. Returns its seq."""
        self.flush_metrics()
        return self._put_json("finish", run_id, "POST", "/finish", body)

    def _put_json(self, kind: str, run_id: int | str, method: str, tail: str, body: dict[str, Any]) -> int:
        data = json.dumps(body, allow_nan=False, separators=(",", ":")).encode()
        seq = self.spool.put(kind, {**self._route(run_id, tail), "method": method,
                                    "content_type": "application/json"}, data)
        self._wake.set()
        return seq

    def _route(self, run: int | str, tail: str) -> dict[str, Any]:
        """Header fields naming an entry's run: its id, or (not created yet) its key and a path to fill in."""
        if isinstance(run, str):
            if run not in self.run_ids:
                return {"run_key": run, "path": "/api/runs/{run}" + tail}
            run = self.run_ids[run]
        return {"run_id": int(run), "path": f"/api/runs/{int(run)}{tail}"}

    def _resolve(self, header: dict[str, Any]) -> bool:
        """Fill in the id of a keyed entry's run (in the header); False while the run is not created yet."""
        key = header.get("run_key")
        if key is None or "run_id" in header or header.get("kind") == "create":
            return True
        run_id = self.run_ids.get(key)
        if run_id is None:
            return False
        header["run_id"] = run_id
        header["path"] = header["path"].replace("{run}", str(run_id))
        return True

    def _learn_run(self, key: str, resp: httpx.Response) -> None:
        """A creation was accepted: remember key -> id on disk before the entries that need it are sent."""
        try:
            answer = resp.json()
            run_id = int(answer["id"])
        except (ValueError, KeyError, TypeError):
            log.error("the server's answer to creating run %s has no id: %s", key, resp.text[:200])
            return
        self.run_ids[key] = run_id
        self.spool.save_run_keys(self.run_ids)
        if self.on_created is not None:
            self.on_created(key, run_id, answer)

    def delivered(self, seq: int) -> bool:
        """True once entry `seq` left the spool (accepted, or rejected and kept in rejected/)."""
        return not any(self.spool.root.glob(f"{seq:012d}.*.req"))

    def wait_delivered(self, seq: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._changed:
            while not self.delivered(seq):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.2))
        return True

    def pending(self) -> int:
        return self.spool.count() + (1 if self._buf_points else 0)

    def flush(self, timeout: float) -> bool:
        """Spool the buffer and wait for delivery; True once the spool is empty.

        Returns early (False) when time runs out or when all that is left has failed on the server
        `entry_attempts` times: those keep retrying in the background, nobody waits for them."""
        self.flush_metrics()
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._changed:
            while entries := self.spool.entries():
                left = deadline - time.monotonic()
                stuck = all(self._deferred.get(e.seq, (0, 0.0))[0] >= self.entry_attempts for e in entries)
                if left <= 0 or stuck:
                    return False
                self._changed.wait(min(left, 0.2))
        return True

    def close(self, timeout: float = 10.0) -> bool:
        drained = self.flush(timeout)
        if not drained:
            log.warning("%d entries still in spool %s: they are kept on disk and replayed by the next "
                        "process using this spool", self.spool.count(), self.spool.root)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=5.0)
        self._direct.close()
        self._sender_http.close()
        self.spool.close()
        return drained

    # --- the sender thread ----------------------------------------------------
    def _sender(self) -> None:
        while not self._stop.is_set():
            try:
                if self._buf_since and time.monotonic() - self._buf_since >= self.flush_seconds:
                    self.flush_metrics()
                entries = self.spool.entries()
                if not entries or not self._pass(entries):
                    # Nothing sendable now: sleep until new work, a deferred retry, or the backoff ends.
                    self._wake.wait(self._delay or 0.2)
                    self._wake.clear()
            except Exception:  # noqa: BLE001 - the sender must outlive any single bad entry
                log.exception("spool sender error; retrying")
                self._stop.wait(1.0)

    def _pass(self, entries: list[Entry]) -> bool:
        """Try each due entry in order; True if any was delivered or rejected."""
        progressed = False
        # run -> lowest pending seq of its data entries / of its checkpoints: a barrier waits for those
        # *before* it (the pass is not in seq order, so "pending" alone would also count later entries).
        held: dict[Any, int] = {}
        held_ckpt: dict[Any, int] = {}

        # (run, kind) -> failed attempts of its first pending entry: the later entries of that kind wait, so each
        # kind keeps its order (a re-uploaded sample replaces the first; a repeated metric step keeps the first
        # value). They share that entry's attempts, so they stop holding barriers (and flush) with it, not one
        # after the other; past `entry_attempts` failures it no longer holds its kind back either.
        kind_held: dict[tuple[Any, str], int] = {}

        def gives_way(kind: str, attempts: int) -> bool:
            return attempts >= self.entry_attempts and kind not in _ALWAYS_HOLD

        def hold(kind: str, run: Any, seq: int, attempts: int) -> None:
            table = held_ckpt if kind == "checkpoint" else held
            table[run] = min(table.get(run, seq), seq)
            kind_held.setdefault((run, kind), attempts)

        busy_in_row = 0
        busy_kind: dict[str, int] = {}
        for entry in sorted(entries, key=lambda e: (_PRIORITY.get(e.kind, 1), e.seq)):
            if self._stop.is_set():
                break
            attempts, next_at = self._deferred.get(entry.seq, (0, 0.0))
            header, offset, size = Spool.read(entry)
            if not self._resolve(header):  # its run is not created yet: wait for the creation entry
                key = header["run_key"]
                if key in self._dead_keys:
                    self.spool.reject(entry, f"{entry.kind} for run key {key}: {self._dead_keys[key]}")
                    progressed = True
                else:
                    hold(entry.kind, key, entry.seq, attempts)
                continue
            run_id = header.get("run_id", header.get("run_key"))
            waits = entry.kind in _BARRIERS and (
                held.get(run_id, entry.seq) < entry.seq
                or (entry.kind == "finish" and held_ckpt.get(run_id, entry.seq) < entry.seq))
            first_attempts = kind_held.get((run_id, entry.kind))
            if first_attempts is not None:
                waits = True
                if first_attempts > attempts:
                    attempts = first_attempts
                    self._deferred[entry.seq] = (attempts, next_at)
            # Three 503s of this kind in this pass: its storage is failing; the rest of it waits.
            if next_at > time.monotonic() or waits or busy_kind.get(entry.kind, 0) >= 3:
                if not gives_way(entry.kind, attempts):
                    hold(entry.kind, run_id, entry.seq, attempts)
                continue
            outcome, why, resp = self._send(entry, header, offset, size)
            busy_in_row = busy_in_row + 1 if outcome == BUSY else 0
            if outcome == BUSY:
                busy_kind[entry.kind] = busy_kind.get(entry.kind, 0) + 1
                failed = self._defer(entry, attempts, why, run_id, quiet=busy_in_row >= 3)
                if not gives_way(entry.kind, failed):
                    hold(entry.kind, run_id, entry.seq, failed)
            if outcome == DOWN or (busy_in_row >= 3 and not progressed):
                # Unreachable, or everything answers 503: the server as a whole is unavailable. (503s after
                # a delivery in this pass are one kind's storage failing, not the server.)
                self._went_down(why)
                return progressed
            if outcome == BUSY:
                continue
            self._came_up()
            if outcome == OK:
                if entry.kind == "create" and resp is not None:
                    self._learn_run(header["run_key"], resp)
                self.spool.remove(entry)
                self._deferred.pop(entry.seq, None)
                if resp is not None and entry.kind == "metrics":
                    self._report_action(run_id, resp)
            elif outcome == RETRY and attempts + 1 < self.entry_attempts:
                if (failed := self._defer(entry, attempts, why, run_id)) < self.entry_attempts:
                    hold(entry.kind, run_id, entry.seq, failed)
                continue
            else:
                dest = self.spool.reject(entry, f"{entry.kind} {header.get('method')} {header.get('path')}: {why}")
                self._deferred.pop(entry.seq, None)
                if entry.kind == "create":
                    self._dead_keys[header["run_key"]] = f"the server refused to create the run: {why}"
                log.error("REJECTED %s for run %s: %s; kept in %s (not retried)", entry.kind, run_id, why, dest)
            progressed = True
            with self._changed:
                self._changed.notify_all()
        if self._deferred:
            soonest = min(t for _, t in self._deferred.values())
            self._delay = max(0.05, min(soonest - time.monotonic(), 1.0))
        else:
            self._delay = 0.0
        return progressed

    def _defer(self, entry: Entry, attempts: int, why: str, run_id: Any, quiet: bool = False) -> int:
        """Retry this entry later (exponential backoff, capped); returns its failed attempts so far."""
        attempts += 1
        wait = min(0.5 * 2 ** (attempts - 1), 10.0)
        self._deferred[entry.seq] = (attempts, time.monotonic() + wait)
        if not quiet and (attempts in (1, self.entry_attempts) or attempts % 20 == 0):
            log.warning("server failed to take %s for run %s (%s); attempt %d, kept in the spool and retried "
                        "in %.1fs while later entries go ahead", entry.kind, run_id, why, attempts, wait)
        return attempts

    def _send(self, entry: Entry, header: dict[str, Any], offset: int, size: int
              ) -> tuple[str, str, httpx.Response | None]:
        content: bytes | Iterator[bytes]
        content = Spool.body_bytes(entry, offset) if size <= _STREAM_ABOVE else Spool.body_stream(entry, offset)
        headers = {"Content-Type": header.get("content_type", "application/json"), "Content-Length": str(size)}
        try:
            r = self._sender_http.request(header["method"], header["path"], params=header.get("params"),
                                          content=content, headers=headers)
        except httpx.TransportError as exc:
            return DOWN, f"server unreachable ({type(exc).__name__}: {exc})", None
        if 200 <= r.status_code < 300:
            return OK, "", r
        why = f"HTTP {r.status_code}: {_detail(r)}"
        if r.status_code in _DOWN_CODES:
            return DOWN, why, r
        if r.status_code in _BUSY_CODES:
            return BUSY, why, r
        return (RETRY if r.status_code >= 500 else REJECT), why, r

    def _went_down(self, why: str) -> None:
        if self._down_reason is None:
            log.warning("server not accepting data (%s): spooling to %s; training goes on", why, self.spool.root)
        elif why != self._down_reason and "unreachable" not in why:
            log.warning("server still not accepting data: %s", why)
        self._down_reason = why
        self._delay = min(max(self._delay * 2, 0.1), self.max_backoff)

    def _came_up(self) -> None:
        if self._down_reason is not None:
            log.info("server accepting data again: replaying %d spooled entries (metrics first)", self.spool.count())
            self._down_reason = None
            # Entries deferred during the outage are due now, so the replay keeps their order.
            self._deferred = {seq: (att, 0.0) for seq, (att, _) in self._deferred.items()}
        self._delay = 0.0

    def _report_action(self, run_id: int, resp: httpx.Response) -> None:
        if self.on_action is None:
            return
        try:
            data = resp.json()
        except ValueError:
            return
        action = data.get("action") if isinstance(data, dict) else None
        if action and action != "continue":
            self.on_action(run_id, action, data.get("reason"))

    @property
    def down(self) -> str | None:
        """Why the server is not taking data right now (unreachable, a wrong token...), or None."""
        return self._down_reason

    def poke(self) -> None:
        """Something else reached the server: retry the spool now instead of waiting out the backoff."""
        self._delay = 0.0
        self._wake.set()


def _sorted_unique(steps: list[int], values: list[Any]) -> dict[str, list[Any]]:
    """Steps ascending, the first value of a repeated step kept (the server's own rule)."""
    if all(a < b for a, b in zip(steps, steps[1:])):
        return {"steps": steps, "values": encode_values(values)}
    seen: dict[int, Any] = {}
    for s, v in zip(steps, values):
        seen.setdefault(s, v)
    order = sorted(seen)
    return {"steps": order, "values": encode_values(seen[s] for s in order)}


def _detail(r: httpx.Response) -> str:
    try:
        data = r.json()
        if isinstance(data, dict) and "detail" in data:
            return str(data["detail"])[:500]
    except ValueError:
        pass
    return r.text[:500]
