"""In-process publish/subscribe for server-sent events.

Request handlers run in worker threads; subscribers are asyncio queues on the
server's event loop. `publish` is safe from any thread. A subscriber that falls
too far behind is dropped (its queue receives None) and the browser reconnects,
catching up through `since_step`: the stream never blocks ingest.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

QUEUE_LIMIT = 1000
ALL_RUNS = 0  # subscribe to events of every run (runs list)


class Broker:
    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subs: dict[int, set[asyncio.Queue]] = defaultdict(set)
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, run_id: int, event: str, data: dict[str, Any]) -> None:
        """Deliver `event` to subscribers of run_id and of ALL_RUNS. Never blocks."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with self._lock:
            targets = list(self._subs.get(run_id, ())) + list(self._subs.get(ALL_RUNS, ()))
        if not targets:
            return
        msg = (event, {"run_id": run_id, **data})
        for q in targets:
            loop.call_soon_threadsafe(self._offer, run_id, q, msg)

    def _offer(self, run_id: int, q: asyncio.Queue, msg: Any) -> None:
        if q.qsize() >= QUEUE_LIMIT:
            # Too slow: unsubscribe it (nothing more piles up for a reader that may never come back), free
            # what it holds and tell it to close; it reconnects and catches up from its last step.
            with self._lock:
                for key in (run_id, ALL_RUNS):
                    self._subs.get(key, set()).discard(q)
            q._queue.clear()  # type: ignore[attr-defined]
            q.put_nowait(None)
        elif q.qsize() == 0 or q._queue[-1] is not None:  # type: ignore[attr-defined]
            q.put_nowait(msg)

    @asynccontextmanager
    async def subscribe(self, run_id: int = ALL_RUNS) -> AsyncIterator[asyncio.Queue]:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        with self._lock:
            self._subs[run_id].add(q)
        try:
            yield q
        finally:
            with self._lock:
                self._subs[run_id].discard(q)
                if not self._subs[run_id]:
                    del self._subs[run_id]

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())
