"""Helpers the REST routers share: bounded body reading, 422s in FastAPI's shape, storage faults as 503."""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from ganscope.server.db import Database
from ganscope.server.disk_room import LowDiskSpace
from ganscope.server.live import Broker
from ganscope.server.schema import Run
from ganscope.server.store import queue as queue_store
from ganscope.server.store import runs as runs_store

log = logging.getLogger("ganscope.api")


def unprocessable(errors: list[tuple[list[Any], str]] | list[dict[str, Any]]) -> RequestValidationError:
    """A 422 with {"detail": [{"loc", "msg", "type"}]} like FastAPI's own validation errors."""
    detail = [e if isinstance(e, dict) else {"loc": e[0], "msg": e[1], "type": "value_error"} for e in errors]
    return RequestValidationError(detail)


async def read_body(request: Request, limit_bytes: int, what: str = "request body") -> bytes:
    """The raw body, refusing (413) anything over limit_bytes before reading it all into memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit_bytes:
        raise HTTPException(413, f"{what} of {int(declared)} bytes exceeds this server's limit of {limit_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit_bytes:
            raise HTTPException(413, f"{what} exceeds this server's limit of {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    """JSON, also accepting the bare NaN/Infinity that Python's json.dumps writes by default."""
    if not body.strip():
        raise unprocessable([(["body"], "request body is empty: a JSON object is expected")])
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise unprocessable([(["body"], f"request body is not valid JSON: {exc}")]) from None


def json_limit(request: Request) -> int:
    return int(request.app.state.settings.max_request_mb * 1024 * 1024)


def upload_limit(request: Request) -> int:
    return int(request.app.state.settings.max_upload_mb * 1024 * 1024)


def _cause(exc: BaseException) -> str:
    if isinstance(exc, LowDiskSpace):
        return exc.strerror
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return "disk full"
        return exc.strerror or type(exc).__name__
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        msg = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        if "full" in msg.lower():
            return f"disk full ({msg})"
        return msg
    return type(exc).__name__


# A full disk fails every write until space returns: say so once per interval, not a traceback per request
# (a 20 MiB tmpfs produced 9 MB of log in 11 minutes). The first occurrence of a cause keeps its traceback.
STORAGE_LOG_EVERY_S = 60.0
_storage_logged: dict[str, tuple[float, int]] = {}  # cause -> (when last logged, suppressed since)
_storage_lock = threading.Lock()


def _log_storage_error(what: str, exc: BaseException) -> None:
    cause = _cause(exc)
    # The reserve's message carries the free space, which changes: one key for all of them. It is the
    # server's own refusal, not a failure, so it never needs a traceback.
    key = "disk nearly full" if isinstance(exc, LowDiskSpace) else cause
    now = time.monotonic()
    with _storage_lock:
        last, suppressed = _storage_logged.get(key, (None, 0))
        if last is not None and now - last < STORAGE_LOG_EVERY_S:
            _storage_logged[key] = (last, suppressed + 1)
            return
        _storage_logged[key] = (now, 0)
    more = f" ({suppressed} more like it in the last {STORAGE_LOG_EVERY_S:.0f} s)" if suppressed else ""
    log.error("storage error while %s: %s%s; answering 503 until it clears", what, cause, more,
              exc_info=exc if last is None and not isinstance(exc, LowDiskSpace) else None)


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """A database or disk failure is the server's fault, not the client's: 503 naming the cause, logged, so
    a worker keeps its spool and retries. Integrity errors are bugs or bad input and are not hidden here."""
    try:
        yield
    except (OperationalError, OSError) as exc:
        _log_storage_error(what, exc)
        raise HTTPException(503, f"storage error while {what}: {_cause(exc)}",
                            headers={"Retry-After": "2"}) from exc
    except DBAPIError as exc:
        if getattr(exc, "connection_invalidated", False) or "could not connect" in str(exc).lower():
            log.error("database unavailable while %s: %s", what, _cause(exc))
            raise HTTPException(503, f"storage error while {what}: database unavailable ({_cause(exc)})",
                                headers={"Retry-After": "2"}) from exc
        raise
    except SQLAlchemyError:
        raise


@contextmanager
def http_errors() -> Iterator[None]:
    """Store exceptions to HTTP answers: unknown run 404, a state change that does not apply 409."""
    try:
        yield
    except queue_store.NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except queue_store.QueueConflict as exc:
        raise HTTPException(409, str(exc)) from None


def publish_status(db: Database, broker: Broker, run_id: int) -> dict[str, Any] | None:
    """Send the run's summary as a `status` event (after the change is committed)."""
    try:
        with db.read() as s:
            run = s.get(Run, run_id)
            if run is None:
                return None
            summary = runs_store.summary(s, run)
    except Exception:  # noqa: BLE001 - a failed notification must not fail the committed change
        log.warning("could not publish status of run %s", run_id, exc_info=True)
        return None
    broker.publish(run_id, "status", summary)
    return summary


def json_response(content: Any, status_code: int = 200) -> Response:
    """JSON bytes via orjson (non-finite floats become null; the content is already JSON-shaped)."""
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")


def not_found(run_id: int) -> HTTPException:
    return HTTPException(404, f"run {run_id} not found")
