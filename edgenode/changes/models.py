"""The change stream's JSON bodies, as msgspec types (the routes encode them; /openapi.json shows them)."""

from __future__ import annotations

from typing import Any

import msgspec


class CaptureResponse(msgspec.Struct):
    table: str
    captured: bool
    columns: list[str] = []


class CapturedTables(msgspec.Struct):
    tables: list[str]
    position: int | None  # the stream's position (the newest cursor it has read), None before its first read


class ChangeEvent(msgspec.Struct):
    """One SSE `data:` / WebSocket message. `op` is insert, update, delete or commit; `row` is the
    new row (null for a delete and a commit); a commit names its transaction's `first` cursor."""

    cursor: int
    table: str | None
    op: str
    rowid: int | None
    row: dict[str, Any] | None
    first: int | None = None
