"""Server-sent events from the Broker: one run's live points, alerts and status; every run's status.

Catch-up: each `metrics` event carries `id: <highest step in it>`, so a browser
that reconnects sends `Last-Event-ID`. The first event of every connection is
`ready` with `resume_from` (that id, or null); the page then re-fetches
`/api/runs/{id}/metrics?since_step=<last step it had>` and drops points it
already holds. The stream itself never replays history: a long disconnect is
answered by one downsampled read rather than a flood of events.

Keep-alive: a comment line every KEEPALIVE_S seconds so proxies and the
browser do not close an idle stream. `retry:` asks the browser to reconnect
within a second.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from ganscope.server.deps import DB, BrokerDep
from ganscope.server.live import ALL_RUNS
from ganscope.server.schema import Run

router = APIRouter(tags=["stream"])
log = logging.getLogger("ganscope.stream")

RETRY_MS = 1000
# Runs list: at most one `progress` event per run per this many seconds (metrics arrive far more often).
PROGRESS_EVERY_S = 0.5
# Last values the runs list shows; other metrics are not forwarded to it.
PROGRESS_METRICS = ("loss/d", "loss/g", "pred/real", "pred/fake")
HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}


# Open streams, so a shutdown can end them: uvicorn waits for every response to finish before it
# exits, and an event stream never finishes by itself (Ctrl-C would hang while a browser is open).
_OPEN: set[asyncio.Queue] = set()
_LOOP: asyncio.AbstractEventLoop | None = None
_STOPPING = threading.Event()  # set on SIGINT/SIGTERM: streams opened from then on end at once


def close_all_streams() -> None:
    """End every open stream (from any thread or a signal handler); browsers reconnect on their own."""
    loop = _LOOP
    if loop is None or loop.is_closed():
        return
    for q in list(_OPEN):
        loop.call_soon_threadsafe(q.put_nowait, None)


def _chain_exit_signals() -> None:
    """Close streams on SIGINT/SIGTERM, then hand the signal to the server's own handler."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        prev = signal.getsignal(sig)
        if getattr(prev, "_ganscope_sse", False):
            continue

        def handler(signum, frame, _prev=prev):  # noqa: ANN001 - signal handler signature
            _STOPPING.set()
            close_all_streams()
            if callable(_prev):
                _prev(signum, frame)
            elif _prev == signal.SIG_DFL:
                signal.default_int_handler(signum, frame) if signum == signal.SIGINT else os._exit(128 + signum)

        handler._ganscope_sse = True  # type: ignore[attr-defined]
        signal.signal(sig, handler)


def setup(app) -> None:  # noqa: ANN001 - called by server.app.create_app
    # The app is built inside uvicorn's signal capture, so its handlers are already in place to chain to.
    _chain_exit_signals()


def keepalive_seconds() -> float:
    # An environment override (not a Settings field) lets tests observe the keep-alive without waiting 15 s.
    try:
        return max(0.05, float(os.environ.get("GANSCOPE_SSE_KEEPALIVE_S", "15")))
    except ValueError:
        return 15.0


def _dumps(data: Any) -> str:
    # orjson writes NaN/Inf as null: the browser's JSON.parse never sees a bare NaN.
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()


