"""Routes declare the access they need where they are defined; the auth middleware reads it.

`read_route` serves read-only tokens too (GETs, and POSTs that only read such as /api/v1/query);
`write_route` needs the read-write token. A plain Starlette `Route` counts as a read for GET/HEAD
and as a write otherwise, as does a path no route matches (so an unknown POST is refused early).
A route made with `query_token=True` also takes its token as `?access_token=` (the change stream,
for browsers' EventSource); every other route refuses a token there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any

from starlette.routing import BaseRoute, Route

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Needs(Enum):
    READ = "read"
    WRITE = "write"


class AccessRoute(Route):
    def __init__(
        self, path: str, endpoint: Callable[..., Any], *, methods: list[str], needs: Needs, query_token: bool = False
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self.needs = needs
        self.query_token = query_token


def read_route(
    path: str, endpoint: Callable[..., Any], *, methods: list[str], query_token: bool = False
) -> AccessRoute:
    return AccessRoute(path, endpoint, methods=methods, needs=Needs.READ, query_token=query_token)


def write_route(path: str, endpoint: Callable[..., Any], *, methods: list[str]) -> AccessRoute:
    return AccessRoute(path, endpoint, methods=methods, needs=Needs.WRITE)


class AccessMap:
    """Which access a (method, path) needs, from the routes' own declarations."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self._static: dict[tuple[str, str], Needs] = {}
        self._dynamic: list[tuple[Route, Needs]] = []
        self._query_token: set[str] = set()
        for route in routes:
            if not isinstance(route, Route):
                continue
            if isinstance(route, AccessRoute) and route.query_token:
                if route.param_convertors:
                    raise ValueError(f"{route.path}: only a fixed path may take ?access_token=")
                self._query_token.add(route.path)
            for method in route.methods or ():
                needs = route.needs if isinstance(route, AccessRoute) else self._default(method)
                if route.param_convertors:
                    self._dynamic.append((route, needs))
                else:
                    self._static[(method, route.path)] = needs

    @staticmethod
    def _default(method: str) -> Needs:
        return Needs.READ if method in SAFE_METHODS else Needs.WRITE

    def takes_query_token(self, path: str) -> bool:
        return path in self._query_token

    def needs_write(self, method: str, path: str) -> bool:
        if method in SAFE_METHODS:
            return False
        needs = self._static.get((method, path))
        if needs is None:
            for route, route_needs in self._dynamic:
                if route.methods and method in route.methods and route.path_regex.match(path):
                    needs = route_needs
                    break
        return needs is not Needs.READ
