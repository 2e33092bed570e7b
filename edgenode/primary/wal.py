"""SQLite WAL files: read, verify and append frames exactly as SQLite's own recovery judges them.

A frame is valid when its salts match the WAL header and its checksum continues the running
checksum of every frame before it; only frames up to the last valid *commit* frame (non-zero
"database size after commit") are committed. `WalReader` keeps the verified prefix so each
call only reads what is new.

The checksum is a running sum over pairs of 32-bit words (s1 += a + s2; s2 += b + s1), which is
linear, so one frame's effect is `M^n·s + Σ M^(n-k)·c_k` with M = [[1,1],[1,2]]: numpy computes
it for many frames at once instead of looping in Python per word.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAGE_SIZE = 4096
FRAME_HEADER_SIZE = 24
FRAME_SIZE = PAGE_SIZE + FRAME_HEADER_SIZE
WAL_HEADER_SIZE = 32
WAL_MAGIC_LE = 0x377F0682
WAL_MAGIC_BE = 0x377F0683
WAL_VERSION = 3007000
_MASK = np.uint64(0xFFFFFFFF)
# Words checksummed per frame: the first 8 header bytes (page number, commit size) and the page.
_PAIRS = (8 + PAGE_SIZE) // 8


class WalError(Exception):
    """The WAL cannot be used as asked (bad header, frames that do not continue it)."""


def _matrix_powers(n: int) -> np.ndarray:
    """M^(n-1), M^(n-2), ..., M^0 as an (n, 2, 2) uint64 array; wraps mod 2^64, reduced mod 2^32 later."""
    powers = np.empty((n, 2, 2), dtype=np.uint64)
    current = np.eye(2, dtype=np.uint64)
    m = np.array([[1, 1], [1, 2]], dtype=np.uint64)
    for k in range(n - 1, -1, -1):
        powers[k] = current
        current = (m @ current) & _MASK
    return powers


_POWERS = _matrix_powers(_PAIRS)
_M_TOTAL = (np.array([[1, 1], [1, 2]], dtype=np.uint64) @ _POWERS[0]) & _MASK


def _words(data: np.ndarray, big_endian: bool) -> np.ndarray:
    return data.view(">u4" if big_endian else "<u4").astype(np.uint64)


def checksum_bytes(data: bytes, big_endian: bool, s1: int = 0, s2: int = 0) -> tuple[int, int]:
    """SQLite's walChecksumBytes, straightforwardly: for headers and tests."""
    fmt = (">" if big_endian else "<") + f"{len(data) // 4}I"
    words = struct.unpack(fmt, data)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def frame_contributions(frames: bytes, big_endian: bool) -> np.ndarray:
    """For each whole frame, the additive part of its checksum step, shape (n, 2)."""
    n = len(frames) // FRAME_SIZE
    if n == 0:
        return np.zeros((0, 2), dtype=np.uint64)
    raw = np.frombuffer(frames, dtype=np.uint8, count=n * FRAME_SIZE).reshape(n, FRAME_SIZE)
    body = np.concatenate([raw[:, :8], raw[:, FRAME_HEADER_SIZE:]], axis=1)
    words = _words(np.ascontiguousarray(body).reshape(-1), big_endian).reshape(n, _PAIRS, 2)
    c0 = words[:, :, 0]
    c1 = (words[:, :, 0] + words[:, :, 1]) & _MASK
    out = np.empty((n, 2), dtype=np.uint64)
    out[:, 0] = ((_POWERS[:, 0, 0] * c0).sum(axis=1) + (_POWERS[:, 0, 1] * c1).sum(axis=1)) & _MASK
    out[:, 1] = ((_POWERS[:, 1, 0] * c0).sum(axis=1) + (_POWERS[:, 1, 1] * c1).sum(axis=1)) & _MASK
    return out


def _step(s: tuple[int, int], contribution: np.ndarray) -> tuple[int, int]:
    m = _M_TOTAL
    s1, s2 = s
    n1 = (int(m[0, 0]) * s1 + int(m[0, 1]) * s2 + int(contribution[0])) & 0xFFFFFFFF
    n2 = (int(m[1, 0]) * s1 + int(m[1, 1]) * s2 + int(contribution[1])) & 0xFFFFFFFF
    return n1, n2


