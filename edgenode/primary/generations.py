"""The primary's on-disk state: one SQLite database in WAL mode, numbered generations, archives.

Layout under the data directory:
  primary.db (+ -wal, -shm)   the live database; the main file is the current generation's base
  primary-state.json          {"generation": G, "rollover_to": G+1 | null, "database_id": "<uuid>"}
  generations/G.frames        the committed frames of finished generation G (raw WAL frames)

Every connection runs with `wal_autocheckpoint=0` and `SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`, so within
a generation nothing but a rollover ever writes the main file and WAL frame N is sync frame N.

Crash safety (kill -9 at any point):
- writes and pushes: SQLite's own WAL recovery decides what is committed; pushed frames are
  appended with valid salts and checksums, so a torn push is an uncommitted tail SQLite ignores.
- rollover: archive the frames (temp file, fsync, rename), then record the intent
  (`rollover_to`), then checkpoint(TRUNCATE), then record the new generation. A restart that finds
  an intent finishes the checkpoint, which is idempotent, before serving anything.
"""

from __future__ import annotations

import bisect
import fcntl
import logging
import os
import secrets
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import apsw
import msgspec

from edgenode.durable import atomic_write, fsync_dir
from edgenode.primary.wal import (
    FRAME_SIZE,
    PAGE_SIZE,
    WAL_HEADER_SIZE,
    WalError,
    WalHeader,
    WalReader,
    encode_frames,
    split_frames,
)
from edgenode.rwlock import LockTimeout, RWLock

log = logging.getLogger("edgenode.primary")

DB_NAME = "primary.db"
STATE_NAME = "primary-state.json"
ARCHIVE_DIR = "generations"
# A response may run past the asked range to end on a commit frame, up to this many frames; only a
# transaction larger than this is served in pieces that do not end on a commit frame.
MAX_FRAMES_PER_RESPONSE = 4096
LOCK_TIMEOUT = 10.0
BACKGROUND_ROLLOVER_WAIT = 1.0
PENDING_PUSH_TTL = 60.0


