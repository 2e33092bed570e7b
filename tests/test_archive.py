"""The primary's continuous archive and `edgenode restore --to-time`, against real primaries, a real
S3-compatible server (moto in server mode) and real kill -9 of the primary and of the restore.

A recorded history: one writer, each write one transaction (insert row k, set meta.last = k), with
the time it was sent and the time it was acknowledged. The state at T is then exactly rows 1..last
with `last` between the newest write acknowledged by T and the newest sent by T (the one in flight
at T may or may not have committed by then).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import httpx
import pytest

from edgenode.backup import RESTORE_MARKER, BackupError
from edgenode.objectstore import open_target
from edgenode.primary.archive_format import decode_segment, parse_listing
from edgenode.primary.client import HranaClientError
from edgenode.primary.client import execute as primary_execute
from edgenode.primary.pitr import restore_to_time
from edgenode.s3 import Credentials, S3Client
from tests.procs import ROOT, Proc, free_port, start

TOKEN = "archive-token"
# How many random moments each history is restored to, and kill -9s per crash test (the issue asks
# for 20 each: the archive-upload test runs 20, ~20 s; the restore test runs fewer to keep the suite
# short: EDGENODE_TEST_PITR_MOMENTS / _KILLS / _UPLOAD_KILLS set them).
MOMENTS = int(os.environ.get("EDGENODE_TEST_PITR_MOMENTS", "10"))
KILLS = int(os.environ.get("EDGENODE_TEST_ARCHIVE_KILLS", "3"))
UPLOAD_KILLS = int(os.environ.get("EDGENODE_TEST_ARCHIVE_UPLOAD_KILLS", "20"))
S3_ENV = {"AWS_ACCESS_KEY_ID": "test-key", "AWS_SECRET_ACCESS_KEY": "test-secret"}


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/moto-api/", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"moto server did not start: {log.read_text()}")
    yield url
    proc.terminate()
    proc.wait(10)


def make_bucket(endpoint: str, name: str) -> str:
    client = S3Client(name, endpoint=endpoint, credentials=Credentials(S3_ENV["AWS_ACCESS_KEY_ID"], "test-secret"))
    client.create_bucket()
    client.close()
    return f"s3://{name}/primary-1"


class History(threading.Thread):
    """One writer; remembers (k, sent, acknowledged) of every write."""

    def __init__(self, url: str, rate: float = 100.0, recover_seconds: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.recover_seconds = recover_seconds
        self.pause = 1 / rate
        self.next = 1
        self.acked: list[tuple[int, float, float]] = []
        self.unknown: list[tuple[int, float]] = []  # sent, no answer (the primary was killed)
        self.stopping = threading.Event()

    def write(self) -> None:
        k = self.next
        sent = time.time()
        try:
            primary_execute(
                self.url,
                [
                    ("INSERT INTO t(id, data) VALUES (?, randomblob(2000))", [k]),
                    ("UPDATE meta SET last = ?", [k]),
                ],
                TOKEN,
                transaction=True,
            )
        except (httpx.HTTPError, HranaClientError):
            self.unknown.append((k, sent))
            # Its outcome is unknown: once the primary is back, go on from whatever it holds.
            deadline = time.monotonic() + self.recover_seconds
            while time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    rows = primary_execute(self.url, ["SELECT last FROM meta"], TOKEN)[0]
                except (httpx.HTTPError, HranaClientError):
                    time.sleep(0.05)
                    continue
                self.next = rows[0][0] + 1
                return
            self.next = k + 1  # not recovered (the caller restarts the primary): never reuse k
            return
        self.acked.append((k, sent, time.time()))
        self.next = k + 1

    def run(self) -> None:
        while not self.stopping.is_set():
            self.write()
            time.sleep(self.pause)

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)

    def bounds_at(self, t: float) -> tuple[int, int]:
        """(lowest, highest) value `last` may have in the state at t."""
        low = max((k for k, _, ack in self.acked if ack <= t), default=0)
        sent = [k for k, s, _ in self.acked if s <= t] + [k for k, s in self.unknown if s <= t]
        return low, max(sent, default=0)


def setup_schema(url: str) -> None:
    primary_execute(
        url,
        [
            "CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)",
            "CREATE TABLE meta(last INTEGER)",
            "INSERT INTO meta VALUES (0)",
        ],
        TOKEN,
    )


def primary_args(pdir: Path, archive: str, *extra: str) -> list[str]:
    return [
        "primary",
        "--data-dir",
        str(pdir),
        "--auth-token",
        TOKEN,
        "--no-migrate",
        "--generation-max-frames",
        "60",
        "--archive",
        archive,
        # By interval only: snapshots at every rollover (the default for a tiny database) would leave
        # replays across generations untested; the tests of the ratio set it.
        "--archive-snapshot-ratio",
        "0",
        *extra,
    ]


def wait_archived(proc: Proc, timeout: float = 30) -> dict:
    """Until the archive holds every committed frame (lag 0 and caught up with the WAL)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = httpx.get(proc.url + "/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        archive = info["archive"]
        if archive["lag_seconds"] == 0 and archive["last_error"] is None and archive["segments"] > 0:
            return archive
        time.sleep(0.05)
    raise AssertionError(f"archive still behind: {archive}")


def record_history(proc: Proc, seconds: float = 3.0) -> tuple[History, dict]:
    """The schema, then `seconds` of recorded writes; returns the history and the archive status once it
    holds them all."""
    setup_schema(proc.url)
    history = History(proc.url)
    history.start()
    time.sleep(seconds)
    history.stop()
    return history, wait_archived(proc)


def state_of(db: Path) -> tuple[int, set[int]]:
    conn = apsw.Connection(f"file:{db}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        last = conn.execute("SELECT last FROM meta").fetchall()[0][0]
        return last, {r[0] for r in conn.execute("SELECT id FROM t")}
    finally:
        conn.close()


def check_moment(history: History, archive: str, t: float, dest: Path, endpoint: str | None) -> None:
    report = restore_to_time(archive, t, dest, endpoint=endpoint)
    last, ids = state_of(dest / "edgenode.db")
    low, high = history.bounds_at(t)
    assert low <= last <= high, f"at {t}: last={last}, expected {low}..{high} ({report.as_dict()})"
    assert ids == set(range(1, last + 1)), f"at {t}: rows are not exactly 1..{last}"


def all_objects_whole(archive: str, endpoint: str | None) -> None:
    target = open_target(archive, endpoint=endpoint)
    try:
        keys = [key for key, _ in target.list("")]
        assert not [k for k in keys if "tmp" in k.split("/")[-1]], keys
        listing = parse_listing(keys)
        for segments in listing.segments.values():
            for _, _, key in segments:
                decode_segment(target.get_bytes(key), key)  # checks its length and sha256
        for _, _, key in listing.snapshots:
            assert target.get_bytes(key)[:16] == b"SQLite format 3\x00"
    finally:
        target.close()


@pytest.mark.parametrize("where", ["dir", "s3"])
def test_restore_to_random_moments_matches_the_recorded_history(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    endpoint = request.getfixturevalue("s3_endpoint") if where == "s3" else None
    archive = make_bucket(endpoint, f"pitr-{os.getpid()}") if endpoint else str(tmp_path / "archive")
    extra = ["--archive-s3-endpoint", endpoint] if endpoint else []
    proc = start(primary_args(tmp_path / "primary", archive, *extra), tmp_path, "primary", env=S3_ENV)
    try:
        history, status = record_history(proc)
        assert status["generation"] > 2, status  # several rollovers: restores cross generations
        info = httpx.get(proc.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert "edgenode_primary_archive_lag_seconds 0.0" in info
    finally:
        proc.stop()
    os.environ.update(S3_ENV)
    rng = random.Random(18)
    first, last = history.acked[0][1], history.acked[-1][2]
    moments = sorted(rng.uniform(first - 0.05, last + 0.05) for _ in range(MOMENTS))
    for n, t in enumerate(moments):
        check_moment(history, archive, t, tmp_path / f"restore-{n}", endpoint)
    # Before the archive's first snapshot: a clear refusal, nothing created.
    with pytest.raises(BackupError, match="before the archive's earliest restorable time"):
        restore_to_time(archive, first - 3600, tmp_path / "too-early", endpoint=endpoint)
    assert not (tmp_path / "too-early").exists()
    # The command line, after the last write: everything, and it says how far the archive goes.
    args = ["restore", "--from", archive, "--to-time", "now", "--data-dir", str(tmp_path / "cli"), "--json"]
    if endpoint:
        args += ["--s3-endpoint", endpoint]
    result = subprocess.run(
        [sys.executable, "-m", "edgenode", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "after the archive's last commit" in report["note"]
    assert state_of(tmp_path / "cli" / "edgenode.db")[0] == history.acked[-1][0]
    all_objects_whole(archive, endpoint)


def test_kill_9_of_the_primary_mid_upload_resumes_the_archive_without_a_torn_object(
    tmp_path: Path, s3_endpoint: str
) -> None:
    """The issue's 20 kills while the archiver uploads (segments every few ms under 200 writes/s,
    multipart snapshots at a rollover, compaction when idle), each followed by a restore to a
    moment the archive must hold."""
    archive = make_bucket(s3_endpoint, f"kill-{os.getpid()}")
    args = [
        *primary_args(tmp_path / "primary", archive, "--archive-s3-endpoint", s3_endpoint),
        "--archive-snapshot-ratio",
        "1",
        "--archive-s3-multipart-threshold",
        str(1 << 20),
    ]
    proc = start(args, tmp_path, "primary", env=S3_ENV)
    setup_schema(proc.url)
    history = History(proc.url, rate=200)
    history.start()
    rng = random.Random(9)
    os.environ.update(S3_ENV)
    try:
        for n in range(UPLOAD_KILLS):
            time.sleep(rng.uniform(0.2, 0.6))
            proc.kill()  # the archiver ships every few ms under this load: mostly mid-upload
            acked = list(history.acked)
            if len(acked) > 1:
                # Acknowledged before the kill and shipped within the lag: restorable right now.
                t = rng.uniform(acked[0][1], acked[-1][2] - 0.5) if acked[-1][2] - acked[0][1] > 1 else acked[0][1]
                if t >= acked[0][1]:
                    check_moment(history, archive, t, tmp_path / f"killed-{n}", s3_endpoint)
            proc.start()
        time.sleep(0.5)
        history.stop()
        wait_archived(proc)
    finally:
        history.stopping.set()
        proc.stop()
    all_objects_whole(archive, s3_endpoint)
    first, last = history.acked[0][1], history.acked[-1][2]
    for n, t in enumerate(sorted(rng.uniform(first, last) for _ in range(max(3, MOMENTS // 2)))):
        check_moment(history, archive, t, tmp_path / f"restore-{n}", s3_endpoint)
    check_moment(history, archive, last + 1, tmp_path / "latest", s3_endpoint)


def test_kill_9_during_restore_to_time_leaves_nothing_or_the_whole_database(tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    proc = start(primary_args(tmp_path / "primary", archive), tmp_path, "primary")
    try:
        setup_schema(proc.url)
        primary_execute(
            proc.url,
            [
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
                "INSERT INTO t(id, data) SELECT i, randomblob(3000) FROM n",
                "UPDATE meta SET last = 3000",
            ],
            TOKEN,
            transaction=True,
        )
        wait_archived(proc)
    finally:
        proc.stop()
    rng = random.Random(7)
    dest = tmp_path / "restored"
    restore = [
        sys.executable,
        "-m",
        "edgenode",
        "restore",
        "--from",
        archive,
        "--to-time",
        "now",
        "--data-dir",
        str(dest),
    ]
    for _ in range(KILLS):
        child = subprocess.Popen(restore, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.2))
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        db = dest / "edgenode.db"
        if (dest / RESTORE_MARKER).exists():
            # Half-restored: the node refuses to start and says how to finish.
            serve = subprocess.run(
                [sys.executable, "-m", "edgenode", "serve", "--data-dir", str(dest), "--port", str(free_port())],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert serve.returncode != 0 and "--to-time" in serve.stderr, serve.stderr
            assert not db.exists() or state_of(db)[0] == 3000
        elif db.exists():
            assert state_of(db) == (3000, set(range(1, 3001)))
            db.unlink()
        result = subprocess.run(restore, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert state_of(db) == (3000, set(range(1, 3001)))
        db.unlink()


def test_retention_deletes_what_no_moment_in_the_window_needs(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    args = primary_args(
        tmp_path / "primary", str(archive), "--archive-retention", "1", "--archive-snapshot-interval", "0.3"
    )
    proc = start(args, tmp_path, "primary")
    try:
        history, status = record_history(proc)
    finally:
        proc.stop()
    listing = parse_listing([key for key, _ in open_target(str(archive)).list("")])
    assert status["snapshots_shipped"] > 3 and status["deleted"] > 0, status
    # "snapshots" counts what the archive holds: the pruned ones are gone from it.
    assert len(listing.snapshots) == status["snapshots"] < status["snapshots_shipped"], status
    anchor = listing.snapshots[0][0]
    assert min(listing.segments) >= anchor and min(listing.ends, default=anchor) >= anchor
    # The oldest kept snapshot began at or before the window's start: the window is still restorable.
    cutoff = history.acked[-1][2] - 1
    assert listing.snapshots[0][1] <= cutoff + 0.5
    check_moment(history, str(archive), cutoff + 0.5, tmp_path / "in-window", None)
    with pytest.raises(BackupError, match="before the archive's earliest restorable time"):
        restore_to_time(str(archive), history.acked[0][1], tmp_path / "pruned", endpoint=None)


@pytest.mark.parametrize("point", ["archive-snapshot-shipped", "archive-segment-shipped", "archive-end-marked"])
def test_a_primary_killed_right_after_an_upload_resumes_from_what_the_archive_holds(tmp_path: Path, point: str) -> None:
    """The narrow window between an object becoming visible and the archiver noting it: the restart
    must read its position back from the archive (shipping a segment twice is harmless)."""
    archive = str(tmp_path / "archive")
    args = primary_args(tmp_path / "primary", archive, "--generation-max-frames", "6")
    history = History("", recover_seconds=0)
    if point == "archive-snapshot-shipped":
        # The first snapshot is shipped as the primary starts: it dies before it ever answers.
        env = {**os.environ, "EDGENODE_PRIMARY_CRASH_AT": point}
        port = free_port()
        child = subprocess.Popen(
            [sys.executable, "-m", "edgenode", *args, "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert child.wait(30) == -signal.SIGKILL, "the crash point was not reached"
        proc = Proc(args=args, port=port, log_path=tmp_path / "primary.log")
        history.url = proc.url
        proc.start()
        setup_schema(proc.url)
    else:
        # The schema first, without the crash point: its own commits ship segments too, and the
        # primary must die while the history is being written, not before it begins.
        proc = start(args, tmp_path, "primary")
        history.url = proc.url
        try:
            setup_schema(proc.url)
            wait_archived(proc)
            proc.stop()
            proc.env = {"EDGENODE_PRIMARY_CRASH_AT": point}
            proc.start()
            deadline = time.monotonic() + 20
            while proc.popen is not None and proc.popen.poll() is None and time.monotonic() < deadline:
                history.write()
            assert proc.popen is not None and proc.popen.returncode == -signal.SIGKILL, "crash point not reached"
        finally:
            proc.kill()
        proc.env = {}
        proc.start()
        # The write in flight at the kill may or may not have committed: go on from what the primary holds.
        history.next = primary_execute(proc.url, ["SELECT last FROM meta"], TOKEN)[0][0][0] + 1
    try:
        for _ in range(10):
            history.write()
        wait_archived(proc)
    finally:
        proc.stop()
    all_objects_whole(archive, None)
    check_moment(history, archive, time.time() + 1, tmp_path / "latest", None)
    first, last = history.acked[0][1], history.acked[-1][2]
    for n, t in enumerate(sorted(random.Random(point).uniform(first, last) for _ in range(3))):
        check_moment(history, archive, t, tmp_path / f"at-{n}", None)


def test_an_archive_of_another_database_is_left_alone_and_the_status_says_why(tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    first = start(primary_args(tmp_path / "a", archive), tmp_path, "a")
    try:
        setup_schema(first.url)
        wait_archived(first)
    finally:
        first.stop()
    before = sorted(key for key, _ in open_target(archive).list(""))
    # A different primary (e.g. one restored --as primary: a new database id) pointed at the same place.
    other = start(primary_args(tmp_path / "b", archive), tmp_path, "b")
    try:
        setup_schema(other.url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            info = httpx.get(other.url + "/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            if info["archive"]["last_error"]:
                break
            time.sleep(0.05)
        assert "archives another database" in info["archive"]["last_error"]
        assert "new location" in info["archive"]["last_error"]
    finally:
        other.stop()
    assert sorted(key for key, _ in open_target(archive).list("")) == before


def test_restore_from_a_directory_that_does_not_exist_says_it_holds_no_archive(tmp_path: Path) -> None:
    (tmp_path / "unrelated.txt").write_text("not an archive object")
    missing = tmp_path / "no-such-archive"
    assert open_target(str(missing)).list("") == []
    with pytest.raises(BackupError, match="holds no archive snapshot"):
        restore_to_time(str(missing), time.time(), tmp_path / "data")
    assert not (tmp_path / "data" / "edgenode.db").exists()


def segments_per_generation(archive: str, endpoint: str | None = None) -> dict[int, int]:
    target = open_target(archive, endpoint=endpoint)
    try:
        listing = parse_listing([key for key, _ in target.list("")])
    finally:
        target.close()
    return {g: len(segments) for g, segments in listing.segments.items() if g in listing.ends}


def wait_compacted(proc: Proc, archive: str, timeout: float = 30) -> None:
    """Until every finished generation is one segment (they are all below the merge limit here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = segments_per_generation(archive)
        if counts and max(counts.values()) == 1:
            return
        time.sleep(0.1)
    raise AssertionError(f"not compacted: {counts}")


def test_compaction_merges_each_generation_into_one_segment_and_every_moment_still_restores(tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    proc = start(primary_args(tmp_path / "primary", archive), tmp_path, "primary")
    try:
        history, _ = record_history(proc)
        wait_compacted(proc, archive)
        status = wait_archived(proc)
    finally:
        proc.stop()
    assert status["merged"] > 0 and status["merged_away"] > status["merged"], status
    counts = segments_per_generation(archive)
    assert len(counts) > 2, counts  # several finished generations, each now a single object
    all_objects_whole(archive, None)
    rng = random.Random(1818)
    first, last = history.acked[0][1], history.acked[-1][2]
    for n, t in enumerate(sorted(rng.uniform(first - 0.05, last + 0.05) for _ in range(MOMENTS))):
        check_moment(history, archive, t, tmp_path / f"restore-{n}", None)


def test_kill_9_between_a_merged_segment_and_deleting_its_parts_leaves_a_restorable_archive(tmp_path: Path) -> None:
    archive = str(tmp_path / "archive")
    args = primary_args(tmp_path / "primary", archive)
    proc = start(args, tmp_path, "primary")
    history = History(proc.url, recover_seconds=0)
    try:
        setup_schema(proc.url)
        wait_archived(proc)
        proc.stop()
        proc.env = {"EDGENODE_PRIMARY_CRASH_AT": "archive-compaction-merged"}
        proc.start()
        deadline = time.monotonic() + 30
        while proc.popen is not None and proc.popen.poll() is None and time.monotonic() < deadline:
            history.write()
            time.sleep(0.005)  # idle moments: compaction runs when nothing is left to ship
        assert proc.popen is not None and proc.popen.returncode == -signal.SIGKILL, "crash point not reached"
    finally:
        proc.kill()
    # Killed with the merged segment visible and its parts not yet deleted: both are there, whole.
    overlapping = segments_per_generation(archive)
    assert max(overlapping.values()) > 1, overlapping
    all_objects_whole(archive, None)
    first, last = history.acked[0][1], history.acked[-1][2]
    moments = sorted(random.Random(5).uniform(first, last) for _ in range(max(3, MOMENTS // 2)))
    for n, t in enumerate(moments):
        check_moment(history, archive, t, tmp_path / f"crashed-{n}", None)
    # The next start finishes the merge (the parts go) and ships on.
    proc.env = {}
    proc.start()
    try:
        history.next = primary_execute(proc.url, ["SELECT last FROM meta"], TOKEN)[0][0][0] + 1
        for _ in range(10):
            history.write()
        wait_archived(proc)
        wait_compacted(proc, archive)
    finally:
        proc.stop()
    all_objects_whole(archive, None)
    for n, t in enumerate([*moments, time.time() + 1]):
        check_moment(history, archive, t, tmp_path / f"after-{n}", None)


def test_status_counts_the_snapshots_the_archive_holds_after_a_restart(tmp_path: Path) -> None:
    """A snapshot at each rollover once the frames since the last one exceed the ratio times its size;
    after a restart the status counts what the archive holds, not what this run shipped."""
    archive = str(tmp_path / "archive")
    args = [*primary_args(tmp_path / "primary", archive), "--archive-snapshot-ratio", "0.5"]
    proc = start(args, tmp_path, "primary")
    try:
        history, status = record_history(proc, seconds=2.0)
    finally:
        proc.stop()
    held = len(parse_listing([key for key, _ in open_target(archive).list("")]).snapshots)
    # (A rollover just after the last write may still have added one after `status` was read.)
    assert held > 2 and status["snapshots"] == status["snapshots_shipped"] <= held, (held, status)
    proc.start()
    try:
        deadline = time.monotonic() + 10
        while True:  # read back as the archiver starts
            info = httpx.get(proc.url + "/info", headers={"Authorization": f"Bearer {TOKEN}"}).json()["archive"]
            if info["snapshots"] >= held or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        proc.stop()
    # What the archive held before this run, plus any this run shipped (one may be due at once).
    assert info["snapshots"] == held + info["snapshots_shipped"], (held, info)
    check_moment(history, archive, history.acked[-1][2] - 0.5, tmp_path / "restored", None)


def test_a_snapshot_above_the_multipart_threshold_goes_up_in_parts_and_restores(
    tmp_path: Path, s3_endpoint: str
) -> None:
    archive = make_bucket(s3_endpoint, f"multipart-{os.getpid()}")
    args = primary_args(
        tmp_path / "primary",
        archive,
        "--archive-s3-endpoint",
        s3_endpoint,
        "--archive-s3-multipart-threshold",
        str(1 << 20),
        "--archive-snapshot-ratio",
        "0.5",
    )
    proc = start(args, tmp_path, "primary", env=S3_ENV)
    try:
        setup_schema(proc.url)
        for batch in range(4):  # ~12 MB: the next snapshot is bigger than one 5 MiB part
            primary_execute(
                proc.url,
                [
                    f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) "
                    f"INSERT INTO t(id, data) SELECT {batch * 1000} + i, randomblob(3000) FROM n",
                    f"UPDATE meta SET last = {(batch + 1) * 1000}",
                ],
                TOKEN,
                transaction=True,
            )
        primary_execute(proc.url, ["INSERT INTO t(id) VALUES (4001)", "UPDATE meta SET last = 4001"], TOKEN)
        deadline = time.monotonic() + 60
        client = S3Client(
            archive.split("/")[2], endpoint=s3_endpoint, credentials=Credentials("test-key", "test-secret")
        )
        try:
            while time.monotonic() < deadline:
                big = [(k, n) for k, n in client.list("primary-1/snapshots/") if n > 6 << 20]
                if big:
                    break
                primary_execute(proc.url, ["UPDATE meta SET last = 4001"], TOKEN)  # more rollovers
                time.sleep(0.05)
            assert big, "no snapshot above the threshold was shipped"
            # S3 marks an object completed from parts by an ETag ending in -PARTS.
            etag = client._request("HEAD", big[0][0]).headers["etag"]
            parts = -(-big[0][1] // (5 << 20))  # 5 MiB parts: S3's smallest
            assert parts > 1 and etag.strip('"').endswith(f"-{parts}"), (etag, big)
            wait_archived(proc)
        finally:
            client.close()
    finally:
        proc.stop()
    os.environ.update(S3_ENV)
    restore_to_time(archive, time.time(), tmp_path / "restored", endpoint=s3_endpoint)
    assert state_of(tmp_path / "restored" / "edgenode.db") == (4001, set(range(1, 4002)))


def test_a_failed_multipart_upload_is_aborted_and_a_killed_writers_upload_is_cleaned(
    tmp_path: Path, s3_endpoint: str
) -> None:
    bucket = f"abort-{os.getpid()}"
    make_bucket(s3_endpoint, bucket)
    client = S3Client(bucket, endpoint=s3_endpoint, credentials=Credentials("test-key", "test-secret"))
    try:

        def parts_then_failure() -> Iterator[bytes]:
            yield os.urandom(5 << 20)
            raise OSError("disk read failed")

        with pytest.raises(OSError, match="disk read failed"):
            client._multipart("a/snapshot.db", parts_then_failure())
        assert client.list("a/") == []
        assert client.abort_uploads("a/") == 0  # nothing left behind: it was aborted at once
        # A writer killed mid-upload leaves an unfinished upload (never an object): clean() aborts it.
        created = client._request("POST", "a/orphan.db", query={"uploads": ""})
        assert b"UploadId" in created.content
        os.environ.update(S3_ENV)
        target = open_target(f"s3://{bucket}/a", endpoint=s3_endpoint)
        target.clean()
        target.close()
        assert client.abort_uploads("a/") == 0 and client.list("a/") == []
    finally:
        client.close()


@pytest.mark.parametrize("where", ["dir", "s3"])
def test_a_bounded_listing_returns_only_the_keys_between_its_bounds(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """What a restore lists: the frames between its snapshot and the next, not the whole archive."""
    endpoint = request.getfixturevalue("s3_endpoint") if where == "s3" else None
    url = make_bucket(endpoint, f"bounds-{os.getpid()}") if endpoint else str(tmp_path / "archive")
    os.environ.update(S3_ENV)
    target = open_target(url, endpoint=endpoint)
    try:
        keys = [f"frames/{g:010d}/{n:010d}-{n:010d}.seg" for g in range(1, 6) for n in (1, 2)]
        keys += [f"frames/{g:010d}/end-0000000002" for g in range(1, 6)] + ["snapshots/0000000001-1.db"]
        for key in keys:
            target.put_bytes(key, b"x")
        got = [
            key for key, _ in target.list("frames/", start_after="frames/0000000002/~", end_before="frames/0000000005/")
        ]
        assert got == sorted(k for k in keys if k.startswith(("frames/0000000003/", "frames/0000000004/")))
        assert [key for key, _ in target.list("frames/", start_after="frames/0000000004/~")] == sorted(
            k for k in keys if k.startswith("frames/0000000005/")
        )
        assert [key for key, _ in target.list("")] == sorted(keys)
    finally:
        target.close()
