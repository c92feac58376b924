"""Log your own training script to a ganscope server: the same charts and failure signatures.

    from ganscope.trainer import sdk

    with sdk.init("http://127.0.0.1:8000", name="my dcgan", config={"dataset": "mnist", "lr_d": 2e-4}) as run:
        for step in range(steps):
            ...
            run.log({"loss/d": d_loss, "loss/g": g_loss, "pred/real": dx}, step=step)
            if step % 500 == 0:
                run.log_image(step, png_bytes)
    # leaving the block finishes the run: "succeeded", or "failed" with the exception's line

Points are batched and go through the same durable spool as the worker's, so a server
restart loses nothing; `finish` waits (bounded) for the spool to drain. No torch needed:
values may be Python floats, numpy scalars or anything with `float()` (NaN and Inf are fine).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

from ganscope.trainer.client import Client, ServerUnavailable

log = logging.getLogger("ganscope.sdk")

__all__ = ["Run", "init", "replay", "ServerUnavailable"]


class Run:
    """One SDK run on the server (kind "sdk")."""

    def __init__(self, server: str, *, name: str = "", config: dict[str, Any] | None = None,
                 token: str | None = None, spool_dir: str | Path | None = None, batch_points: int = 5000,
                 flush_seconds: float = 1.0, drain_timeout: float = 60.0, connect_for: float = 30.0) -> None:
        token = token if token is not None else os.environ.get("GANSCOPE_TOKEN")
        base = Path(spool_dir) if spool_dir else _default_spool_root()
        base.mkdir(parents=True, exist_ok=True)
        # A private folder per Run: two scripts (or two runs of one script) never share a spool.
        pending = Path(tempfile.mkdtemp(prefix="sdk-new-", dir=base))
        self.client = Client(server, pending, token=token, on_action=self._on_action,
                             batch_points=batch_points, flush_seconds=flush_seconds)
        self.drain_timeout = drain_timeout
        self.action: str | None = None  # "stop" when a detector under on_failure: stop says so
        self.reason: str | None = None
        self.finished = False
        self._step = 0
        try:
            r = self.client.call("POST", "/api/runs", json={"name": name, "config": config or {}},
                                 retry_for=connect_for)
        except ServerUnavailable:
            self.client.close(0)
            _remove_quietly(pending)  # nothing was logged: leave no empty spool behind
            raise
        if r.status_code != 201:
            self.client.close(0)
            _remove_quietly(pending)
            raise RuntimeError(f"creating the run failed: HTTP {r.status_code}: {r.text[:500]}")
        self.info: dict[str, Any] = r.json()
        self.id: int = int(self.info["id"])
        self.url = f"{self.client.base}/runs/{self.id}"
        log.info("ganscope run %d: %s", self.id, self.url)

    def _on_action(self, run_id: int, action: str, reason: str | None) -> None:
        if run_id == self.id:
            self.action, self.reason = action, reason

    # --- logging ----------------------------------------------------------------
    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Record {name: value} at `step` (default: one past the last step logged)."""
        if self.finished:
            raise RuntimeError(f"run {self.id} is finished")
        step = self._step if step is None else int(step)
        self._step = step + 1
        self.client.log_metrics(self.id, {name: ([step], [_number(v)]) for name, v in metrics.items()})

    def log_series(self, name: str, steps: list[int], values: list[Any]) -> None:
        """Many points of one metric at once (columnar, the cheap way)."""
        self.client.log_metrics(self.id, {name: (list(steps), [_number(v) for v in values])})
        if steps:
            self._step = max(self._step, int(max(steps)) + 1)

    def log_image(self, step: int, png: bytes, kind: str = "grid") -> None:
        if not png.startswith(b"\x89PNG"):
            raise ValueError("log_image takes PNG bytes")
        self.client.put_sample(self.id, step, kind, png)

    def should_stop(self) -> bool:
        """True once the server asked this run to stop (a failing signature under on_failure: stop)."""
        return self.action in ("stop", "cancel")

    # --- the end ------------------------------------------------------------------
    def finish(self, status: str = "succeeded", error: str | None = None) -> bool:
        """Report the final status after every point; True if the server has everything."""
        if self.finished:
            return True
        self.finished = True
        self.client.finish(self.id, {"status": status, "step": max(self._step - 1, 0), "error": error})
        drained = self.client.close(self.drain_timeout)
        if drained:
            _remove_quietly(self.client.spool.root)
        else:
            log.warning("run %d: server unreachable; %d requests kept in %s, send them later with "
                        "ganscope.replay(server, %r)", self.id, self.client.spool.count(),
                        self.client.spool.root, str(self.client.spool.root))
        return drained

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            self.finish("succeeded")
        else:
            self.finish("failed", traceback.format_exception_only(exc_type, exc)[-1].strip())


def init(server: str, **kw: Any) -> Run:
    return Run(server, **kw)


def replay(server: str, spool_dir: str | Path, token: str | None = None, timeout: float = 60.0) -> bool:
    """Deliver a spool left behind by a script that could not reach the server."""
    client = Client(server, Path(spool_dir), token=token if token is not None else os.environ.get("GANSCOPE_TOKEN"))
    drained = client.close(timeout)
    if drained:
        _remove_quietly(Path(spool_dir))
    return drained


def _number(v: Any) -> float | None:
    if v is None:
        return None
    if hasattr(v, "item"):  # numpy / torch scalars, without importing either
        v = v.item()
    return float(v)


def _default_spool_root() -> Path:
    return Path(os.environ.get("GANSCOPE_SPOOL", Path.home() / ".cache" / "ganscope" / "sdk-spool"))


def _remove_quietly(folder: Path) -> None:
    if any((folder / "rejected").glob("*")):
        return  # rejected requests are evidence: keep the folder
    shutil.rmtree(folder, ignore_errors=True)