@dataclass(frozen=True, slots=True)
class WalHeader:
    magic: int
    page_size: int
    checkpoint_seq: int
    salt1: int
    salt2: int
    checksum: tuple[int, int]

    @property
    def big_endian(self) -> bool:
        return self.magic == WAL_MAGIC_BE

    @classmethod
    def parse(cls, data: bytes) -> WalHeader | None:
        """The header, or None when it is absent or invalid (SQLite then ignores the whole file)."""
        if len(data) < WAL_HEADER_SIZE:
            return None
        magic, version, page_size, seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:WAL_HEADER_SIZE])
        if magic not in (WAL_MAGIC_LE, WAL_MAGIC_BE) or version != WAL_VERSION:
            return None
        if checksum_bytes(data[:24], magic == WAL_MAGIC_BE) != (c1, c2):
            return None
        return cls(magic, page_size, seq, salt1, salt2, (c1, c2))

    @classmethod
    def new(cls, salt1: int, salt2: int, checkpoint_seq: int = 0) -> tuple[WalHeader, bytes]:
        head = struct.pack(">6I", WAL_MAGIC_LE, WAL_VERSION, PAGE_SIZE, checkpoint_seq, salt1, salt2)
        c = checksum_bytes(head, False)
        return cls(WAL_MAGIC_LE, PAGE_SIZE, checkpoint_seq, salt1, salt2, c), head + struct.pack(">2I", *c)


def frame_page_and_commit(frame: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    return struct.unpack_from(">2I", frame, offset)


@dataclass(slots=True)
class VerifiedPrefix:
    """What is known valid: `committed` frames end on a commit frame; `checksum` is the running
    checksum after frame `committed`; `commits` lists every commit frame number in order."""

    header: WalHeader | None
    committed: int
    checksum: tuple[int, int]
    commits: list[int]


class WalReader:
    """Verified access to one WAL file. Not thread-safe: callers serialise (the primary holds its lock)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = VerifiedPrefix(None, 0, (0, 0), [])

    def reset(self) -> None:
        self.state = VerifiedPrefix(None, 0, (0, 0), [])

    def refresh(self) -> VerifiedPrefix:
        """Extend the verified prefix with whatever valid committed frames were appended since."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            self.reset()
            return self.state
        try:
            header = WalHeader.parse(os.pread(fd, WAL_HEADER_SIZE, 0))
            if header is None or header.page_size != PAGE_SIZE:
                self.reset()
                return self.state
            if self.state.header != header:
                # A new WAL (after a checkpoint) or first look: verify from frame 1.
                self.state = VerifiedPrefix(header, 0, header.checksum, [])
            self._extend(fd, header)
        finally:
            os.close(fd)
        return self.state

    def _extend(self, fd: int, header: WalHeader) -> None:
        state = self.state
        chunk_frames = 1024
        pending: list[int] = []
        pending_checksum = state.checksum
        frame_no = state.committed
        while True:
            data = os.pread(fd, chunk_frames * FRAME_SIZE, WAL_HEADER_SIZE + frame_no * FRAME_SIZE)
            n = len(data) // FRAME_SIZE
            if n == 0:
                return
            contributions = frame_contributions(data[: n * FRAME_SIZE], header.big_endian)
            for i in range(n):
                pgno, commit, salt1, salt2, c1, c2 = struct.unpack_from(">6I", data, i * FRAME_SIZE)
                if pgno == 0 or salt1 != header.salt1 or salt2 != header.salt2:
                    return
                pending_checksum = _step(pending_checksum, contributions[i])
                if pending_checksum != (c1, c2):
                    return
                frame_no += 1
                if commit:
                    state.commits.append(frame_no)
                    state.committed = frame_no
                    state.checksum = pending_checksum
                    pending.clear()
            if n < chunk_frames:
                return

    def read_frames(self, start: int, end: int) -> bytes:
        """Raw frames [start, end] (1-based, inclusive); callers only ask for verified ones."""
        with open(self.path, "rb") as f:
            f.seek(WAL_HEADER_SIZE + (start - 1) * FRAME_SIZE)
            data = f.read((end - start + 1) * FRAME_SIZE)
        if len(data) != (end - start + 1) * FRAME_SIZE:
            raise WalError(f"WAL shorter than its verified frames ({start}..{end})")
        return data


def encode_frames(frames: bytes, header: WalHeader, checksum: tuple[int, int]) -> tuple[bytes, tuple[int, int]]:
    """Rewrite frames (page number, commit size and page kept) with this WAL's salts and a running
    checksum continuing from `checksum`; returns the bytes to append and the new running checksum."""
    n = len(frames) // FRAME_SIZE
    out = bytearray(frames[: n * FRAME_SIZE])
    # Salts and checksums are not part of the checksummed words, so contributions can be computed first.
    contributions = frame_contributions(bytes(out), header.big_endian)
    for i in range(n):
        checksum = _step(checksum, contributions[i])
        struct.pack_into(">4I", out, i * FRAME_SIZE + 8, header.salt1, header.salt2, *checksum)
    return bytes(out), checksum


def split_frames(data: bytes) -> list[tuple[int, int]]:
    """(page number, commit size) of each frame in data."""
    return [frame_page_and_commit(data, i * FRAME_SIZE) for i in range(len(data) // FRAME_SIZE)]
