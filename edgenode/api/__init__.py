"""The node's HTTP API (Starlette): REST routes, auth, limits, errors, metrics, OpenAPI."""

from edgenode.api.app import create_app

__all__ = ["create_app"]
