"""Values between JSON and Python, without losing 64-bit integers.

JSON carries blobs as `{"base64": "..."}`. Getting integers beyond 32 bits exactly through the
libsql binding is `edgenode.binding`'s job.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

I64_MIN, I64_MAX = -(2**63), 2**63 - 1


class ValueError_(ValueError):
    """A parameter that cannot be bound; the message names it."""


def from_json(value: Any, where: str) -> Any:
    """A JSON parameter value → what the engine binds."""
    if value is None or isinstance(value, str | float):
        return value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        if not I64_MIN <= value <= I64_MAX:
            raise ValueError_(f"{where}: integer {value} does not fit in 64 bits")
        return value
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        text = value["base64"]
        try:
            return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError_(f"{where}: invalid base64 blob") from exc
    raise ValueError_(
        f'{where}: unsupported value {type(value).__name__}; use null, a number, a string or {{"base64": "..."}}'
    )


def to_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    return value
