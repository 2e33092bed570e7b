"""Request bodies, read and decoded by one set of rules for every route of node and primary.

`read` collects a body within a size bound; `decode` turns JSON into a msgspec type. Both raise
`BodyError`, which each front-end answers in its own error shape (REST, vectors, Hrana, sync):
what counts as a bad body is decided here, only its wording differs there.

The rules: a body is UTF-8 JSON (a UTF-8 byte-order mark is skipped, as RFC 8259 allows; UTF-16
and UTF-32 are refused by name); a declared charset other than UTF-8 is 415; the Content-Type is
not otherwise checked, since clients in the wild send none, text/plain or form types for JSON.
Nesting past the decoder's recursion limit is a 400, not the RecursionError it raises.
"""

from __future__ import annotations

import codecs
import logging
import re
from typing import Literal, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request

log = logging.getLogger(__name__)
T = TypeVar("T")

Reason = Literal["malformed", "invalid", "too_large", "media_type", "disconnected"]
# Set in the scope by the HTTP server when it answered 408 for a stalled body (it logged that already).
TIMED_OUT_KEY = "edgenode.body_timed_out"

# The status and the REST API's code for each reason (Hrana has codes of its own).
_ANSWER: dict[Reason, tuple[int, str]] = {
    "malformed": (400, "malformed_json"),
    "invalid": (422, "invalid_field"),
    "too_large": (413, "body_too_large"),
    "media_type": (415, "unsupported_media_type"),
    "disconnected": (400, "client_disconnected"),
}
_FOREIGN_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


class BodyError(Exception):
    """A body that cannot be used. `reason` is what front-ends map to their codes; `status` the
    usual HTTP status for it, `code` the REST code; `field` the JSON path of a wrong field (reason "invalid")."""

    def __init__(self, reason: Reason, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status, self.code = _ANSWER[reason]
        self.message = message
        self.field = field


async def read(request: Request, max_bytes: int | None = None) -> bytes:
    """The whole body, refused (413) as soon as it passes `max_bytes`, without holding more."""
    if max_bytes is not None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
    except ClientDisconnect:
        if not request.scope.get(TIMED_OUT_KEY):
            client = request.client.host if request.client else "?"
            log.info(
                "client %s went away after %d bytes of its %s %s body", client, size, request.method, request.url.path
            )
        raise BodyError("disconnected", "the client went away before its request body was complete") from None
    return b"".join(chunks)


def _too_large(max_bytes: int) -> BodyError:
    return BodyError(
        "too_large", f"request body exceeds max_body_bytes={max_bytes}; send less or raise --max-body-bytes"
    )


def check_charset(content_type: str | None) -> None:
    """A declared charset must be UTF-8 (JSON has no other on the wire)."""
    if not content_type:
        return
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise BodyError("media_type", f"request body must be UTF-8 JSON, not charset={charset}")


def decode(raw: bytes, kind: type[T], content_type: str | None = None) -> T:
    """Decode and validate a JSON body as `kind`."""
    check_charset(content_type)
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    else:
        for bom, name in _FOREIGN_BOMS:
            if raw.startswith(bom):
                raise BodyError(
                    "malformed", f"request body must be UTF-8 JSON; it starts with a {name} byte-order mark"
                )
    if not raw.strip():
        raise BodyError("malformed", "request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        field = text.rsplit("at `", 1)[1].rstrip("`") if "at `" in text else "$"
        raise BodyError("invalid", text, field) from None
    except msgspec.DecodeError as exc:
        raise BodyError("malformed", f"request body is not valid JSON: {_decode_problem(raw, exc)}") from None
    except RecursionError:
        raise BodyError("malformed", "request body is nested too deeply") from None


# A `\\uD800`-`\\uDBFF` escape (after an even number of backslashes) not followed by a `\\uDC00`-`\\uDFFF` one.
_LONE_HIGH_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2})(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})")


def _decode_problem(raw: bytes, exc: msgspec.DecodeError) -> str:
    """msgspec's message, except where it is wrong: a high surrogate escape without its low half
    is reported as "Input data was truncated" although the input goes on."""
    if str(exc) == "Input data was truncated" and (lone := _LONE_HIGH_SURROGATE.search(raw)):
        escape = lone.group(1).decode()
        return (
            f"lone UTF-16 surrogate {escape} at byte {lone.start(1)} (a high surrogate must be followed by a "
            "low one, \\uDC00-\\uDFFF; send the character itself or its full pair)"
        )
    return str(exc)


async def read_json(request: Request, kind: type[T], max_bytes: int | None = None) -> T:
    return decode(await read(request, max_bytes), kind, request.headers.get("content-type"))
