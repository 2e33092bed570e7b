"""Values between JSON, Python and the libsql binding, without losing 64-bit integers.

JSON carries blobs as `{"base64": "..."}`. The libsql binding binds Python ints outside the
32-bit range as REAL (2**53 + 1 comes back as 2**53), so such ints are bound as their decimal
text: INTEGER-affinity columns and comparisons against them convert it back exactly.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
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


def for_libsql(value: Any) -> Any:
    if isinstance(value, int) and not I32_MIN <= value <= I32_MAX:
        return str(value)
    return value


def to_json(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    return value