def crash_point(name: str) -> None:
    """Die by SIGKILL here when EDGENODE_PRIMARY_CRASH_AT names this point: lets the crash tests hit
    the narrow windows inside a rollover or push deterministically, with a real kill -9."""
    if os.environ.get("EDGENODE_PRIMARY_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class State(msgspec.Struct):
    generation: int
    rollover_to: int | None = None
    # (size, mtime_ns) of the main file when the generation started: nothing but our own rollover
    # writes that file, so a difference means something else checkpointed into it.
    base: tuple[int, int] | None = None
    # Minted with the state file and kept for its life; `/info` reports it so a replica notices a
    # different database behind the same URL (a wiped and recreated primary), which the sync
    # protocol itself cannot tell.
    database_id: str | None = None


@dataclass(frozen=True, slots=True)
class Frames:
    data: bytes
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class CheckpointNeeded:
    """Nothing (more) to serve in the asked generation: the client's 400 answer."""

    generation: int
    max_frame_no: int


@dataclass(frozen=True, slots=True)
class Gone:
    """The asked generation or position cannot be served: 410, the replica must re-bootstrap."""

    reason: str


class NotFound(Exception):
    pass


class BadRequest(Exception):
    """The request itself is malformed (400); anything else unexpected is the server's trouble (503)."""


class PushReply(msgspec.Struct):
    status: str
    generation: int
    max_frame_no: int
    baton: str | None


@dataclass(slots=True)
class _PendingPush:
    baton: str
    generation: int
    first: int
    data: bytes
    expires: float


class PrimaryStore:
    """Owns the database files; every method is synchronous and meant for worker threads."""

    def __init__(self, data_dir: Path, *, generation_max_frames: int = 2000, keep_generations: int = 8) -> None:
        self.data_dir = data_dir
        self.db_path = data_dir / DB_NAME
        self.wal_path = data_dir / (DB_NAME + "-wal")
        self.shm_path = data_dir / (DB_NAME + "-shm")
        self.state_path = data_dir / STATE_NAME
        self.archive_dir = data_dir / ARCHIVE_DIR
        self.generation_max_frames = generation_max_frames
        self.keep_generations = keep_generations
        self.lock = RWLock()
        self._reader = WalReader(self.wal_path)
        self._reader_mutex = threading.Lock()
        self._state = State(generation=1)
        self._control: apsw.Connection | None = None
        self._commit_listeners: list[Callable[[int, int], None]] = []
        self._archive_commits: dict[int, list[int]] = {}
        self._pending: _PendingPush | None = None
        # Frames SQLite itself reported committed (wal hook, recovery at open, our pushes). A commit
        # frame can be in the file, checksum-valid, before its commit has finished and synced; serving
        # stops at this number so a replica never holds a frame the primary could still lose.
        self._durable = 0
        self._lock_fd: int | None = None
        # One descriptor of primary.db kept open for the store's life: closing *any* descriptor of a
        # file drops every POSIX lock this process holds on it (SQLite's included), so exports and
        # archive snapshots read through this one instead of opening and closing their own.
        self._base_fd: int | None = None
        self._shm_fd: int | None = None  # the same, for the push path's write to the -shm header
        self._began_at = 0.0
        self._rollover_wanted = threading.Event()
        self._stop = threading.Event()
        self._rollover_thread: threading.Thread | None = None
        self.stats = {"rollovers": 0, "push_conflicts": 0, "pushes": 0, "commits": 0}
        self._stats_lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # One primary per data directory: a second process would checkpoint, push and roll over
        # under the first one's feet. The kernel drops the lock when the holder dies, even by kill -9.
        self._lock_fd = os.open(self.data_dir / "primary.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(f"another primary is already running on {self.data_dir}") from None
        self.archive_dir.mkdir(exist_ok=True)
        fresh = not self.db_path.exists() or self.db_path.stat().st_size == 0
        if fresh:
            self._create()
        self._control = self.connect()
        self._base_fd = os.open(self.db_path, os.O_RDONLY)
        # A file brought in rollback-journal mode (a restored backup) turns WAL in connect(), but
        # its -shm only appears with the first read: make it exist before taking a descriptor.
        self._control.execute("SELECT count(*) FROM sqlite_master").fetchall()
        # The control connection keeps the -shm in existence for the store's life.
        self._shm_fd = os.open(self.shm_path, os.O_RDWR)
        page_size = self._control.execute("PRAGMA page_size").fetchall()[0][0]
        if page_size != PAGE_SIZE:
            raise RuntimeError(f"{self.db_path} has page size {page_size}; the sync protocol needs {PAGE_SIZE}")
        if self.state_path.exists():
            self._state = msgspec.json.decode(self.state_path.read_bytes(), type=State)
            # Written when the generation began (or later, by a crash recovery): an upper bound.
            self._began_at = self.state_path.stat().st_mtime
        else:
            # A database without our state (first start, or one brought from elsewhere): its WAL
            # is folded into the main file so that file can be generation 1's base.
            self._checkpoint_truncate()
            self._start_generation(1)
        if self._state.database_id is None:  # a state file from before database ids
            self._write_state(msgspec.structs.replace(self._state, database_id=uuid.uuid4().hex))
        if self._state.rollover_to is not None:
            log.warning("finishing the rollover to generation %d interrupted by a crash", self._state.rollover_to)
            self._checkpoint_truncate()
            self._start_generation(self._state.rollover_to)
        if self._state.base is not None and self._state.base != self._base_fingerprint():
            # Another SQLite connection checkpointed (e.g. closed without NO_CKPT_ON_CLOSE): the main
            # file is no longer generation G's base and G's frames are partly gone. Start a new
            # generation with no archive for G, so replicas at G get 410 and bootstrap again.
            log.warning(
                "%s was changed outside the primary; starting generation %d (replicas of %d must re-bootstrap)",
                self.db_path,
                self.generation + 1,
                self.generation,
            )
            self._checkpoint_truncate()
            self._archive_path(self.generation).unlink(missing_ok=True)
            self._start_generation(self.generation + 1)
        with self._reader_mutex:
            self._reader.reset()
            self._durable = self._reader.refresh().committed
        self._rollover_thread = threading.Thread(target=self._rollover_loop, name="rollover", daemon=True)
        self._rollover_thread.start()
        self._maybe_want_rollover(self.committed_frames())

    def _create(self) -> None:
        for suffix in ("-wal", "-shm"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)
        conn = apsw.Connection(str(self.db_path))
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        # journal_mode=WAL on an empty database writes page 1 to the main file, so even an empty
        # primary exports a valid one-page database.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        fsync_dir(self.data_dir)
        self.state_path.unlink(missing_ok=True)

    def close(self) -> None:
        self._stop.set()
        self._rollover_wanted.set()
        if self._rollover_thread:
            self._rollover_thread.join(timeout=LOCK_TIMEOUT + 5)
        if self._control:
            self._control.close()
            self._control = None
        if self._base_fd is not None:
            os.close(self._base_fd)
            self._base_fd = None
        if self._shm_fd is not None:
            os.close(self._shm_fd)
            self._shm_fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def connect(self, on_commit: Callable[[int], None] | None = None) -> apsw.Connection:
        """A connection that never checkpoints and reports its commits to this store (and to
        `on_commit(commit_frame)`, from the committing thread, once each commit is durable)."""
        conn = apsw.Connection(str(self.db_path))
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        conn.setbusytimeout(5000)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # FULL: a commit is fsynced before it is acknowledged, so no acknowledged write is lost.
        conn.execute("PRAGMA synchronous=FULL")
        if on_commit is None:
            conn.set_wal_hook(self._wal_hook)
        else:

            def hook(conn: apsw.Connection, dbname: str, pages: int) -> int:
                on_commit(pages)
                return self._wal_hook(conn, dbname, pages)

            conn.set_wal_hook(hook)
        return conn

    def _wal_hook(self, conn: apsw.Connection, dbname: str, pages: int) -> int:
        # SQLite calls this once the commit is complete (synced), with the WAL's frame count.
        with self._stats_lock:  # commits of several connections may report at once
            self.stats["commits"] += 1
        self._durable = max(self._durable, pages)
        self._notify(pages)
        return apsw.SQLITE_OK

    def last_commit_frame(self) -> int:
        """The newest commit frame of the current generation this process saw become durable (0 at
        the start of a generation). Callers hold the shared lock, so the generation cannot move."""
        return self._durable

    def add_commit_listener(self, listener: Callable[[int, int], None]) -> None:
        """Called as listener(generation, frames_in_wal) after each commit, from the committing thread."""
        self._commit_listeners.append(listener)

    def _notify(self, frames: int) -> None:
        for listener in self._commit_listeners:
            try:
                listener(self._state.generation, frames)
            except Exception:
                log.exception("commit listener failed")
        self._maybe_want_rollover(frames)

    def _maybe_want_rollover(self, frames: int) -> None:
        if frames >= self.generation_max_frames:
            self._rollover_wanted.set()

    # -- state ---------------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._state.generation

    def _base_fingerprint(self) -> tuple[int, int]:
        st = self.db_path.stat()
        return st.st_size, st.st_mtime_ns

    def _start_generation(self, generation: int) -> None:
        database_id = self._state.database_id or uuid.uuid4().hex
        self._write_state(State(generation=generation, base=self._base_fingerprint(), database_id=database_id))
        self._began_at = time.time()

    def _write_state(self, state: State) -> None:
        atomic_write(self.state_path, msgspec.json.encode(state))
        self._state = state

    def _refresh(self) -> tuple[int, list[int]]:
        with self._reader_mutex:
            state = self._reader.refresh()
            return state.committed, state.commits

    def committed_frames(self) -> int:
        """Frames of the current generation verified as committed."""
        return self._refresh()[0]

    def durable_position(self) -> tuple[int, int] | None:
        """(generation, last commit frame SQLite reported committed); None during a rollover. For a
        backup in this process, which must not read the -shm itself (closing a descriptor of it would
        drop this process's POSIX locks on it)."""
        with self.lock.shared(LOCK_TIMEOUT):
            if self._state.rollover_to is not None:
                return None
            _, commits = self._refresh()
            i = bisect.bisect_right(commits, self._durable) - 1
            return self.generation, commits[i] if i >= 0 else 0

    @property
    def database_id(self) -> str | None:
        return self._state.database_id

    def info(self) -> dict[str, int | str | None]:
        return {"current_generation": self.generation, "database_id": self._state.database_id}

    # -- pull ------------------------------------------------------------------------------------

    def pull(self, generation: int, start: int, end: int, extend: bool = True) -> Frames | CheckpointNeeded | Gone:
        """Committed frames from start, within [start, end) when they end on a commit frame there.
        With `extend`, a transaction that starts in range but ends after it is served whole (up to
        MAX_FRAMES_PER_RESPONSE); without, never past end (for watchers that only want the news)."""
        with self.lock.shared(LOCK_TIMEOUT):
            current = self.generation
            if generation == current:
                committed, commits = self._refresh()
                i = bisect.bisect_right(commits, self._durable) - 1
                durable = commits[i] if i >= 0 else 0
                if start > committed + 1:
                    return Gone(f"replica is at frame {start - 1} of generation {generation}, beyond this primary")
                if start > durable:
                    return CheckpointNeeded(current, durable)
                last = self._last_frame(commits, start, min(end, durable + 1), extend)
                return Frames(self._reader.read_frames(start, last), start, last)
            if generation < current and generation >= 1:
                commits = self._load_archive_commits(generation)
                if commits is None:
                    return Gone(f"generation {generation} is no longer kept; bootstrap again")
                committed = commits[-1] if commits else 0
                if start > committed + 1:
                    return Gone(f"replica is at frame {start - 1} of generation {generation}, beyond this primary")
                if start == committed + 1:
                    return CheckpointNeeded(current, committed)
                last = self._last_frame(commits, start, end, extend)
                return Frames(self._read_archive(generation, start, last), start, last)
            return Gone(f"generation {generation} does not exist on this primary (current is {current})")

    @staticmethod
    def _last_frame(commits: list[int], start: int, end: int, extend: bool = True) -> int:
        """The last frame to serve for [start, end): the last commit frame in range, else the end of
        the transaction that covers start (when not too large), else end - 1."""
        i = bisect.bisect_right(commits, end - 1) - 1
        if i >= 0 and commits[i] >= start:
            return commits[i]
        j = bisect.bisect_left(commits, start)
        if extend and j < len(commits) and commits[j] - start < MAX_FRAMES_PER_RESPONSE:
            return commits[j]
        return min(end - 1, commits[j]) if j < len(commits) else end - 1

    def _archive_path(self, generation: int) -> Path:
        return self.archive_dir / f"{generation:010d}.frames"

    def _load_archive_commits(self, generation: int) -> list[int] | None:
        cached = self._archive_commits.get(generation)
        if cached is not None:
            return cached
        path = self._archive_path(generation)
        if not path.exists():
            return None
        commits: list[int] = []
        with open(path, "rb") as f:
            frame_no = 0
            while header := f.read(8):
                frame_no += 1
                if int.from_bytes(header[4:8], "big"):
                    commits.append(frame_no)
                f.seek(FRAME_SIZE - 8, os.SEEK_CUR)
        self._archive_commits[generation] = commits
        return commits

    def _read_archive(self, generation: int, start: int, last: int) -> bytes:
        with open(self._archive_path(generation), "rb") as f:
            f.seek((start - 1) * FRAME_SIZE)
            return f.read((last - start + 1) * FRAME_SIZE)

    # -- export ----------------------------------------------------------------------------------

    def export_size(self, generation: int) -> int:
        """Bytes of generation's base file; the caller holds the shared lock while it streams it."""
        if generation != self.generation:
            raise NotFound(f"generation {generation} cannot be exported (current is {self.generation})")
        return self.db_path.stat().st_size

    def read_base(self, offset: int, length: int) -> bytes:
        """Bytes of the current generation's base file; the caller holds the shared lock."""
        assert self._base_fd is not None
        return os.pread(self._base_fd, length, offset)

    @property
    def began_at(self) -> float:
        """When the current generation began: every commit in its base was acknowledged by then."""
        return self._began_at

    def copy_base(self, dest: Path, progress: Callable[[int, int], None] | None = None) -> tuple[int, float, str]:
        """Copy the current generation's base to dest (fsynced) under the shared lock, so no rollover
        rewrites it meanwhile (writes go on: they only append to the WAL).
        Returns (generation, began_at, sha256 of the bytes)."""
        import hashlib

        with self.lock.shared(LOCK_TIMEOUT):
            generation, began_at = self.generation, self._began_at
            size = self.db_path.stat().st_size
            digest = hashlib.sha256()
            with open(dest, "wb") as out:
                offset = 0
                while offset < size:
                    chunk = self.read_base(offset, min(4 << 20, size - offset))
                    if not chunk:
                        raise WalError(f"{self.db_path} shrank while copying it")
                    out.write(chunk)
                    digest.update(chunk)
                    offset += len(chunk)
                    if progress is not None:
                        progress(offset, size)
                out.flush()
                os.fsync(out.fileno())
        return generation, began_at, digest.hexdigest()

    # -- push ------------------------------------------------------------------------------------

    def push(self, generation: int, start: int, end: int, baton: str | None, body: bytes) -> PushReply:
        """Apply an offline replica's WAL frames [start, end) if they continue this primary exactly."""
        count = end - start
        if start < 1 or count <= 0 or len(body) != count * FRAME_SIZE:
            raise BadRequest(f"push body of {len(body)} bytes does not hold frames [{start}, {end})")
        with self.lock.exclusive(LOCK_TIMEOUT):
            self.stats["pushes"] += 1
            current = self.generation
            committed, _ = self._refresh()
            pending = self._pending
            if pending and (pending.expires < time.monotonic() or pending.generation != current):
                pending = self._pending = None
            if pending and baton == pending.baton and start == pending.first + len(pending.data) // FRAME_SIZE:
                first, data = pending.first, pending.data + body
            else:
                first, data = start, body
            if generation != current:
                return self._conflict(current, committed)
            if first <= committed:
                # A retried push whose frames the primary already has is fine; anything else diverged.
                known = min(committed, first + len(data) // FRAME_SIZE - 1)
                ours = self._reader.read_frames(first, known)
                if not _same_frames(ours, data[: len(ours)]):
                    return self._conflict(current, committed)
                data = data[len(ours) :]
                first = known + 1
                if not data:
                    return PushReply("ok", current, end - 1, None)
            if first != committed + 1:
                return self._conflict(current, committed)
            frames = split_frames(data)
            if any(pgno == 0 for pgno, _ in frames):
                raise BadRequest("push contains a frame for page 0")
            last_commit = max((i for i, (_, size) in enumerate(frames) if size), default=-1)
            if last_commit >= 0:
                self._append(data[: (last_commit + 1) * FRAME_SIZE], committed + last_commit + 1)
            rest = data[(last_commit + 1) * FRAME_SIZE :]
            if rest:
                self._pending = _PendingPush(
                    secrets.token_urlsafe(16),
                    current,
                    committed + last_commit + 2,
                    rest,
                    time.monotonic() + PENDING_PUSH_TTL,
                )
                return PushReply("ok", current, end - 1, self._pending.baton)
            self._pending = None
            return PushReply("ok", current, end - 1, None)

    def _conflict(self, generation: int, committed: int) -> PushReply:
        self.stats["push_conflicts"] += 1
        self._pending = None
        return PushReply("conflict", generation, committed, None)

    def _append(self, frames: bytes, expect_committed: int) -> None:
        """Append whole committed transactions to the WAL as if SQLite had written them.

        Runs under the exclusive lock, so no connection is inside a transaction. The frames get
        this WAL's salts and running checksum; then the shared-memory index header is zeroed,
        which makes the next reader run SQLite's WAL recovery and adopt them.
        """
        with self._reader_mutex:
            state = self._reader.refresh()
            header, checksum, committed = state.header, state.checksum, state.committed
            fd = os.open(self.wal_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if header is None:
                    if committed != 0:
                        raise WalError("WAL header vanished with committed frames")
                    header, raw_header = WalHeader.new(secrets.randbits(32), secrets.randbits(32))
                    os.pwrite(fd, raw_header, 0)
                    checksum = header.checksum
                data, _ = encode_frames(frames, header, checksum)
                os.pwrite(fd, data[: len(data) // 2], WAL_HEADER_SIZE + committed * FRAME_SIZE)
                crash_point("push-half-written")
                os.pwrite(fd, data[len(data) // 2 :], WAL_HEADER_SIZE + committed * FRAME_SIZE + len(data) // 2)
                os.fsync(fd)
                crash_point("push-appended")
            finally:
                os.close(fd)
            # Through the kept descriptor: closing a new one would drop SQLite's locks on the -shm.
            assert self._shm_fd is not None
            os.pwrite(self._shm_fd, bytes(96), 0)
        assert self._control is not None
        # Starting a read transaction runs the recovery now, under our lock, not in a later request.
        self._control.execute("SELECT count(*) FROM sqlite_schema").fetchall()
        now = self.committed_frames()
        self._durable = now
        if now != expect_committed:
            raise WalError(f"pushed frames not adopted: WAL commits end at {now}, expected {expect_committed}")
        self._notify(now)

    # -- rollover --------------------------------------------------------------------------------

    def rollover(self, force: bool = False, timeout: float = LOCK_TIMEOUT, polite: bool = False) -> bool:
        """Start a new generation (when forced, or when the current one is full). True if it did."""
        with self.lock.exclusive(timeout, polite):
            committed, _ = self._refresh()
            if not force and committed < self.generation_max_frames:
                return False
            generation = self.generation
            archive = self._archive_path(generation)
            tmp = archive.with_name(archive.name + ".tmp")
            with open(tmp, "wb") as out:
                if committed:
                    with open(self.wal_path, "rb") as f:
                        f.seek(WAL_HEADER_SIZE)
                        remaining = committed * FRAME_SIZE
                        while remaining:
                            chunk = f.read(min(remaining, 1 << 20))
                            if not chunk:
                                raise WalError("WAL shorter than its verified frames")
                            out.write(chunk)
                            remaining -= len(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, archive)
            fsync_dir(self.archive_dir)
            crash_point("rollover-archived")
            self._write_state(
                State(
                    generation=generation,
                    rollover_to=generation + 1,
                    base=self._state.base,
                    database_id=self._state.database_id,
                )
            )
            crash_point("rollover-intent")
            self._checkpoint_truncate()
            crash_point("rollover-checkpointed")
            self._start_generation(generation + 1)
            self._pending = None
            with self._reader_mutex:
                self._reader.reset()
                self._durable = 0
            self.stats["rollovers"] += 1
            self._prune()
            log.info(
                "generation %d finished with %d frames; now serving generation %d",
                generation,
                committed,
                generation + 1,
            )
        self._notify(0)
        return True

    def _checkpoint_truncate(self) -> None:
        assert self._control is not None
        for attempt in range(200):
            busy, _, _ = self._control.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()[0]
            if busy == 0 and (not self.wal_path.exists() or self.wal_path.stat().st_size == 0):
                return
            time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise WalError("checkpoint(TRUNCATE) stayed busy")

    def _prune(self) -> None:
        oldest_kept = self.generation - self.keep_generations
        for path in self.archive_dir.glob("*.frames"):
            try:
                generation = int(path.stem)
            except ValueError:
                continue
            if generation < oldest_kept:
                path.unlink(missing_ok=True)
                self._archive_commits.pop(generation, None)
        for path in self.archive_dir.glob("*.tmp"):
            path.unlink(missing_ok=True)

    def _rollover_loop(self) -> None:
        # A size rollover is not urgent: it waits politely (letting pulls and statements in) for a
        # moment nobody holds the lock, and backs off while busy; only an overdue one queues ahead.
        backoff = 0.1
        while not self._stop.is_set():
            self._rollover_wanted.wait()
            if self._stop.is_set():
                return
            self._rollover_wanted.clear()
            # Far past the size limit (libsql-experimental 0.0.55 replicas wedge at 4,120 frames in
            # one generation) the rollover waits as long as an on-demand one.
            overdue = self.committed_frames() >= self.generation_max_frames * 3 // 2
            try:
                if overdue:
                    self.rollover(force=False, timeout=LOCK_TIMEOUT)
                else:
                    self.rollover(force=False, timeout=BACKGROUND_ROLLOVER_WAIT, polite=True)
                backoff = 0.1
            except LockTimeout:
                log.info("rollover postponed: transactions or exports still open; retrying in %.1f s", backoff)
                self._retry_rollover_after(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception:
                log.exception("rollover failed; retrying in %.1f s", backoff)
                self._retry_rollover_after(backoff)
                backoff = min(backoff * 2, 10.0)

    def _retry_rollover_after(self, seconds: float) -> None:
        if not self._stop.wait(seconds):
            self._rollover_wanted.set()


def _same_frames(a: bytes, b: bytes) -> bool:
    """Same page numbers, commit sizes and pages (salts and checksums differ between WALs)."""
    if len(a) != len(b):
        return False
    for off in range(0, len(a), FRAME_SIZE):
        if a[off : off + 8] != b[off : off + 8] or a[off + 24 : off + FRAME_SIZE] != b[off + 24 : off + FRAME_SIZE]:
            return False
    return True
