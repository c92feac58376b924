"""Request-size limits: 413 with a JSON detail for bodies over the operator's caps.

Two caps (server.settings): `max_request_mb` for JSON calls and `max_upload_mb` for
the raw-byte uploads (sample PNGs, checkpoints). The upload routes are picked by
path, never by the Content-Type a client chooses to send, so a huge body cannot
buy itself the larger cap by calling itself a PNG.

A declared Content-Length over the cap is refused before the app runs. Bodies
without one (chunked transfer) are counted as they stream in: once past the cap
the read raises a 413 HTTPException, which FastAPI's body parsing re-raises and
its exception middleware renders as JSON.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ganscope.server.settings import Settings

MIB = 1024 * 1024
# Raw-byte uploads (docs/contracts.md, wire protocol): samples POST, checkpoints PUT.
UPLOAD_ROUTES = (
    ("POST", re.compile(r"^/api/runs/[^/]+/samples/?$")),
    ("PUT", re.compile(r"^/api/runs/[^/]+/checkpoints/[^/]+/?$")),
)


def _mb(n: float) -> str:
    return f"{n:g} MiB"


class RequestSizeLimit:
    """Pure ASGI middleware (no BaseHTTPMiddleware: that would buffer every upload in memory)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    def limit_for(self, method: str, path: str) -> tuple[int, str]:
        for m, pattern in UPLOAD_ROUTES:
            if method == m and pattern.match(path):
                return int(self.settings.max_upload_mb * MIB), (
                    f"upload exceeds this server's limit of {_mb(self.settings.max_upload_mb)} "
                    "(GANSCOPE_MAX_UPLOAD_MB)")
        return int(self.settings.max_request_mb * MIB), (
            f"request body exceeds this server's limit of {_mb(self.settings.max_request_mb)} "
            "(GANSCOPE_MAX_REQUEST_MB)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = self.limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _reject(send, message)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > limit:
                    raise HTTPException(status_code=413, detail=message)
            return msg

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # malformed: uvicorn refuses it; counting still guards us
    return None


async def _reject(send: Send, detail: str) -> None:
    body: Any = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
