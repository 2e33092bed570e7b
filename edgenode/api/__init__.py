"""The node's HTTP API (Starlette): REST routes, auth, limits, errors, metrics, OpenAPI.

`create_app` is loaded on first use: the front-ends (vectors, text, Hrana) import this package's
kit (`component`, `routing`, `errors`), and the app itself imports them back through the OpenAPI
description, so an eager import here would be a circle.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from edgenode.api.app import create_app

        return create_app
    raise AttributeError(name)
