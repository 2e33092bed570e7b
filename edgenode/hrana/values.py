"""Value codec: Hrana wire values <-> Python values (exact i64 integers, base64 blobs).

Hot path: every cell of every result goes through `from_python`, so it dispatches on the exact type
and builds structs that skip the decode-time validation (the values come from the database, not from
a client)."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import cast

import msgspec

from edgenode.hrana import protocol as p
from edgenode.hrana.backend import HranaError, Value


class _TrustedInteger(msgspec.Struct, tag="integer", tag_field="type"):
    """Encodes exactly like IntegerValue, without its validating __post_init__."""

    value: str


class _TrustedBlob(msgspec.Struct, tag="blob", tag_field="type"):
    """Encodes exactly like BlobValue, without its validating __post_init__."""

    base64: str


_NULL = p.NullValue()


def to_python(value: p.ProtoValue) -> Value:
    """Decode one wire value (already validated by msgspec: integers fit in i64, base64 is valid)."""
    kind = type(value)
    if kind is p.IntegerValue:
        return int(value.value)  # type: ignore[union-attr]
    if kind is p.TextValue:
        return value.value  # type: ignore[union-attr]
    if kind is p.FloatValue:
        # JSON has no NaN; a null float can only mean one, and SQLite binds NaN as NULL anyway.
        return value.value  # type: ignore[union-attr]
    if kind is p.BlobValue:
        return p.decode_base64(value.base64)  # type: ignore[union-attr]
    if kind is p.NullValue:
        return None
    raise TypeError(f"not a Hrana value: {value!r}")


def _integer(value: int) -> p.ProtoValue:
    if not p.I64_MIN <= value <= p.I64_MAX:
        raise HranaError(f"integer {value} does not fit in 64 bits", "SQLITE_TOOBIG")
    return cast(p.ProtoValue, _TrustedInteger(str(value)))


def _float(value: float) -> p.ProtoValue:
    return p.FloatValue(value if math.isfinite(value) else None)


def _blob(value: bytes | bytearray | memoryview) -> p.ProtoValue:
    # Unpadded, as sqld emits blobs; every client we know pads before decoding.
    return cast(p.ProtoValue, _TrustedBlob(base64.b64encode(value).decode("ascii").rstrip("=")))


_ENCODERS: dict[type, Callable[[object], p.ProtoValue]] = {
    str: p.TextValue,  # type: ignore[dict-item]
    int: _integer,  # type: ignore[dict-item]
    float: _float,  # type: ignore[dict-item]
    bytes: _blob,  # type: ignore[dict-item]
    bytearray: _blob,  # type: ignore[dict-item]
    memoryview: _blob,  # type: ignore[dict-item]
    bool: lambda value: _integer(int(value)),  # type: ignore[arg-type]
    type(None): lambda _value: _NULL,
}


def from_python(value: Value) -> p.ProtoValue:
    """Encode one Python value."""
    encoder = _ENCODERS.get(type(value))
    if encoder is None:
        # Subclasses (an IntEnum, a str subclass) take the slow path.
        for base, candidate in _ENCODERS.items():
            if isinstance(value, base):
                encoder = candidate
                break
        else:
            raise HranaError(f"cannot encode a value of type {type(value).__name__}", "SQLITE_MISMATCH")
    return encoder(value)
