"""Outgoing webhooks (docs/notifications.md): alert opened or escalated, run stopped, failed or succeeded.

Call sites hand over what changed from inside their write session; the event is queued only once
that session commits (a rolled-back change notifies nobody), and queueing never blocks:

    notify.alert_changes(session, run_id, changes)   # detectors, before they persist the changes
    notify.run_changed(session, run)                  # finish, stalled-job recovery

The notifier of an app is found through the session's engine, so the detectors' hook needs no handle
on the app. Without a notifier (a script using the store directly) both calls do nothing.
"""

from __future__ import annotations

import weakref
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from ganscope.server.notify.events import EVENTS, RUN_EVENTS, alert_facts, job_targets, run_facts
from ganscope.server.notify.sender import Notifier

__all__ = ["EVENTS", "Notifier", "alert_changes", "register", "run_changed", "run_healed"]

_NOTIFIERS: "weakref.WeakKeyDictionary[Any, Notifier]" = weakref.WeakKeyDictionary()


def register(engine: Any, notifier: Notifier) -> None:
    _NOTIFIERS[engine] = notifier


def unregister(engine: Any) -> None:
    _NOTIFIERS.pop(engine, None)


def _notifier(session: Session) -> Notifier | None:
    try:
        return _NOTIFIERS.get(session.get_bind())
    except Exception:  # noqa: BLE001 - an unbound session: nothing to notify through
        return None


def _after_commit(session: Session, send: Any) -> None:
    sa_event.listen(session, "after_commit", lambda _s: send(), once=True)


def alert_changes(session: Session, run_id: int, changes: list[Any]) -> None:
    """Detector changes about to be persisted: `open` -> alert.opened; `update` that takes a stored
    warning to failing -> alert.escalated. Call it before the changes are written (it reads the
    stored severity); sessions keep objects after commit, so the facts are read then."""
    notifier = _notifier(session)
    if notifier is None or not ({"alert.opened", "alert.escalated"} & notifier.events):
        return
    from ganscope.server.schema import Alert, Run

    picked: list[tuple[str, Any, str | None]] = []
    for ch in changes:
        if ch.kind == "open":
            picked.append(("alert.opened", ch.alert, None))
        elif ch.kind == "update" and ch.alert.id is not None and ch.alert.severity == "failing":
            row = session.get(Alert, ch.alert.id)
            if row is not None and row.severity == "warning":
                picked.append(("alert.escalated", ch.alert, "warning"))
    if not picked:
        return
    run = session.get(Run, run_id)
    if run is None:
        return

    def send() -> None:
        facts = run_facts(run, notifier.base_url)
        for name, alert, previous in picked:
            notifier.emit(name, facts, alert_facts(alert, previous), job_targets(run))

    _after_commit(session, send)


def run_changed(session: Session, run: Any) -> None:
    """A run's status just changed in this session: a final stopped / failed / succeeded is announced."""
    notifier = _notifier(session)
    name = RUN_EVENTS.get(run.status)
    if notifier is None or name is None or name not in notifier.events:
        return
    _after_commit(session, lambda: notifier.emit(name, run_facts(run, notifier.base_url), None, job_targets(run)))


def run_healed(session: Session, run: Any, heal: dict[str, Any]) -> None:
    """A heal was applied in this session (store/events.apply_heal): `run.healed`, with the heal event."""
    notifier = _notifier(session)
    if notifier is None or "run.healed" not in notifier.events:
        return
    _after_commit(session, lambda: notifier.emit("run.healed", {**run_facts(run, notifier.base_url), "heal": heal},
                                                 None, job_targets(run)))
