"""Point-in-time restore: rebuild a primary's database as it was at time T from its archive.

The plan (objects in `archive_format.py`): the newest snapshot whose generation began at or before
T, then the archived frames of that generation and the following ones, in order, up to the last
commit acknowledged at or before T. The frames are re-salted and re-checksummed into one WAL next
to the snapshot copy (later frames of a page win, each commit frame carries the database size, so
one WAL over several generations gives the same pages as checkpointing them one by one) and
SQLite's own checkpoint folds it into the file: every frame must count, or the restore fails.

The result goes through `backup.restore_built` like any restore: staged inside the data dir,
verified (integrity_check), fsynced, renamed into place, behind the half-restored marker.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw

from edgenode.backup import STANDALONE, BackupError, RestoreReport, restore_built
from edgenode.objectstore import ObjectStoreError, open_target
from edgenode.primary.archive_format import FRAMES, ArchiveFormatError, cover, decode_segment, parse_listing
from edgenode.primary.wal import FRAME_SIZE, WalHeader, encode_frames

Progress = Callable[[int, int], None]
_FLUSH_BYTES = 8 << 20


def parse_time(text: str) -> float:
    """Unix seconds, or ISO 8601 (a time without an offset is UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackupError(
            f"--to-time {text!r}: expected ISO 8601 (2026-12-02T10:30:00Z) or unix seconds (1796207400.5)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class PitrReport:
    restore: RestoreReport
    to_time: float
    snapshot_generation: int
    generation: int  # the restored state ends at this generation's frame
    frame: int
    last_commit_at: float | None  # the newest commit included (None: the snapshot alone)
    commits: int
    note: str

    def as_dict(self) -> dict[str, object]:
        return {
            **self.restore.as_dict(),
            "to_time": self.to_time,
            "snapshot_generation": self.snapshot_generation,
            "generation": self.generation,
            "frame": self.frame,
            "last_commit_at": self.last_commit_at,
            "commits": self.commits,
            "note": self.note,
        }


class _WalWriter:
    """Appends whole transactions to a fresh WAL with its own salts and running checksum."""

    def __init__(self, path: Path) -> None:
        self.header, raw = WalHeader.new(secrets.randbits(32), secrets.randbits(32))
        self.checksum = self.header.checksum
        self.file = open(path, "wb")
        self.file.write(raw)
        self.frames = 0

    def append(self, frames: bytes) -> None:
        data, self.checksum = encode_frames(frames, self.header, self.checksum)
        self.file.write(data)
        self.frames += len(data) // FRAME_SIZE

    def close(self) -> None:
        self.file.flush()
        self.file.close()


def restore_to_time(
    url: str,
    to_time: float,
    data_dir: Path,
    *,
    kind: str = STANDALONE,
    force: bool = False,
    endpoint: str | None = None,
    region: str = "us-east-1",
    progress: Progress | None = None,
) -> PitrReport:
    try:
        target = open_target(url, endpoint=endpoint, region=region)
    except ObjectStoreError as exc:
        raise BackupError(str(exc)) from exc
    try:
        listed = target.list("")
    except Exception as exc:
        target.close()
        raise BackupError(f"cannot list the archive {url}: {exc}") from exc
    sizes = dict(listed)
    listing = parse_listing(list(sizes))
    if not listing.snapshots:
        target.close()
        raise BackupError(f"{url} holds no archive snapshot (is it a primary's --archive?)")
    usable = [s for s in listing.snapshots if s[1] <= to_time]
    if not usable:
        target.close()
        raise BackupError(
            f"{iso(to_time)} is before the archive's earliest restorable time {iso(listing.snapshots[0][1])}"
        )
    snapshot_generation, _, snapshot_key = usable[-1]
    outcome: dict[str, object] = {}

    def build(staging: Path) -> int:
        total = sizes[snapshot_key] + sum(
            sizes[key] for g, segments in listing.segments.items() if g >= snapshot_generation for _, _, key in segments
        )
        done = target.get_to_file(snapshot_key, staging)
        if progress is not None:
            progress(done, total)
        wal_path = staging.with_name(staging.name + "-wal")
        wal = _WalWriter(wal_path)
        commits, last_at = 0, None
        generation, frame = snapshot_generation, 0
        reached = False  # a commit after to_time was found: the state at to_time is complete
        accepted = bytearray()  # committed frames not yet re-checksummed into the WAL (written in batches)
        try:
            while not reached:
                pending = bytearray()  # frames of a transaction whose commit frame is not seen yet
                seen = 0  # frames of `generation` read so far (committed or pending)
                # The widest segments first: a merged one (compaction) over its parts, never both.
                plan = cover(listing.segments.get(generation, []))[0]
                relisted = False
                while plan:
                    first, last, key = plan.pop(0)
                    try:
                        body = target.get_bytes(key)
                    except Exception:
                        if relisted:
                            raise
                        # Compaction replaced it with a merged segment since we listed: list again.
                        prefix = f"{FRAMES}{generation:010d}/"
                        fresh = target.list(prefix)
                        sizes.update(fresh)
                        plan = cover(parse_listing([k for k, _ in fresh]).segments.get(generation, []), seen)[0]
                        relisted = True
                        continue
                    try:
                        header, frames = decode_segment(body, key)
                    except ArchiveFormatError as exc:
                        raise BackupError(f"archive object {key} is damaged: {exc}") from exc
                    done += sizes[key]
                    times = dict(header.commits)
                    for i in range(seen + 1 - first, last - first + 1):
                        number = first + i
                        raw = frames[i * FRAME_SIZE : (i + 1) * FRAME_SIZE]
                        if number in times:
                            if times[number] > to_time:
                                reached = True
                                break
                            pending += raw
                            accepted += pending
                            pending.clear()
                            if len(accepted) >= _FLUSH_BYTES:
                                wal.append(bytes(accepted))
                                accepted.clear()
                            commits, last_at, frame = commits + 1, times[number], number
                        else:
                            pending += raw
                        seen = number
                    if progress is not None:
                        progress(min(done, total), total)
                    if reached:
                        break
                if reached:
                    break
                end = listing.ends.get(generation)
                if end is None or seen < end:
                    later = [g for g in listing.segments if g > generation] + [
                        s[0] for s in listing.snapshots if s[0] > generation
                    ]
                    if later:
                        raise BackupError(
                            f"the archive lacks frames {seen + 1}.. of generation {generation} (a gap: the archiver "
                            f"fell behind the primary's kept generations); {iso(to_time)} cannot be restored — "
                            f"the nearest earlier restorable time is {iso(last_at or usable[-1][1])}"
                        )
                    break  # the end of the archive: to_time is after its last commit
                generation, frame = generation + 1, 0
            wal.append(bytes(accepted))
            wal.close()
            _fold_wal(staging, wal.frames)
            outcome.update(generation=generation, frame=frame, commits=commits, last_at=last_at, reached=reached)
        finally:
            if not wal.file.closed:
                wal.file.close()
            target.close()
        return staging.stat().st_size

    again = f"--to-time {to_time!r}"
    report = restore_built(build, url, data_dir, kind=kind, force=force, again=again)
    last_at = outcome["last_at"]
    note = ""
    if not outcome["reached"]:
        note = (
            f"{iso(to_time)} is after the archive's last commit"
            + (f" ({iso(last_at)})" if isinstance(last_at, float) else "")
            + ": restored everything archived"
        )
    return PitrReport(
        restore=report,
        to_time=to_time,
        snapshot_generation=snapshot_generation,
        generation=int(outcome["generation"]),  # type: ignore[call-overload]
        frame=int(outcome["frame"]),  # type: ignore[call-overload]
        last_commit_at=last_at if isinstance(last_at, float) else None,
        commits=int(outcome["commits"]),  # type: ignore[call-overload]
        note=note,
    )


def _fold_wal(db_path: Path, frames: int) -> None:
    """Checkpoint the built WAL into the file; every frame must be taken (SQLite checks each checksum)."""
    conn = apsw.Connection(str(db_path))
    try:
        if frames:
            busy, in_wal, moved = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            if busy or in_wal != frames or moved != frames:
                raise BackupError(f"the rebuilt WAL holds {in_wal} valid frames of {frames} written")
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()
    for suffix in ("-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
