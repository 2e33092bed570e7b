"""The continuous archive's objects and their names (written by `archive.py`, read by `pitr.py`).

  snapshots/G-T.db            the base file of generation G (the main file when G began); T = the
                              time (ms) G began, so every commit it holds was acknowledged by then
  frames/G/FIRST-LAST.seg     committed WAL frames FIRST..LAST of generation G, with commit times
                              (compaction merges consecutive ones into one; for a moment both the
                              merged one and its parts exist: readers take the widest, `cover`)
  frames/G/end-N              generation G finished with exactly N frames (all shipped before it)
  database.json               {"database_id": ...}: the primary database this archive belongs to

A segment is `MAGIC`, a 4-byte big-endian header length, a JSON header (generation, first, last,
the sha256 of the frames, and [commit frame, unix seconds] for each commit frame in it), then the
raw frames. A commit's time is when SQLite reported it committed to the primary (its wal hook), so
restoring to T yields every commit acknowledged by T and none after.
"""

from __future__ import annotations

import hashlib
import re

import msgspec

from edgenode.primary.wal import FRAME_SIZE

MAGIC = b"ENSEG001"
IDENTITY = "database.json"
SNAPSHOTS = "snapshots/"
FRAMES = "frames/"
_SNAPSHOT = re.compile(r"^snapshots/(\d{10})-(\d{13})\.db$")
_SEGMENT = re.compile(r"^frames/(\d{10})/(\d{10})-(\d{10})\.seg$")
_END = re.compile(r"^frames/(\d{10})/end-(\d{10})$")


class ArchiveFormatError(Exception):
    """An archive object is damaged or not one of ours."""


class SegmentHeader(msgspec.Struct, forbid_unknown_fields=True):
    generation: int
    first: int
    last: int
    sha256: str
    commits: list[tuple[int, float]]


def snapshot_key(generation: int, began_at: float) -> str:
    return f"{SNAPSHOTS}{generation:010d}-{int(began_at * 1000):013d}.db"


def segment_key(generation: int, first: int, last: int) -> str:
    return f"{FRAMES}{generation:010d}/{first:010d}-{last:010d}.seg"


def end_key(generation: int, frames: int) -> str:
    return f"{FRAMES}{generation:010d}/end-{frames:010d}"


def encode_segment(generation: int, first: int, frames: bytes, commits: list[tuple[int, float]]) -> bytes:
    last = first + len(frames) // FRAME_SIZE - 1
    header = msgspec.json.encode(SegmentHeader(generation, first, last, hashlib.sha256(frames).hexdigest(), commits))
    return MAGIC + len(header).to_bytes(4, "big") + header + frames


def decode_segment(data: bytes, key: str = "segment") -> tuple[SegmentHeader, memoryview]:
    if data[: len(MAGIC)] != MAGIC:
        raise ArchiveFormatError(f"{key} is not an archive segment")
    n = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 4], "big")
    start = len(MAGIC) + 4
    try:
        header = msgspec.json.decode(data[start : start + n], type=SegmentHeader)
    except msgspec.DecodeError as exc:
        raise ArchiveFormatError(f"{key}: bad header: {exc}") from exc
    frames = memoryview(data)[start + n :]
    if len(frames) != (header.last - header.first + 1) * FRAME_SIZE:
        raise ArchiveFormatError(
            f"{key} holds {len(frames)} bytes of frames, its header says {header.first}..{header.last}"
        )
    if hashlib.sha256(frames).hexdigest() != header.sha256:
        raise ArchiveFormatError(f"{key}: frames do not match their checksum (damaged object)")
    return header, frames


class Listing(msgspec.Struct):
    """What an archive holds, parsed from its keys."""

    snapshots: list[tuple[int, float, str]]  # (generation, began_at, key), by generation
    segments: dict[int, list[tuple[int, int, str]]]  # generation -> [(first, last, key)] by first
    ends: dict[int, int]  # generation -> frames


def parse_listing(keys: list[str]) -> Listing:
    listing = Listing([], {}, {})
    for key in keys:
        if m := _SNAPSHOT.match(key):
            listing.snapshots.append((int(m[1]), int(m[2]) / 1000, key))
        elif m := _SEGMENT.match(key):
            listing.segments.setdefault(int(m[1]), []).append((int(m[2]), int(m[3]), key))
        elif m := _END.match(key):
            listing.ends[int(m[1])] = int(m[2])
    listing.snapshots.sort()
    for segments in listing.segments.values():
        segments.sort()
    return listing


Segment = tuple[int, int, str]  # (first, last, key)


def cover(segments: list[Segment], after: int = 0) -> tuple[list[Segment], list[Segment]]:
    """The fewest segments holding frames after+1..N without a gap (each next one reaching furthest),
    and the others lying inside that run: copies a compaction merged but did not delete yet (killed
    between the two) or a segment shipped twice. Segments after a gap are in neither list."""
    chosen: list[Segment] = []
    ordered = sorted(segments)
    last, i = after, 0
    while True:
        best: Segment | None = None
        while i < len(ordered) and ordered[i][0] <= last + 1:
            if ordered[i][1] > last and (best is None or ordered[i][1] > best[1]):
                best = ordered[i]
            i += 1
        if best is None:
            break
        chosen.append(best)
        last = best[1]
    picked = set(chosen)
    return chosen, [s for s in ordered if s not in picked and after < s[1] <= last]


def shipped_through(segments: list[tuple[int, int, str]]) -> int:
    """The last frame of the contiguous run of segments from frame 1 (0 if frame 1 is missing)."""
    last = 0
    for first, end, _ in segments:
        if first > last + 1:
            break
        last = max(last, end)
    return last
