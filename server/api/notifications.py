"""Webhook deliveries (docs/notifications.md): a run's, everyone's, and a test message; the notifier's wiring."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request

from ganscope.server import notify
from ganscope.server.api.common import not_found
from ganscope.server.auth import Authorized
from ganscope.server.deps import DB, MAX_ID, RunId
from ganscope.server.notify import render
from ganscope.server.notify.events import EVENTS, TEST_EVENT
from ganscope.server.store import notifications as store
from ganscope.server.store import runs as runs_store

router = APIRouter(tags=["notifications"])
Limit = Annotated[int, Query(ge=1, le=500, description="deliveries per page")]
Before = Annotated[int | None, Query(ge=1, le=MAX_ID, description="only deliveries with a smaller id (the "
                                                                          "previous page's next_before)")]


def _notifier(request: Request) -> notify.Notifier:
    return request.app.state.notifier


def _page(rows: list[Any], limit: int) -> dict[str, Any]:
    return {"notifications": [store.to_dict(n) for n in rows],
            "next_before": rows[-1].id if len(rows) == limit else None}


@router.get("/api/runs/{run_id}/notifications", responses={404: {"description": "unknown run"}})
def run_notifications(run_id: RunId, request: Request, db: DB, limit: Limit = 100, before: Before = None
                      ) -> dict[str, Any]:
    """This run's webhook deliveries, newest first: event, target (redacted), status (sending | retrying |
    sent | failed), attempts, last HTTP status and error; `dropped` counts deliveries this server process
    dropped because its queue was full (those have no row)."""
    with db.read() as s:
        if runs_store.get_run(s, run_id) is None:
            raise not_found(run_id)
        out = _page(store.list_for_run(s, run_id, limit, before), limit)
    out["dropped"] = _notifier(request).dropped_by_run.get(run_id, 0)
    return out


@router.get("/api/notifications")
def all_notifications(request: Request, db: DB, limit: Limit = 100, before: Before = None,
                      status: Annotated[Literal["sending", "retrying", "sent", "failed"] | None,
                                        Query(description="only deliveries in this state")] = None
                      ) -> dict[str, Any]:
    """Every webhook delivery, newest first, with this process's counters (queued, sent, failed, dropped),
    the server-wide targets (redacted) and the events they get."""
    n = _notifier(request)
    with db.read() as s:
        out = _page(store.list_all(s, limit, before, status), limit)
    out["stats"] = {k: n.stats.get(k, 0) for k in ("queued", "sent", "failed", "dropped")} | {"waiting": n.queued()}
    out["targets"] = [{"target": render.redact(t.url), "format": t.fmt,
                       "signed": t.signed} for t in n.server_targets]
    out["events"] = sorted(n.events)
    out["known_events"] = EVENTS
    return out


@router.post("/api/notifications/test", status_code=202,
             responses={409: {"description": "no server-wide webhook is configured"}})
def test_notification(request: Request, _: Authorized) -> dict[str, Any]:
    """Send a `test` event to every server-wide webhook (GANSCOPE_NOTIFY_URLS); see the outcome in
    GET /api/notifications."""
    n = _notifier(request)
    if not n.server_targets:
        raise HTTPException(409, "no server-wide webhook is configured: set GANSCOPE_NOTIFY_URLS")
    return {"queued": n.emit(TEST_EVENT), "targets": [render.redact(t.url) for t in n.server_targets]}


async def _run_notifier(app: FastAPI) -> None:
    n: notify.Notifier = app.state.notifier
    n.start()
    try:
        await asyncio.Event().wait()  # until the server stops and cancels this task
    finally:
        notify.unregister(app.state.db.engine)
        n.close()  # bounded (a couple of seconds); run here, as the loop may not wait for an await


def setup(app: FastAPI) -> None:
    n = notify.Notifier(app.state.db, app.state.settings)
    app.state.notifier = n
    notify.register(app.state.db.engine, n)  # events queue from now on; lanes start with the server
    app.state.background_tasks.append(_run_notifier)
