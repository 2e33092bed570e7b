"""Every error leaves the HTTP API (REST and vectors) as `{"error": {"code": "...", "message": "..."}}`.

One status per kind of bad input: a body that is not JSON (or empty) is 400 `malformed_json`; a
body that does not match the request type is 422 `invalid_field` naming the field; a value the
type allows but the operation refuses (SQL, parameters, a vector's dimension, k) is 400 with a
code naming the problem; refusals of the data layer carry their kind's status (`edgenode.errors`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edgenode import bodies
from edgenode.errors import DatabaseError

T = TypeVar("T")
# The Hrana server's routes: it authenticates them itself and answers in Hrana's error format.
HRANA_PREFIXES = ("/v1/", "/v2", "/v3")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_field",
    429: "too_many_requests",
    500: "internal",
    503: "unavailable",
    504: "timeout",
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


class JSONResponse(Response):
    # Exactly `application/json`: libSQL's JS client compares the header without a charset.
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    if status == 503 and headers is None:
        headers = {"Retry-After": "1"}  # unavailable for a moment: clients back off and retry
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def error_body(path: str, code: str, message: str) -> bytes:
    """An error answered outside the routes (HTTP server, browser guard), in the shape of the path's
    API: Hrana's for its routes, this one's for the rest."""
    if path.startswith(HRANA_PREFIXES):
        return msgspec.json.encode({"error": message, "message": message, "code": code.upper()})
    return msgspec.json.encode({"error": {"code": code, "message": message}})


async def api_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, **exc.extra)


async def database_error_handler(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, DatabaseError)
    extra = {"index": exc.index} if exc.index is not None else {}
    return error_response(exc.status, exc.code, exc.message, **extra)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        message = f"no route for {request.method} {request.url.path}; see /openapi.json"
    elif exc.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), message, headers=exc.headers)


async def read_json(request: Request, kind: type[T]) -> T:
    """A JSON body as `kind` (rules in edgenode.bodies): malformed is 400, a wrong field is 422 naming it.

    The size bound is BodyLimitMiddleware's, which covers every route."""
    try:
        return await bodies.read_json(request, kind)
    except bodies.BodyError as exc:
        raise body_error(exc) from None


async def internal_error_handler(_: Request, exc: Exception) -> Response:
    # A bug, not the client's doing: still the documented shape (uvicorn logs the traceback).
    return error_response(500, "internal", f"internal error: {type(exc).__name__}")


def body_error(exc: bodies.BodyError) -> ApiError:
    extra = {"field": exc.field} if exc.field is not None else {}
    return ApiError(exc.status, exc.code, exc.message, **extra)