def format_event(event: str, data: Any, event_id: int | str | None = None) -> str:
    """One SSE frame. Data is a single JSON line, so no `data:` continuation is needed."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {_dumps(data)}\n\n"


def _max_step(metrics: dict[str, Any]) -> int | None:
    best: int | None = None
    for series in metrics.values():
        steps = series.get("steps") if isinstance(series, dict) else None
        if steps is not None and len(steps):
            last = int(steps[-1])  # steps ascend within a batch
            best = last if best is None else max(best, last)
    return best


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    try:
        return int(raw) if raw not in (None, "") else None
    except ValueError:
        return None


async def _events(queue: asyncio.Queue, request: Request, first: str, frame,  # noqa: ANN001
                  tick=None) -> AsyncIterator[str]:  # noqa: ANN001
    """Drain the subscription, interleaving keep-alive comments; ends when the broker drops us.

    frame(event, data) -> str | None turns a broker message into an SSE frame (None: not for this
    stream). tick() -> (frames, seconds until it wants to run again | None) lets the runs-list
    stream flush throttled progress without waiting for the next message.
    """
    global _LOOP
    _LOOP = asyncio.get_running_loop()
    _OPEN.add(queue)
    try:
        async for chunk in _drain(queue, request, first, frame, tick):
            yield chunk
    finally:
        _OPEN.discard(queue)


async def _drain(queue: asyncio.Queue, request: Request, first: str, frame, tick) -> AsyncIterator[str]:  # noqa: ANN001
    yield f"retry: {RETRY_MS}\n" + first
    if _STOPPING.is_set():
        return
    interval = keepalive_seconds()
    last_sent = time.monotonic()
    while True:
        wait = interval - (time.monotonic() - last_sent)
        due: float | None = None
        if tick is not None:
            frames, due = tick()
            for f in frames:
                last_sent = time.monotonic()
                yield f
        timeout = max(0.01, min(wait, due) if due is not None else wait)
        try:
            msg = await asyncio.wait_for(queue.get(), timeout=timeout)
        except asyncio.TimeoutError:
            if time.monotonic() - last_sent >= interval:
                if await request.is_disconnected():
                    return
                last_sent = time.monotonic()
                yield f": keep-alive {int(time.time())}\n\n"
            continue
        if msg is None:
            # The broker dropped this slow reader, or the server is stopping: close; the browser
            # reconnects and catches up from its last step.
            return
        out = frame(*msg)
        if out:
            last_sent = time.monotonic()
            yield out


def send_timeout_seconds() -> float:
    # How long one frame may wait for a client that does not read before the stream is dropped.
    try:
        return max(0.1, float(os.environ.get("GANSCOPE_SSE_SEND_TIMEOUT_S", "30")))
    except ValueError:
        return 30.0


class _SlowClient(Exception):
    pass


class EventStreamResponse(StreamingResponse):
    """A stream whose client stops reading is dropped after send_timeout_seconds(): otherwise its frames
    wait in the server (the broker's queue, then the socket) for as long as the connection stays open."""

    async def stream_response(self, send) -> None:  # noqa: ANN001 - starlette's Send
        limit = send_timeout_seconds()

        async def timed(message) -> None:  # noqa: ANN001
            try:
                await asyncio.wait_for(send(message), limit)
            except asyncio.TimeoutError:
                raise _SlowClient from None

        try:
            await super().stream_response(timed)
        except _SlowClient:
            log.warning("event stream dropped: the client read nothing for %.0f s (it reconnects with "
                        "Last-Event-ID and catches up from the store)", limit)
            await self.body_iterator.aclose()  # ends the broker subscription now, not at garbage collection


def _sse(gen: AsyncIterator[str]) -> StreamingResponse:
    return EventStreamResponse(gen, media_type="text/event-stream", headers=HEADERS)


@router.get("/api/runs/{run_id}/stream", summary="Live events of one run (server-sent events)")
async def run_stream(run_id: int, request: Request, broker: BrokerDep, db: DB) -> StreamingResponse:
    """Events: `ready`, `metrics` (id = highest step), `alert`, `status`, `sample`, `snapshot`, `event` (a heal)."""
    def exists() -> bool:
        with db.read() as s:
            return s.get(Run, run_id) is not None

    # A 404, not an endless empty stream, for a run that does not exist (read off the event loop).
    if not await asyncio.to_thread(exists):
        raise HTTPException(status_code=404, detail=f"run {run_id} not found")
    resume = _last_event_id(request)

    def frame(event: str, data: dict[str, Any]) -> str | None:
        if event == "metrics":
            return format_event(event, data, _max_step(data.get("metrics") or {}))
        return format_event(event, data)

    async def gen() -> AsyncIterator[str]:
        # Subscribe before `ready` goes out: anything ingested after the page's catch-up read starts
        # is in the queue, so no point falls between the read and the stream.
        async with broker.subscribe(run_id) as q:
            ready = format_event("ready", {"run_id": run_id, "resume_from": resume}, resume)
            async for chunk in _events(q, request, ready, frame):
                yield chunk

    return _sse(gen())


class _Progress:
    """Per-run throttle turning metric events into compact `progress` events for the runs list."""

    def __init__(self) -> None:
        self.pending: dict[int, dict[str, Any]] = {}
        self.sent_at: dict[int, float] = {}

    def add(self, run_id: int, metrics: dict[str, Any]) -> None:
        p = self.pending.setdefault(run_id, {"run_id": run_id, "step": None, "last": {}, "points": {}})
        for name, series in metrics.items():
            steps, values = series.get("steps"), series.get("values")
            if steps is None or not len(steps):
                continue
            s = int(steps[-1])
            p["step"] = s if p["step"] is None else max(p["step"], s)
            if name in PROGRESS_METRICS:
                v = values[-1]
                p["last"][name] = None if v is None else float(v)
                # One point per batch feeds the sparkline without shipping every point.
                pts = p["points"].setdefault(name, {"steps": [], "values": []})
                pts["steps"].append(s)
                pts["values"].append(p["last"][name])

    def tick(self) -> tuple[list[str], float | None]:
        """Frames for runs whose throttle window has passed; seconds until the next one is due."""
        now = time.monotonic()
        frames: list[str] = []
        due: float | None = None
        for run_id in list(self.pending):
            wait = self.sent_at.get(run_id, -1e9) + PROGRESS_EVERY_S - now
            if wait <= 0:
                frames.append(format_event("progress", self.pending.pop(run_id)))
                self.sent_at[run_id] = now
            else:
                due = wait if due is None else min(due, wait)
        return frames, due


@router.get("/api/stream", summary="Live status of every run (server-sent events)")
async def all_stream(request: Request, broker: BrokerDep) -> StreamingResponse:
    """Events: `ready`, `status` (run summary), `alert`, and `progress` `{run_id, step, last, points}`
    (at most two per run per second, built from that run's metric events)."""
    progress = _Progress()

    def frame(event: str, data: dict[str, Any]) -> str | None:
        if event == "metrics":
            progress.add(int(data.get("run_id", 0)), data.get("metrics") or {})
            return None  # sent by tick(), throttled
        if event in ("status", "alert"):
            return format_event(event, data)
        return None

    async def gen() -> AsyncIterator[str]:
        async with broker.subscribe(ALL_RUNS) as q:
            ready = format_event("ready", {"run_id": None, "resume_from": None})
            async for chunk in _events(q, request, ready, frame, progress.tick):
                yield chunk

    return _sse(gen())
