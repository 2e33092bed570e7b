"""Value codec and batons, without a server."""

from __future__ import annotations

import msgspec
import pytest

from edgenode.hrana import protocol as p
from edgenode.hrana.backend import HranaError
from edgenode.hrana.batons import BatonError, BatonSigner
from edgenode.hrana.values import from_python, to_python


@pytest.mark.parametrize(
    "value", [None, 0, 1, -1, p.I64_MAX, p.I64_MIN, 1.5, -0.0, "", "héllo ✓", b"", b"\x00", b"\x00\x01\xff\xfe"]
)
def test_python_values_survive_a_json_round_trip(value: object) -> None:
    wire = msgspec.json.encode(from_python(value))  # type: ignore[arg-type]
    decoded = msgspec.json.decode(wire, type=p.ProtoValue)
    assert to_python(decoded) == value
    assert type(to_python(decoded)) is type(value)


def test_integers_are_decimal_strings_and_blobs_unpadded_on_the_wire() -> None:
    assert msgspec.json.encode(from_python(p.I64_MAX)) == b'{"type":"integer","value":"9223372036854775807"}'
    assert msgspec.json.encode(from_python(b"\x00")) == b'{"type":"blob","base64":"AA"}'
    assert msgspec.json.encode(from_python(True)) == b'{"type":"integer","value":"1"}'
    assert msgspec.json.encode(from_python(float("inf"))) == b'{"type":"float","value":null}'


def test_blobs_decode_padded_or_unpadded() -> None:
    assert p.decode_base64("AAE=") == p.decode_base64("AAE") == b"\x00\x01"
    with pytest.raises(ValueError):
        p.decode_base64("A$")


@pytest.mark.parametrize(
    "wire",
    [
        b'{"type":"integer","value":"9223372036854775808"}',
        b'{"type":"integer","value":"-9223372036854775809"}',
        b'{"type":"integer","value":"1.5"}',
        b'{"type":"blob","base64":"***"}',
        b'{"type":"text"}',
        b'{"type":"bigint","value":"1"}',
    ],
)
def test_invalid_wire_values_fail_validation(wire: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(wire, type=p.ProtoValue)


def test_integers_sent_as_json_numbers_are_accepted() -> None:
    assert to_python(msgspec.json.decode(b'{"type":"integer","value":42}', type=p.ProtoValue)) == 42


def test_out_of_range_python_ints_cannot_be_encoded() -> None:
    with pytest.raises(HranaError):
        from_python(2**63)


def test_batons_round_trip_and_resist_tampering() -> None:
    signer = BatonSigner(b"k" * 32)
    baton = signer.encode(7, 42)
    assert signer.decode(baton) == (7, 42)
    assert BatonSigner(b"k" * 32).decode(baton) == (7, 42)  # same key, e.g. passed in by the host
    with pytest.raises(BatonError):
        BatonSigner().decode(baton)
    forged = BatonSigner(b"x" * 32).encode(7, 43)
    with pytest.raises(BatonError):
        signer.decode(forged)
    with pytest.raises(BatonError):
        signer.decode(baton[:-1])
    with pytest.raises(BatonError):
        signer.decode("!!!")
