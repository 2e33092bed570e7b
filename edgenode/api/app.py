"""The Starlette application of a node: wiring of database, components, middleware and routes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from edgenode import startup
from edgenode.api import openapi, rest
from edgenode.api.component import Component
from edgenode.api.errors import (
    ApiError,
    api_error_handler,
    database_error_handler,
    error_body,
    http_error_handler,
    internal_error_handler,
)
from edgenode.api.middleware import AuthMiddleware, BodyLimitMiddleware, MetricsMiddleware
from edgenode.api.node import Node
from edgenode.api.routing import AccessMap
from edgenode.auth import Authenticator
from edgenode.config import Settings
from edgenode.database import Database
from edgenode.errors import DatabaseError
from edgenode.metrics import NodeMetrics
from edgenode.origins import OriginGuard

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    db: Database,
    *,
    components: list[Component] | None = None,
    authenticator: Authenticator | None = None,
    extra_operations: list[openapi.Operation] | None = None,
) -> Starlette:
    components = components or []
    metrics = NodeMetrics()
    node = Node(settings, db, metrics, components)
    for component in components:
        component.bind_metrics(metrics)
    authenticator = authenticator or Authenticator.from_settings(
        settings.auth_token, settings.read_token, settings.jwt_key_file
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        startup.mark("lifespan")
        await db.start()
        startup.mark("database_started")
        started: list[Component] = []
        try:
            for component in components:
                await component.start()
                started.append(component)
                startup.mark(f"{component.name}_started")
            yield
        finally:
            for component in reversed(started):
                try:
                    await component.stop()
                except Exception:
                    log.exception("stopping %s failed", component.name)
            await db.stop()

    routes: list[BaseRoute] = list(rest.ROUTES)
    for component in components:
        routes.extend(component.routes())
    labels = {id(r.endpoint): r.path for r in routes if isinstance(r, Route)}

    def route_label(scope: Scope) -> str:
        endpoint = scope.get("endpoint")
        return labels.get(id(endpoint), "unmatched") if endpoint is not None else "unmatched"

    middleware = [Middleware(MetricsMiddleware, metrics=metrics, route_label=route_label)]
    if not authenticator.enabled:
        # Without a token, what a web page can make a browser send must be refused (edgenode.origins).
        middleware.append(
            Middleware(
                OriginGuard,
                allowed_origins=settings.origins,
                host=settings.host,
                check_host=settings.binds_loopback,
                error_body=error_body,
            )
        )
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[
            *middleware,
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
            Middleware(AuthMiddleware, authenticator=authenticator, access=AccessMap(routes)),
        ],
        exception_handlers={
            ApiError: api_error_handler,
            DatabaseError: database_error_handler,
            HTTPException: http_error_handler,
            Exception: internal_error_handler,
        },
    )
    app.state.node = node
    app.state.openapi = openapi.build(openapi.OPERATIONS + openapi.HRANA_OPERATIONS + (extra_operations or []), routes)
    return app
