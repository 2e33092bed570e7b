"""Every error leaves the API as `{"error": {"code": "...", "message": "..."}}` with a fitting status."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from edgenode.database import DatabaseError

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
    return JSONResponse({"error": body}, status_code=status, headers=headers)


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


def decode(body: bytes, kind: type[Any]) -> Any:
    """Decode and validate a JSON body: malformed JSON is 400, a wrong field is 422 naming it."""
    if not body.strip():
        raise ApiError(400, "malformed_json", "request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("at `", 1)[1].rstrip("`") if "at `" in text else "$"
        raise ApiError(422, "invalid_field", f"{text}", field=field) from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc
