"""Follow a run from the terminal: a progress bar, alerts printed as they open, heals as they are applied,
the final status.

Polling (one run summary and one alerts list per second) rather than the SSE
stream: it needs no long-lived connection through proxies, and a second is
plenty for a human watching a progress bar.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from ganscope.client import Api, ApiError

TERMINAL = ("succeeded", "failed", "cancelled", "stopped")


def describe_event(ev: dict[str, Any]) -> str:
    """A run event (a heal under on_failure: heal) as one line."""
    changes = ", ".join(f"{c.get('knob')} {c.get('from')!r} -> {c.get('to')!r}" for c in ev.get("changes") or [])
    return (f"{str(ev.get('kind', 'event')).upper()} {ev.get('signature') or ''} (onset step {ev.get('onset_step')}): "
            f"rolled back from step {ev.get('from_step')} to step {ev.get('rollback_step')}; "
            f"{changes or 'no config change'}")


def describe_alert(alert: dict[str, Any]) -> str:
    sev = str(alert.get("severity", "?")).upper()
    sig = alert.get("signature", "?")
    step = alert.get("first_step", "?")
    lines = [f"ALERT {sev} {sig} (from step {step}): {alert.get('message', '')}"]
    remedy = alert.get("remedy")
    if isinstance(remedy, dict):
        # The detectors own the remedy's shape; show its prose and any knob suggestions we recognise.
        text = remedy.get("summary") or remedy.get("text") or remedy.get("message")
        if text:
            lines.append(f"  remedy: {text}")
        for key in ("knobs", "changes", "set"):
            if isinstance(remedy.get(key), dict) and remedy[key]:
                lines.append("  try: " + " ".join(f"{k}={v}" for k, v in remedy[key].items()))
    elif remedy:
        lines.append(f"  remedy: {remedy}")
    return "\n".join(lines)


class _Bar:
    """rich's live bar on a terminal; plain lines (every 10% and on status changes) in logs and pipes."""

    def __init__(self, total: int, label: str, out: TextIO) -> None:
        self.out = out
        self.total = max(total, 1)
        self.live = out.isatty()
        self._last_decile = -1
        self._last_status: str | None = None
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.console = Console(file=out)
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[status]}"), TimeRemainingColumn(),
                                     console=self.console, transient=False)
            self.task = self.progress.add_task(label, total=self.total, status="")
            self.progress.start()

    def update(self, step: int, status: str, health: str) -> None:
        if self.live:
            self.progress.update(self.task, completed=min(step, self.total), status=f"{status} · {health}")
            return
        decile = min(10, step * 10 // self.total)
        if decile != self._last_decile or status != self._last_status:
            self._last_decile, self._last_status = decile, status
            print(f"step {step}/{self.total} ({decile * 10}%) {status}, {health}", file=self.out, flush=True)

    def note(self, text: str) -> None:
        if self.live:
            self.progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.out, flush=True)

    def close(self) -> None:
        if self.live:
            self.progress.stop()


def follow_run(api: Api, run_id: int, interval: float = 1.0, out: TextIO | None = None) -> dict[str, Any]:
    """Block until the run reaches a final status; returns its last summary."""
    out = out or sys.stdout
    run = api.get(f"/api/runs/{run_id}")
    bar = _Bar(int(run.get("total_steps") or 0), f"run {run_id} {run.get('name') or ''}".strip(), out)
    seen: set[Any] = set()
    try:
        while True:
            for alert in api.get(f"/api/runs/{run_id}/alerts").get("alerts", []):
                key = alert.get("id", (alert.get("signature"), alert.get("first_step")))
                if key not in seen:
                    seen.add(key)
                    bar.note(describe_alert(alert))
            try:
                events = api.get(f"/api/runs/{run_id}/events").get("events", [])
            except ApiError:
                events = []  # a server from before run events
            for ev in events:
                key = ("event", ev.get("id"))
                if ev.get("status") == "applied" and key not in seen:
                    seen.add(key)
                    bar.note(describe_event(ev))
            bar.update(int(run.get("step") or 0), str(run.get("status")), str(run.get("health")))
            if run.get("status") in TERMINAL:
                return run
            time.sleep(interval)
            run = api.get(f"/api/runs/{run_id}")
    finally:
        bar.close()
