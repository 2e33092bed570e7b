"""The browser guard of a node or primary run without tokens (the development setup).

Without a token every request is let in, and a browser sends some requests to any address a page
names: a cross-site `text/plain` POST (no preflight: `/api/v1/execute` runs it, the page just
cannot read the answer) and every WebSocket (no CORS at all). So when no token is configured,
`OriginGuard` refuses (403) an HTTP request or WebSocket whose `Origin` is not the server's own
(same scheme, host and port as its `Host`) unless `allowed_origins` lists it. Requests without
`Origin` (curl, libSQL clients, server-side code: not browsers) pass untouched.

DNS rebinding defeats the Origin check (the attacker's name resolves to 127.0.0.1: the page is then
same-origin), so a loopback server without a token also answers only to a `Host` that names it:
an IP literal, `localhost` (or a `*.localhost` name, which browsers resolve to loopback
themselves), or its configured `--host`. A rebound name is none of these.

With a token nothing here runs: a browser never attaches a bearer token by itself, so a forged
request carries none. No CORS headers are sent either way (there were none before this guard).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

# (path, code, message) -> the JSON body of a refusal, in the shape of the route's API.
ErrorBody = Callable[[str, str, str], bytes]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_WS_SCHEMES = {"ws": "http", "wss": "https"}
Origin = tuple[str, str, int]


def parse_origin(text: str) -> Origin | None:
    """(scheme, host, port) of an origin such as `http://localhost:3000`; None if it is not one
    (`null`, another scheme, a path)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    return scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme]


def _host_of(host_header: str) -> tuple[str, int | None] | None:
    try:
        parts = urlsplit("//" + host_header)
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def is_own_name(hostname: str, configured: str) -> bool:
    """Whether a Host's name can only reach this machine (or is the name it was told to bind)."""
    if hostname == "localhost" or hostname.endswith(".localhost") or hostname == configured.lower():
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


class OriginGuard:
    """Pure ASGI middleware, for HTTP and WebSocket scopes alike (see the module's doc)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: frozenset[Origin],
        host: str,
        check_host: bool,
        error_body: ErrorBody,
    ) -> None:
        self.app = app
        self.allowed = allowed_origins
        self.host = host
        self.check_host = check_host
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        code, message = refusal
        if scope["type"] == "websocket":
            # A close before the accept: the server answers the upgrade with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        body = self.error_body(scope["path"], code, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope: Scope) -> tuple[str, str] | None:
        """(code, message) when the request must be refused, else None."""
        origin_header = host_header = None
        for key, value in scope["headers"]:
            if key == b"origin":
                origin_header = value.decode("latin-1")
            elif key == b"host":
                host_header = value.decode("latin-1")
        host = _host_of(host_header) if host_header is not None else None
        if host_header is not None and (host is None or not host[0]):
            return "forbidden_host", f"malformed Host header {host_header!r}"
        if self.check_host and host is not None and not is_own_name(host[0], self.host):
            return "forbidden_host", (
                f"Host {host_header!r} refused: without a token this server answers only to an IP address, "
                f"localhost or its --host ({self.host}), so a site that points its own name here (DNS rebinding) "
                "cannot use it; connect by address (e.g. http://127.0.0.1:PORT), or set --auth-token"
            )
        if origin_header is None:
            return None
        origin = parse_origin(origin_header)
        if origin is not None and (origin in self.allowed or origin == self._own_origin(scope, host)):
            return None
        return "forbidden_origin", (
            f"cross-origin request from {origin_header!r} refused: this server runs without a token, so any web "
            "page could use it through a browser. Set a token (--auth-token / EDGENODE_AUTH_TOKEN) and send it, "
            "or list the page's origin in --allowed-origins / EDGENODE_ALLOWED_ORIGINS"
        )

    @staticmethod
    def _own_origin(scope: Scope, host: tuple[str, int | None] | None) -> Origin | None:
        if host is None:
            return None
        scheme = str(scope.get("scheme", "http")).lower()
        scheme = _WS_SCHEMES.get(scheme, scheme)
        if scheme not in _DEFAULT_PORTS:
            return None
        return scheme, host[0], host[1] or _DEFAULT_PORTS[scheme]
