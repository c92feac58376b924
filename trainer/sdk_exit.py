"""How an SDK run stays alive and ends when its script ends in a way the script did not write down.

* While the script runs, a heartbeat thread tells the server it is alive (and hears stop/cancel between
  flushes); the server fails a run whose heartbeats stop (GANSCOPE_SDK_HEARTBEAT_SECONDS).

* The script returns: `atexit` finishes every run left open as succeeded (or as what the server asked:
  stopped, cancelled).
* An exception escapes: `sys.excepthook` (chained to the one before) notes it, `atexit` finishes the runs
  as failed with its line; Ctrl-C (KeyboardInterrupt) finishes them as cancelled.
* SIGTERM or SIGHUP (a scheduler's time limit, a closed terminal): the handler notes the signal and raises
  SystemExit(128 + signal) in the main thread, so `with` blocks and `finally` clauses run, the runs finish
  as failed with "terminated by SIGTERM", and the process exits with the status a shell reports for that
  signal. Handlers are installed only where the signal still has its default action (a script's or a
  framework's own handler is left alone) and removed when the last run finishes.
* kill -9: nothing runs in the process; the server notices that the heartbeats stopped.

Finishing happens outside the signal handler, during the unwinding: a handler that ran the SDK's code
could find its locks held by the very frame it interrupted.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
import traceback
from types import FrameType, TracebackType
from typing import Any, Protocol

import httpx

log = logging.getLogger("ganscope.sdk")


class _Finishable(Protocol):
    finished: bool

    def finish(self, status: str | None = None, error: str | None = None) -> bool: ...


_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_lock = threading.Lock()
_runs: list[_Finishable] = []
_saved: dict[int, Any] = {}  # signal -> the handler it had before ours
_state: dict[str, Any] = {"atexit": False, "excepthook": None, "uncaught": None, "signal": None}


class RunStopped(Exception):
    """The server asked this run to stop (a failing signature under on_failure: stop, or a user's cancel).

    Raised by `run.log` when the run was made with `raise_on_stop=True`; leaving a `with` block with it
    finishes the run as stopped (or cancelled) and carries on after the block; uncaught, it ends the script
    and the run is finished as stopped all the same.
    """

    def __init__(self, action: str, reason: str | None) -> None:
        super().__init__(reason or f"the server asked the run to {action}")
        self.action = action
        self.reason = reason


class Terminated(SystemExit):
    """Raised in the main thread by SIGTERM/SIGHUP while a run is open; exits with 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    @property
    def reason(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name} (the script was killed or its job ended)"


def register(run: _Finishable) -> None:
    with _lock:
        _runs.append(run)
        if not _state["atexit"]:
            atexit.register(_at_exit)
            _state["atexit"] = True
        if _state["excepthook"] is None:
            _state["excepthook"] = sys.excepthook
            sys.excepthook = _excepthook
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                if sig not in _saved and signal.getsignal(sig) == signal.SIG_DFL:
                    _saved[sig] = signal.signal(sig, _on_signal)


def unregister(run: _Finishable) -> None:
    with _lock:
        if run in _runs:
            _runs.remove(run)
        if not _runs and threading.current_thread() is threading.main_thread():
            for sig, old in list(_saved.items()):
                if signal.getsignal(sig) is _on_signal:  # unless the script replaced ours since
                    signal.signal(sig, old)
                del _saved[sig]


def ending(exc: BaseException | None) -> tuple[str | None, str | None]:
    """(status, error) for a run whose block or script ends with `exc` (None: the run's own default)."""
    if exc is None or isinstance(exc, RunStopped):
        return None, None  # the run's default: stopped / cancelled with the server's reason
    if isinstance(exc, Terminated):
        return "failed", exc.reason
    if isinstance(exc, KeyboardInterrupt):
        return "cancelled", "interrupted (Ctrl-C / KeyboardInterrupt)"
    if isinstance(exc, SystemExit):
        code = exc.code
        if code is None or code == 0:
            return None, None
        return "failed", f"the script exited with status {code}"
    return "failed", traceback.format_exception_only(type(exc), exc)[-1].strip()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # A second signal of the same kind kills at once, as it would have without us.
    signal.signal(signum, _saved.get(signum, signal.SIG_DFL))
    _state["signal"] = signum
    raise Terminated(signum)


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    _state["uncaught"] = exc
    previous = _state["excepthook"] or sys.__excepthook__
    previous(exc_type, exc, tb)


def _at_exit() -> None:
    with _lock:
        open_runs = list(_runs)
    if not open_runs:
        return
    exc = _state["uncaught"]
    if exc is None and _state["signal"] is not None:
        exc = Terminated(_state["signal"])
    status, error = ending(exc)
    for run in open_runs:
        if not run.finished:
            try:
                run.finish(status, error)
            except Exception as e:  # noqa: BLE001 - the interpreter is exiting: report, never raise
                print(f"ganscope: could not finish the run at exit: {e}", file=sys.stderr)


class Heartbeat:
    """Tells the server every few seconds that the script is alive, and hears stop/cancel between flushes."""

    def __init__(self, run: Any, every: float, token: str | None) -> None:
        self.run = run
        self.every = every
        self._stop = threading.Event()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=run.client.base, headers=headers, timeout=httpx.Timeout(5.0))
        self._thread = threading.Thread(target=self._loop, name="ganscope-heartbeat", daemon=True)

    def start(self) -> None:
        if self.every > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=6.0)
        self._http.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.every if self.run.id is not None else 0.5):
            if self.run.id is None:
                continue  # offline: nothing to beat for until the run exists
            try:
                r = self._http.post(f"/api/runs/{self.run.id}/heartbeat", json={"step": max(self.run.step - 1, 0)})
            except httpx.HTTPError:
                continue  # the spool notices an outage and retries on its own
            if r.status_code != 200:
                continue
            answer = r.json()
            action = answer.get("action")
            if action == "release":
                log.warning("run %s: %s; heartbeats stop", self.run.id, answer.get("reason"))
                return
            if action in ("stop", "cancel"):
                self.run._on_action(self.run.id, action, answer.get("reason"))
