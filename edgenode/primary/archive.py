"""The primary's continuous archive: a base snapshot plus every committed WAL frame, with commit times.

One background thread ("archiver") ships, in order, to a directory or an S3-compatible bucket
(`edgenode.objectstore`; object names and formats in `archive_format.py`):
  1. a snapshot of the current generation's base when the archive has no usable chain (first start,
     or frames lost to a gap), and again at the first generation after `snapshot_interval` or once
     the frames shipped since the last snapshot exceed `snapshot_ratio` times its size (so a restore
     never replays much more than the database's size of frames, whatever the write rate);
  2. the committed frames of each generation as segments, each as soon as they are durable (the
     thread wakes on every commit: the archive lag is the upload time plus the batch in flight);
  3. an end marker once a finished generation is shipped whole, then the next generation.
Each object appears whole or not at all, and the shipped position is read back from the archive on
start, so a kill -9 at any moment resumes where the archive ends (a segment shipped twice is
harmless: a restore skips frames it has). Finished generations are read from `generations/` while
the primary keeps them (`keep_generations`); an archiver that falls further behind starts a new
chain with a fresh snapshot and says which times can no longer be restored.

Commit times are taken from the store's commit listener (SQLite's wal hook, after the commit is
durable, before it is acknowledged) and appended to `archive-commit-times` (16 bytes, no fsync: it
survives a kill -9 of the process, and a restart ships the unshipped commits with their own times).
A commit with no recorded time (after a machine crash) gets the time it is shipped: a later time,
so a restore to T never includes a commit acknowledged after T, but may miss one made just before.

A second thread ("archive-compactor") merges the many small segments of each finished generation
into few (up to `merge_frames` frames each, every frame and commit time kept, so no restorable
moment is lost): the merged object first, its parts deleted after it is visible. A kill -9 in
between leaves both, which readers handle (`archive_format.cover`) and the next start finishes. It
is a thread of its own because merging a generation of a thousand one-commit segments takes a
second: on the shipping thread that second became archive lag (p99 1.4 s at 200 writes/s).

Retention: after each snapshot, everything older than the newest snapshot that began before
`now - retention` is deleted; any moment within the retention window stays restorable.
"""

from __future__ import annotations

import bisect
import logging
import os
import struct
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import msgspec

from edgenode.objectstore import Target
from edgenode.primary.archive_format import (
    FRAMES,
    IDENTITY,
    cover,
    decode_segment,
    encode_segment,
    end_key,
    parse_listing,
    segment_key,
    shipped_through,
    snapshot_key,
)
from edgenode.primary.generations import CheckpointNeeded, Frames, Gone, PrimaryStore, crash_point
from edgenode.primary.wal import FRAME_SIZE

log = logging.getLogger("edgenode.primary.archive")

MAX_SEGMENT_FRAMES = 4096  # 16 MiB per object at most
MERGED_SEGMENT_FRAMES = 16_384  # 64 MiB: a compacted generation is one object up to there
MAX_REMEMBERED_COMMITS = 200_000
SNAPSHOT_TMP = "archive-snapshot.partial"
TIMES_FILE = "archive-commit-times"
_TIME_RECORD = struct.Struct("<IId")  # generation, frames after the commit, unix seconds
_COMPACT_TIMES_AT = 1 << 20


class ArchiveMismatch(Exception):
    """The target holds another database's archive; nothing is shipped there."""


