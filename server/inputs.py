"""Input limits checked before any route runs: one pure ASGI middleware (README "Security").

Each check turns what used to be a 500 deep inside a handler into a clear answer naming the problem:

- ids in paths (`/api/runs/{id}/...`, `/runs/{id}`, alerts) beyond what the schema stores: 404.
  `runs.id` and its siblings are 32-bit INTEGER columns on PostgreSQL; rather than a migration widening
  every id and foreign key to 64 bits (a table rewrite of the largest tables for ids nobody reaches),
  the API bounds ids to 2^31-1 on both databases, so SQLite and PostgreSQL answer alike.
- NUL characters in the path or query string: 422 (PostgreSQL text cannot hold them).
- JSON bodies: nested deeper than MAX_DEPTH (the stdlib fallback parser would recurse until a
  RecursionError; deep payloads later blow the stack in finite_json), strings holding NUL or lone
  UTF-16 surrogates ("\\ud800" cannot be encoded as UTF-8 nor stored): 422 before the body is parsed.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import numpy as np
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("ganscope.server")
MAX_ID = 2**31 - 1  # INTEGER primary keys (server/schema.py)
MAX_DEPTH = 64
CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Path segments that are ids stored in 32-bit columns.
_ID_PATH = re.compile(r"^/(?:api/)?runs/(\d+)(?:/|\.|$)|^/api/alerts/(\d+)(?:/|$)")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NUL_ESCAPE = re.compile(rb"\\u0000")
# A \uD800-\uDBFF escape not followed by a \uDC00-\uDFFF one, or a low one not preceded by a high one.
_LONE_SURROGATE = re.compile(
    rb"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    rb"|(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_OPEN, _CLOSE = np.frombuffer(b"[{", np.uint8), np.frombuffer(b"]}", np.uint8)


def json_depth(body: bytes) -> int:
    """Deepest nesting of [ and { outside strings, computed in C-speed passes (bodies run to 32 MiB)."""
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH:
        return 0  # cannot be deeper than the number of openers: the common case costs two counts
    structure = np.frombuffer(_STRING.sub(b"", body), np.uint8)
    step = np.isin(structure, _OPEN).astype(np.int32) - np.isin(structure, _CLOSE).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def _bad_strings(value: Any) -> tuple[list[Any], str] | None:
    """Walk parsed JSON (only when a cheap byte scan saw a suspicious escape) for NUL / lone surrogates;
    the location of the first one found, in FastAPI's loc style, and what is wrong."""
    stack: list[tuple[Any, list[Any]]] = [(value, ["body"])]
    while stack:
        v, loc = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                stack.append((k, loc + [k]))
                stack.append((item, loc + [k]))
        elif isinstance(v, list):
            stack.extend((item, loc + [i]) for i, item in enumerate(v))
        elif isinstance(v, str):
            if "\x00" in v:
                return _printable(loc), "JSON strings may not contain NUL characters (\\u0000)"
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return _printable(loc), "JSON strings may not contain lone UTF-16 surrogates (e.g. \\ud800): they are not text"
    return None


def _printable(loc: list[Any]) -> list[Any]:
    # The offending key itself may be in loc: escaped, so the answer can be written as UTF-8 JSON.
    return [p.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\u0000") if isinstance(p, str) else p
            for p in loc]


def check_json(body: bytes) -> tuple[list[Any], str] | None:
    """(loc, message) naming what is wrong with the body, or None (malformed JSON is left to the route)."""
    if json_depth(body) > MAX_DEPTH:
        return ["body"], f"JSON body is nested deeper than {MAX_DEPTH} levels"
    if _NUL_ESCAPE.search(body) or _LONE_SURROGATE.search(body):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson refuses lone surrogates itself; the stdlib parser (safe: the depth is checked) keeps
            # them, so the answer can name the field rather than say "invalid JSON".
            try:
                parsed = json.loads(body)
            except ValueError:
                return None  # malformed anyway: the route names it
        return _bad_strings(parsed)
    return None


def check_path_and_query(scope: Scope) -> tuple[int, Any] | None:
    path: str = scope.get("path", "")
    if "\x00" in path:
        return 422, [{"loc": ["path"], "msg": "the path contains a NUL character", "type": "value_error"}]
    qs: bytes = scope.get("query_string", b"")
    if b"\x00" in qs or b"%00" in qs:
        return 422, [{"loc": ["query"], "msg": "the query string contains a NUL character (%00)", "type": "value_error"}]
    m = _ID_PATH.match(path)
    if m:
        raw = m.group(1) or m.group(2)
        if len(raw) > 10 or int(raw) > MAX_ID:
            what = "alert" if m.group(2) else "run"
            return 404, f"{what} {raw[:24]}{'…' if len(raw) > 24 else ''} not found (ids go up to {MAX_ID})"
    return None


def _is_json(scope: Scope) -> bool:
    for k, v in scope.get("headers", []):
        if k == b"content-type":
            media = v.split(b";")[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class InputGuard:
    """Runs inside RequestSizeLimit, so a JSON body it buffers is already bounded by max_request_mb."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = check_path_and_query(scope)
        if problem is not None:
            await respond(send, *problem)
            return
        if scope["method"] in CHANGING and _is_json(scope):
            try:
                body = await _read_all(receive)
            except HTTPException as exc:  # the size limit's 413, raised from its counting receive
                await respond(send, exc.status_code, exc.detail)
                return
            except ClientDisconnect:
                log_disconnect(scope)  # nobody to answer; one line, no traceback
                return
            problem = check_json(body)
            if problem is not None:
                await respond(send, 422, [{"loc": problem[0], "msg": problem[1], "type": "value_error"}])
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send)


async def _read_all(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise ClientDisconnect()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    return b"".join(chunks)


def log_disconnect(scope: Scope) -> None:
    """A client (a worker killed mid-upload, a closed tab) that left before its request was read: one line."""
    client = scope.get("client") or ("?", 0)
    log.warning("client %s:%s disconnected mid-request: %s %s (nothing stored; it retries from its spool)",
                client[0], client[1], scope.get("method"), scope.get("path"))


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # later calls: wait for the disconnect as the app expects

    return replay


async def respond(send: Send, status: int, detail: Any) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
