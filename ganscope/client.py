"""The command line's HTTP access to a ganscope server, with errors a person can act on."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8000"


class ApiError(Exception):
    """A failed call, already phrased for the terminal; `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0, detail: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def env_token() -> str | None:
    # An empty GANSCOPE_TOKEN (compose's `${GANSCOPE_TOKEN:-}`) means "no token", as on the server.
    return os.environ.get("GANSCOPE_TOKEN") or None


def format_detail(detail: Any) -> str:
    """FastAPI error details as lines: a 422 list becomes `field: message` per bad field."""
    if isinstance(detail, list):
        lines = []
        for err in detail:
            if isinstance(err, dict):
                loc = [str(p) for p in err.get("loc", []) if p not in ("body", "query", "path")]
                where = ".".join(loc) or "request"
                lines.append(f"  {where}: {err.get('msg', err)}")
            else:
                lines.append(f"  {err}")
        return "\n".join(lines)
    if isinstance(detail, dict):
        return "  " + ", ".join(f"{k}: {v}" for k, v in detail.items())
    return f"  {detail}"


class Api:
    """Thin wrapper: base URL, bearer token, JSON in and out, one place for error wording."""

    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = (server or os.environ.get("GANSCOPE_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.token = token or env_token()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.client = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Api":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self.client.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the ganscope server at {self.server} ({exc.__class__.__name__}): "
                           "is it running? Start one with `ganscope up` or `ganscope serve`, "
                           "or point --server / GANSCOPE_SERVER at it.") from exc
        if resp.status_code >= 400:
            raise self._error(resp, method, path)
        return resp

    def _error(self, resp: httpx.Response, method: str, path: str) -> ApiError:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text[:500]
        code = resp.status_code
        if code == 401:
            hint = ("the server needs a token: pass --token or set GANSCOPE_TOKEN" if not self.token
                    else "the server refused the token given by --token / GANSCOPE_TOKEN")
            return ApiError(f"{method} {path}: 401 unauthorized: {hint}", code, detail)
        return ApiError(f"{method} {path}: {code}\n{format_detail(detail)}", code, detail)

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw).json()

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        resp = self.request("POST", path, json=json, **kw)
        return resp.json() if resp.content else None
