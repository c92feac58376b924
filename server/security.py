"""Safe by default against cross-site requests (README "Security").

Without a token (the `make up` default) the API's only protection from other web pages a user
visits is the browser itself. Three checks, as one pure ASGI middleware ahead of every route:

1. Host allow-list (GANSCOPE_ALLOWED_HOSTS): a server bound to loopback answers only requests
   addressed to loopback names, so a DNS-rebinding page (evil.example resolving to 127.0.0.1)
   cannot read or change anything. Bound elsewhere, any Host is accepted unless a list is set.
2. Origin / Sec-Fetch-Site on state-changing methods: a browser names the page that sent the
   request; one from another origin is refused (403). Scripts, workers and the SDK send neither
   header and are unaffected.
3. No "simple" content types on state changes: text/plain, form-urlencoded and multipart bodies
   are what a cross-site <form> or a no-cors fetch can send without a CORS preflight; no route
   takes them (JSON, image/png and octet-stream do), so they are refused (415) whatever Origin says.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from ganscope.server.settings import Settings

CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
# The CORS-safelisted request content types: a cross-site page can send these without a preflight.
SIMPLE_TYPES = frozenset({"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """Host names the server answers to; None = any (bound beyond loopback with no list set)."""
    given = [h.strip().lower().strip("[]").rstrip(".") for h in settings.allowed_hosts if h.strip()]
    if "*" in given:
        return None
    if given:
        return frozenset(given)
    return frozenset(LOOPBACK_NAMES) if is_loopback(settings.host) else None


def split_host(value: str) -> tuple[str, int | None]:
    """'Example.org:8000' -> ('example.org', 8000); '[::1]:80' -> ('::1', 80)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""  # a bare IPv6 address (no port) or a plain name
    return name.rstrip("."), int(port) if port.isdigit() else None


def _origin_matches(origin: str, host_header: str, trusted: frozenset[str]) -> bool:
    if origin.rstrip("/").lower() in trusted:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return False  # "null" (sandboxed frame, file://) or garbage: never the dashboard
    o_port = parts.port or DEFAULT_PORTS[parts.scheme]
    h_name, h_port = split_host(host_header)
    # Behind a TLS proxy the server sees http while the page is https: compare host and port only,
    # with the port the page's scheme implies when the Host header leaves it out.
    return parts.hostname.lower() == h_name and o_port == (h_port or DEFAULT_PORTS.get(parts.scheme, 80))


class CrossSiteGuard:
    """Pure ASGI middleware (no BaseHTTPMiddleware: uploads and event streams pass untouched)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = allowed_hosts(settings)
        self.trusted_origins = frozenset(o.rstrip("/").lower() for o in settings.allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no websocket routes exist
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for k, v in scope.get("headers", []):
            headers.setdefault(k, v)
        host = headers.get(b"host", b"").decode("latin-1")
        refusal = self.check(scope, headers, host)
        if refusal is not None:
            await _refuse(send, *refusal)
            return
        await self.app(scope, receive, send)

    def check(self, scope: Scope, headers: dict[bytes, bytes], host: str) -> tuple[int, str] | None:
        if self.hosts is not None and split_host(host)[0] not in self.hosts:
            return 400, (f"Host {host!r} is not one this server answers to (allowed: {', '.join(sorted(self.hosts))}); "
                         "reach it by one of those names or add yours to GANSCOPE_ALLOWED_HOSTS")
        if scope.get("method", "GET") not in CHANGING:
            return None
        origin = headers.get(b"origin", b"").decode("latin-1")
        fetch_site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        if origin:
            if not _origin_matches(origin, host, self.trusted_origins):
                return 403, (f"cross-site request refused: Origin {origin!r} is not this server ({host}); "
                             "a page from another site may not change state here (add the origin to "
                             "GANSCOPE_ALLOWED_ORIGINS if it is yours)")
        elif fetch_site and fetch_site not in ("same-origin", "none"):
            return 403, f"cross-site request refused: the browser says it came from a {fetch_site} page"
        ctype = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if ctype in SIMPLE_TYPES:
            return 415, (f"Content-Type {ctype} is not accepted on state-changing calls: send JSON as "
                         "application/json (uploads as image/png or application/octet-stream)")
        return None


async def _refuse(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"vary", b"Origin")]})
    await send({"type": "http.response.body", "body": body})
