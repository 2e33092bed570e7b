"""Batons: unforgeable, single-use references to a stream (stream id + sequence number, HMAC-signed)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct

_PAYLOAD = struct.Struct(">QQ")
_MAC_SIZE = 16  # truncated HMAC-SHA256: 128 bits is plenty against forgery, and batons stay short


class BatonError(Exception):
    """The baton was not issued by this server (or was damaged in transit)."""


class BatonSigner:
    def __init__(self, key: bytes | None = None):
        # A random key per process: batons do not survive a restart, and neither do the streams.
        self._key = key if key is not None else os.urandom(32)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_SIZE]

    def encode(self, stream_id: int, seq: int) -> str:
        payload = _PAYLOAD.pack(stream_id, seq)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).decode("ascii").rstrip("=")

    def decode(self, baton: str) -> tuple[int, int]:
        """(stream_id, seq) from a baton, or BatonError."""
        try:
            raw = base64.urlsafe_b64decode(baton + "=" * (-len(baton) % 4))
        except (binascii.Error, ValueError):
            raise BatonError("baton is not valid base64") from None
        if len(raw) != _PAYLOAD.size + _MAC_SIZE:
            raise BatonError("baton has the wrong length")
        payload, mac = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise BatonError("baton signature does not match")
        stream_id, seq = _PAYLOAD.unpack(payload)
        return stream_id, seq