class Archiver:
    def __init__(
        self,
        store: PrimaryStore,
        target: Target,
        *,
        retention: float,
        snapshot_interval: float,
        max_segment_frames: int = MAX_SEGMENT_FRAMES,
        snapshot_ratio: float = 0.0,
        merge_frames: int = MERGED_SEGMENT_FRAMES,
    ) -> None:
        self.store = store
        self.target = target
        self.retention = retention
        self.snapshot_interval = snapshot_interval
        self.max_segment_frames = max_segment_frames
        self.snapshot_ratio = snapshot_ratio
        self.merge_frames = merge_frames
        self._snapshot_size = 0  # bytes of the newest snapshot, and of segments shipped since it
        self._since_snapshot = 0
        self._to_compact: deque[int] = deque()  # finished generations whose segments may be merged
        self._mutex = threading.Lock()
        # (generation, frames after commit) and when SQLite reported the commit durable.
        self._seen: list[tuple[int, int]] = []
        self._seen_at: list[float] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._compactor: threading.Thread | None = None
        self._compact_wake = threading.Event()
        self._generation = 0  # shipped position: frames 1.._frame of _generation are in the archive
        self._frame = 0
        self._need_snapshot = False
        self._last_snapshot: tuple[int, float] | None = None  # (generation, began_at)
        self._lags: deque[float] = deque(maxlen=20_000)
        self.last_error: str | None = None
        self.last_shipped_at: float | None = None
        # "snapshots" counts what the archive holds (read back on start); the rest count this run's work.
        self.stats = {
            "segments": 0,
            "frames": 0,
            "bytes": 0,
            "snapshots": 0,
            "snapshots_shipped": 0,
            "deleted": 0,
            "merged": 0,
            "merged_away": 0,
        }
        self._times_path = store.data_dir / TIMES_FILE
        self._times_fd: int | None = None
        store.add_commit_listener(self.on_commit)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """After the store is open (its generation is known), before it serves writes."""
        self._load_times()
        self._thread = threading.Thread(target=self._run, name="archiver", daemon=True)
        self._thread.start()
        self._compactor = threading.Thread(target=self._run_compactor, name="archive-compactor", daemon=True)
        self._compactor.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after a last attempt to ship what is committed (a clean shutdown loses nothing)."""
        self._stop.set()
        self._wake.set()
        self._compact_wake.set()
        for thread in (self._thread, self._compactor):
            if thread:
                thread.join(timeout)
        self.target.close()
        with self._mutex:
            if self._times_fd is not None:
                os.close(self._times_fd)
                self._times_fd = None

    def on_commit(self, generation: int, frames: int) -> None:
        if frames == 0:
            return  # a rollover's notice: the new generation's start is store.began_at
        now = time.time()
        with self._mutex:
            if len(self._seen) < MAX_REMEMBERED_COMMITS:
                self._seen.append((generation, frames))
                self._seen_at.append(now)
            if self._times_fd is not None:
                os.write(self._times_fd, _TIME_RECORD.pack(generation, frames, now))
        self._wake.set()

    def _load_times(self) -> None:
        """Commit times recorded before a restart, for commits not shipped yet."""
        try:
            data = self._times_path.read_bytes()
        except FileNotFoundError:
            data = b""
        n = len(data) // _TIME_RECORD.size  # a torn last record is dropped
        records = sorted(
            ((g, f), t) for g, f, t in (_TIME_RECORD.unpack_from(data, i * _TIME_RECORD.size) for i in range(n))
        )
        with self._mutex:
            self._seen = [k for k, _ in records] + self._seen
            self._seen_at = [t for _, t in records] + self._seen_at
            self._rewrite_times()

    def _rewrite_times(self) -> None:
        """Keep only unshipped records (caller holds the mutex); the file never grows without bound."""
        tmp = self._times_path.with_name(TIMES_FILE + ".tmp")
        with open(tmp, "wb") as out:
            out.write(b"".join(_TIME_RECORD.pack(g, f, t) for (g, f), t in zip(self._seen, self._seen_at, strict=True)))
        os.replace(tmp, self._times_path)
        if self._times_fd is not None:
            os.close(self._times_fd)
        self._times_fd = os.open(self._times_path, os.O_WRONLY | os.O_APPEND)

    # -- status --------------------------------------------------------------------------------

    def lag(self) -> float:
        """Seconds since the oldest commit not yet in the archive (0 when everything is shipped)."""
        with self._mutex:
            i = bisect.bisect_right(self._seen, (self._generation, self._frame))
            return max(0.0, time.time() - self._seen_at[i]) if i < len(self._seen) else 0.0

    def status(self) -> dict[str, Any]:
        with self._mutex:
            lags = sorted(self._lags)
        return {
            "target": self.target.url,
            "generation": self._generation,
            "frame": self._frame,
            "lag_seconds": round(self.lag(), 3),
            "recent_lag_p50_seconds": round(lags[len(lags) // 2], 4) if lags else None,
            "recent_lag_p99_seconds": round(lags[min(len(lags) - 1, len(lags) * 99 // 100)], 4) if lags else None,
            "last_shipped_at": self.last_shipped_at,
            "last_snapshot_generation": self._last_snapshot[0] if self._last_snapshot else None,
            "last_error": self.last_error,
            **self.stats,
        }

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        backoff = 0.2
        resumed = False
        while True:
            stopping = self._stop.is_set()
            try:
                if not resumed:
                    self._resume()
                    resumed = True
                while self._step():
                    pass
                self.last_error = None
                backoff = 0.2
            except Exception as exc:
                self.last_error = str(exc)
                log.warning("archive upload failed (retrying in %.1f s): %s", backoff, exc)
                if stopping or self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, 30.0)
                continue
            if stopping:
                return
            self._wake.wait(1.0)
            self._wake.clear()

    def _resume(self) -> None:
        """Find where the archive ends (it is the only record of what was shipped)."""
        self.target.clean()
        sizes = dict(self.target.list(""))
        keys = list(sizes)
        ours = {"database_id": self.store.database_id}
        if IDENTITY in keys:
            theirs = msgspec.json.decode(self.target.get_bytes(IDENTITY))
            if theirs.get("database_id") != ours["database_id"]:
                # Generation numbers of two databases would mix: a restored or recreated primary
                # (a new database id) needs an archive location of its own.
                raise ArchiveMismatch(
                    f"{self.target.url} archives another database ({theirs.get('database_id')}, this one is "
                    f"{ours['database_id']}); point --archive at a new location"
                )
        else:
            self.target.put_bytes(IDENTITY, msgspec.json.encode(ours))
        listing = parse_listing(keys)
        self.stats["snapshots"] = len(listing.snapshots)
        # Merges a kill -9 interrupted, or never began (the primary stopped first).
        self._compact_wake.set()
        self._to_compact.extend(
            g for g in sorted(listing.segments) if g in listing.ends and len(listing.segments[g]) > 1
        )
        current = self.store.generation
        usable = [s for s in listing.snapshots if s[0] <= current]
        if not usable:
            self._need_snapshot = True
            self._generation, self._frame = current, 0
            return
        generation, began_at, key = usable[-1]
        self._last_snapshot = (generation, began_at)
        self._snapshot_size = sizes[key]
        self._since_snapshot = sum(
            sizes[k] for g, segments in listing.segments.items() if g >= generation for _, _, k in segments
        )
        while generation < current and generation in listing.ends:
            generation += 1
        self._generation = generation
        self._frame = shipped_through(listing.segments.get(generation, []))
        log.info("archive %s resumes at generation %d frame %d", self.target.url, self._generation, self._frame)

    def _step(self) -> bool:
        """Ship the next piece; False when the archive has everything committed."""
        if self._need_snapshot:
            self._snapshot(new_chain=True)
            return True
        position = self.store.durable_position()
        if position is None:
            return False  # a rollover is running: its notice wakes us
        current, durable = position
        last = self._last_snapshot
        due = last is not None and last[0] < current and time.time() - last[1] >= self.snapshot_interval
        if last is not None and last[0] < current and self.snapshot_ratio > 0:
            due = due or self._since_snapshot >= self.snapshot_ratio * self._snapshot_size
        if due and self._generation == current:
            # A new generation's base after the interval: restores of later times start here.
            self._snapshot(new_chain=False)
            return True
        if self._generation == current and durable <= self._frame:
            return False
        start = self._frame + 1
        result = self.store.pull(self._generation, start, start + self.max_segment_frames, extend=False)
        if isinstance(result, Frames):
            self._ship(self._generation, result)
            return True
        if isinstance(result, CheckpointNeeded):
            if self._generation < result.generation:  # the generation is finished and shipped whole
                self.target.put_bytes(end_key(self._generation, self._frame), b"")
                crash_point("archive-end-marked")
                self._to_compact.append(self._generation)
                self._compact_wake.set()
                self._generation, self._frame = self._generation + 1, 0
                return True
            return False
        assert isinstance(result, Gone)
        if self._generation < current:
            log.warning(
                "archive: generation %d is no longer kept locally (%s); starting a new chain at generation %d: "
                "times between the last shipped commit and now cannot be restored",
                self._generation,
                result.reason,
                current,
            )
            self._need_snapshot = True
        return True

    def _ship(self, generation: int, frames: Frames) -> None:
        data = frames.data
        now = time.time()
        commits: list[tuple[int, float]] = []
        with self._mutex:
            for i in range(len(data) // FRAME_SIZE):
                if int.from_bytes(data[i * FRAME_SIZE + 4 : i * FRAME_SIZE + 8], "big"):
                    frame = frames.first + i
                    j = bisect.bisect_left(self._seen, (generation, frame))
                    seen = j < len(self._seen) and self._seen[j][0] == generation
                    commits.append((frame, self._seen_at[j] if seen else now))
        body = encode_segment(generation, frames.first, data, commits)
        self.target.put_bytes(segment_key(generation, frames.first, frames.last), body)
        crash_point("archive-segment-shipped")
        done = time.time()
        with self._mutex:
            self._generation, self._frame = generation, frames.last
            cut = bisect.bisect_right(self._seen, (generation, frames.last))
            del self._seen[:cut]
            del self._seen_at[:cut]
            if self._times_fd is not None and os.fstat(self._times_fd).st_size > _COMPACT_TIMES_AT:
                self._rewrite_times()
            self._lags.extend(done - t for _, t in commits)
        self.last_shipped_at = done
        self.stats["segments"] += 1
        self.stats["frames"] += frames.last - frames.first + 1
        self.stats["bytes"] += len(body)
        self._since_snapshot += len(body)

    def _snapshot(self, *, new_chain: bool) -> None:
        tmp = self.store.data_dir / SNAPSHOT_TMP
        try:
            generation, began_at, sha256 = self.store.copy_base(tmp)
            self.target.put_file(snapshot_key(generation, began_at), tmp, sha256)
            self._snapshot_size, self._since_snapshot = tmp.stat().st_size, 0
        finally:
            tmp.unlink(missing_ok=True)
        crash_point("archive-snapshot-shipped")
        log.info("archive: snapshot of generation %d shipped to %s", generation, self.target.url)
        self.stats["snapshots"] += 1
        self.stats["snapshots_shipped"] += 1
        self._last_snapshot = (generation, began_at)
        if new_chain:
            with self._mutex:
                self._generation, self._frame = generation, 0
            self._need_snapshot = False
        self._prune()

    def _prune(self) -> None:
        cutoff = time.time() - self.retention
        listing = parse_listing([key for key, _ in self.target.list("")])
        old = [s for s in listing.snapshots if s[1] <= cutoff]
        if not old:
            return
        anchor = old[-1][0]  # restores to any time after the cutoff start from this one or a later one
        doomed = [key for generation, _, key in listing.snapshots if generation < anchor]
        for generation, segments in listing.segments.items():
            if generation < anchor:
                doomed.extend(key for _, _, key in segments)
        doomed.extend(end_key(g, n) for g, n in listing.ends.items() if g < anchor)
        for key in doomed:
            self.target.delete(key)
        self.stats["deleted"] += len(doomed)
        self.stats["snapshots"] -= sum(1 for generation, _, _ in listing.snapshots if generation < anchor)

    def _run_compactor(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                generation = self._to_compact.popleft()
            except IndexError:
                self._compact_wake.wait(5.0)
                self._compact_wake.clear()
                continue
            try:
                self._compact(generation)
                backoff = 1.0
            except Exception as exc:
                # Retried later; the archive stays restorable meanwhile (a merge is all or nothing to
                # readers). A generation pruned under it lists empty next time and is dropped.
                log.warning("archive compaction of generation %d failed (retrying): %s", generation, exc)
                self._to_compact.append(generation)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)

    def _compact(self, generation: int) -> None:
        """Merge the first run of small segments of a finished generation into one (then requeue the
        generation if more runs are left). Every frame and commit time is kept: a lossless rewrite."""
        listing = parse_listing([key for key, _ in self.target.list(f"{FRAMES}{generation:010d}/")])
        chosen, redundant = cover(listing.segments.get(generation, []))
        run: list[tuple[int, int, str]] = []
        for segment in chosen:
            if run and segment[1] - run[0][0] + 1 > self.merge_frames:
                if len(run) > 1:
                    self._to_compact.appendleft(generation)  # more runs after this one
                    break
                run = []
            run.append(segment)
        if len(run) > 1:
            frames = bytearray()
            commits: list[tuple[int, float]] = []
            seen = run[0][0] - 1
            for first, last, key in run:
                header, data = decode_segment(self.target.get_bytes(key), key)
                frames += data[(seen + 1 - first) * FRAME_SIZE :]
                commits.extend((frame, at) for frame, at in header.commits if frame > seen)
                seen = last
            first = run[0][0]
            self.target.put_bytes(
                segment_key(generation, first, seen), encode_segment(generation, first, bytes(frames), commits)
            )
            crash_point("archive-compaction-merged")
            redundant.extend(run)
            self.stats["merged"] += 1
        for _, _, key in redundant:
            self.target.delete(key)
        self.stats["merged_away"] += len(redundant)


def archive_from_settings(store: PrimaryStore, settings: Any) -> Archiver | None:
    if not settings.archive:
        return None
    from edgenode.objectstore import open_target

    target = open_target(
        settings.archive,
        endpoint=settings.archive_s3_endpoint,
        region=settings.archive_s3_region,
        multipart_threshold=settings.archive_s3_multipart_threshold,
    )
    if isinstance(getattr(target, "root", None), Path):
        target.root.mkdir(parents=True, exist_ok=True)  # type: ignore[attr-defined]
    return Archiver(
        store,
        target,
        retention=settings.archive_retention,
        snapshot_interval=settings.archive_snapshot_interval,
        snapshot_ratio=settings.archive_snapshot_ratio,
    )
