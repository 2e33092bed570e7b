"""Pure ASGI middleware: request metrics, bearer auth, body size limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgenode.api.errors import HRANA_PREFIXES, error_response
from edgenode.api.routing import AccessMap
from edgenode.auth import QUERY_TOKEN, Access, Authenticator, AuthError, query_token
from edgenode.metrics import NodeMetrics

OPEN_PATHS = frozenset({"/health", "/ready"})
ACCESS_KEY = "edgenode.access"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: NodeMetrics, route_label: Callable[[Scope], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.route_label = route_label
        # Labelled children, looked up once per (route, method, status): `labels()` validates and
        # locks on every call, on every request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = self.route_label(scope)
            key = (route, scope["method"], status)
            children = self._children.get(key)
            if children is None:
                children = (
                    self.metrics.requests.labels(route, scope["method"], str(status)),
                    self.metrics.latency.labels(route),
                )
                if len(self._children) < 1024:  # methods come from clients: bounded
                    self._children[key] = children
            children[0].inc()
            children[1].observe(time.perf_counter() - start)


class AuthMiddleware:
    """Bearer auth; a read-only token reaches only routes that declare they read (`api/routing.py`).
    Routes that declare it also take the token as `?access_token=` (when there is no Authorization
    header), checked exactly like a bearer token."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, access: AccessMap) -> None:
        self.app = app
        self.authenticator = authenticator
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith(HRANA_PREFIXES):
            scope[ACCESS_KEY] = Access.READ
            await self.app(scope, receive, send)
            return
        header = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                header = value.decode("latin-1")
                break
        try:
            if header is None and (token := query_token(scope.get("query_string", b""))) is not None:
                access = self._check_query_token(path, token)
            else:
                access = self.authenticator.check(header)
        except AuthError as exc:
            response = error_response(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if not access.can_write and self.access.needs_write(scope["method"], path):
            response = error_response(
                403, "forbidden", "this token is read-only; this route needs the read-write token"
            )
            await response(scope, receive, send)
            return
        scope[ACCESS_KEY] = access
        await self.app(scope, receive, send)

    def _check_query_token(self, path: str, token: str) -> Access:
        if self.authenticator.enabled and not self.access.takes_query_token(path):
            raise AuthError(
                f"{QUERY_TOKEN} is taken only by the change stream (GET /api/v1/changes, /api/v1/changes/ws), "
                "for browsers that cannot send headers; send 'Authorization: Bearer <token>'"
            )
        return self.authenticator.check_query_token(token)


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for key, value in scope["headers"]:
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "body_too_large",
            f"request body exceeds max_body_bytes={self.max_bytes}; send less or raise --max-body-bytes",
        )
        await response(scope, receive, send)
