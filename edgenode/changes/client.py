"""Reading a change stream over SSE with httpx: the parser the CLI (and tests, bench) share."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class SseEvent:
    event: str  # "message" for a change or commit; "resync" or "error" at the end
    id: str | None
    data: dict[str, Any]


def parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """SSE events from a stream's lines (comments, i.e. heartbeats, skipped)."""
    event, ident, data = "message", None, []
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event, ident, json.loads("\n".join(data)))
            event, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "id":
                ident = value
            elif name == "data":
                data.append(value)
