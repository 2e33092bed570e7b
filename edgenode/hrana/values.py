"""Value codec: Hrana wire values <-> Python values (exact i64 integers, base64 blobs)."""

from __future__ import annotations

import base64
import math

from edgenode.hrana import protocol as p
from edgenode.hrana.backend import HranaError, Value

_NULL = p.NullValue()


def to_python(value: p.ProtoValue) -> Value:
    """Decode one wire value (already validated by msgspec: integers fit in i64, base64 is valid)."""
    if isinstance(value, p.IntegerValue):
        return int(value.value)
    if isinstance(value, p.TextValue):
        return value.value
    if isinstance(value, p.FloatValue):
        # JSON has no NaN; a null float can only mean one, and SQLite binds NaN as NULL anyway.
        return value.value
    if isinstance(value, p.BlobValue):
        return p.decode_base64(value.base64)
    return None


def from_python(value: Value) -> p.ProtoValue:
    """Encode one Python value; blobs unpadded, as sqld emits them."""
    if value is None:
        return _NULL
    if isinstance(value, bool):
        return p.IntegerValue(str(int(value)))
    if isinstance(value, int):
        if not p.I64_MIN <= value <= p.I64_MAX:
            raise HranaError(f"integer {value} does not fit in 64 bits", "SQLITE_TOOBIG")
        return p.IntegerValue(str(value))
    if isinstance(value, float):
        return p.FloatValue(value if math.isfinite(value) else None)
    if isinstance(value, str):
        return p.TextValue(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return p.BlobValue(base64.b64encode(bytes(value)).decode("ascii").rstrip("="))
    raise HranaError(f"cannot encode a value of type {type(value).__name__}", "SQLITE_MISMATCH")
