"""Measure PRAGMA settings on this host and this data, and choose a profile (`edgenode tune`).

Everything runs on a consistent copy of the node's database (`VACUUM INTO`) in a scratch
directory inside the data dir, so the measurement sees the same disk as the node and the data is
never touched. The copy is deleted afterwards.

The search is one knob at a time (journal, synchronous, cache size, mmap size, temp store,
WAL checkpoint size): each option of a knob is measured against the knob's first option (SQLite's
own default) with every other knob at its current choice, trials interleaved so drift hits all
options alike, and an option is chosen only when its geometric-mean gain over the workloads
is beyond the noise measured on the default option. Settings that trade durability are only
candidates when the platform profile already makes that trade; correctness settings (foreign
keys, busy timeout) and macOS's F_FULLFSYNC settings are kept as the platform profile has them,
unmeasured.

The measuring helpers (`open_libsql`, `ops_per_second`, `noise`, `geomean`) are shared with
`bench/pragmas.py`.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libsql

from edgenode.pragmas import (
    TUNED_FILE,
    Profile,
    Setting,
    cache_size_mib,
    journal_mode_wal,
    load_tuned,
    mmap_size_mib,
    platform_key,
    select_profile,
    synchronous_normal,
    temp_store_memory,
    wal_autocheckpoint,
)

DB_FILE = "edgenode.db"  # a standalone node's file (edgenode.database.DB_FILE; not imported to keep tune light)
REPLICA_FILE = Path("replica") / "replica.db"  # a replica node's file (edgenode.replica.files)
WRITE_TABLE = "_edgenode_tune_writes"
BATCH = 100  # rows per write transaction, like a bulk /api/v1/execute
RANGE = 100  # rows per range scan
WORKLOAD_NAMES = ("point_reads", "range_scans", "write_batches", "single_commits")
MIN_TRIAL_SECONDS = 0.05
# Settings that decide correctness or flush semantics, never traded for speed.
UNMEASURED = frozenset({"foreign_keys", "busy_timeout", "fullfsync", "checkpoint_fullfsync"})

Op = Callable[[], int]


# measuring ---------------------------------------------------------------------------------------
def open_libsql(path: Path, settings: Sequence[Setting]) -> Any:
    """A libSQL connection at SQLite's defaults plus `settings` (raises if the engine refuses one).

    journal_mode is persistent in the file, so it is put back to the default first: the previous
    configuration measured on this file may have left it in WAL.
    """
    conn = libsql.connect(str(path), isolation_level=None)
    execute = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
    execute("PRAGMA journal_mode = DELETE")
    for setting in settings:
        setting.apply(execute)
    return conn


def ops_per_second(op: Op, seconds: float, warmup: float = 0.0) -> float:
    """Run `op` (which returns how many operations it did) for `seconds`; operations per second."""
    if warmup > 0:
        until = time.perf_counter() + warmup
        while time.perf_counter() < until:
            op()
    done = 0
    start = time.perf_counter()
    until = start + seconds
    while True:
        done += op()
        now = time.perf_counter()
        if now >= until:
            return done / (now - start)


def noise(trials: Sequence[float], floor: float = 0.03) -> float:
    """Relative half-spread of repeated trials of one configuration, at least `floor`: a ratio of
    medians inside 1 ± noise is not a measured difference.

    Half the range for up to three trials; from four on, half the interquartile range, so that one
    trial disturbed by another process does not hide every effect.
    """
    if len(trials) < 2:
        return max(floor, 0.10)
    middle = statistics.median(trials)
    if not middle:
        return 1.0
    if len(trials) < 4:
        return max(floor, (max(trials) - min(trials)) / 2 / middle)
    q1, _, q3 = statistics.quantiles(trials, n=4, method="inclusive")
    return max(floor, (q3 - q1) / 2 / middle)


def geomean(values: Sequence[float]) -> float:
    positive = [v for v in values if v > 0]
    return math.exp(sum(math.log(v) for v in positive) / len(positive)) if positive else float("nan")


# workloads on a copy of the node's data ------------------------------------------------------------
@dataclass
class Target:
    """The table read workloads run on (the largest rowid table of the copy) and its rowid range."""

    table: str
    low: int
    high: int
    synthetic: bool


def pick_target(conn: Any) -> Target:
    best: tuple[int, str, int, int] | None = None
    tables = conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE '_edgenode%' AND name NOT LIKE 'libsql_%' AND sql NOT LIKE '%WITHOUT ROWID%' "
        "AND sql NOT LIKE 'CREATE VIRTUAL%'"
    ).fetchall()
    for (name,) in tables:
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            low, high = conn.execute(f"SELECT min(rowid), max(rowid) FROM {quoted}").fetchone()
        except ValueError:
            continue
        if low is None:
            continue
        span = int(high) - int(low)
        if best is None or span > best[0]:
            best = (span, quoted, int(low), int(high))
    if best is None:
        return Target(WRITE_TABLE, 1, 1, synthetic=True)
    return Target(best[1], best[2], best[3], synthetic=False)


def prepare_copy(conn: Any, synthetic_rows: int) -> None:
    """The write table (and, for an empty database, rows to read) inside the copy."""
    conn.execute(f"CREATE TABLE IF NOT EXISTS {WRITE_TABLE} (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT)")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {WRITE_TABLE}_k ON {WRITE_TABLE} (k)")
    if synthetic_rows:
        rng = random.Random(7)
        conn.execute("BEGIN")
        for i in range(synthetic_rows):
            conn.execute(
                f"INSERT INTO {WRITE_TABLE} (k, v) VALUES (?, ?)", (f"{rng.getrandbits(64):016x}", "x" * 200 + str(i))
            )
        conn.execute("COMMIT")


def workloads(conn: Any, target: Target, seed: int = 1) -> dict[str, Op]:
    rng = random.Random(seed)
    table = target.table
    point_sql = f"SELECT * FROM {table} WHERE rowid = ?"
    range_sql = f"SELECT * FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT {RANGE}"
    insert_sql = f"INSERT INTO {WRITE_TABLE} (k, v) VALUES (?, ?)"
    payload = "v" * 200

    def point() -> int:
        conn.execute(point_sql, (rng.randint(target.low, target.high),)).fetchall()
        return 1

    def scan() -> int:
        conn.execute(range_sql, (rng.randint(target.low, target.high),)).fetchall()
        return 1

    def write() -> int:
        # The node's write path: one BEGIN IMMEDIATE ... COMMIT per request.
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(BATCH):
            conn.execute(insert_sql, (f"{rng.getrandbits(64):016x}", payload))
        conn.execute("COMMIT")
        return 1

    def single() -> int:
        # One row per request: where the per-commit sync cost (synchronous FULL vs NORMAL) shows.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert_sql, (f"{rng.getrandbits(64):016x}", payload))
        conn.execute("COMMIT")
        return 1

    return dict(zip(WORKLOAD_NAMES, (point, scan, write, single), strict=True))


# the search ------------------------------------------------------------------------------------------
@dataclass
class Knob:
    name: str
    options: list[tuple[str, tuple[Setting, ...]]]  # (label, settings); options[0] is SQLite's default
    forced: int | None = None  # index chosen whatever the numbers say, with why
    why_forced: str = ""


@dataclass
class KnobResult:
    knob: str
    chosen: str
    settings: tuple[Setting, ...]
    # label -> workload -> median ops/s; and label -> workload -> ratio vs options[0]
    medians: dict[str, dict[str, float]] = field(default_factory=dict)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    gain: float = 1.0  # geometric-mean gain of the chosen option over the default
    noise: float = 0.0
    why: str = ""


def knobs_for(platform: Profile) -> tuple[list[Knob], list[Setting]]:
    """The knobs to measure for `platform`, and the settings kept unmeasured (correctness, flushes).

    Durability never drops below the platform profile: synchronous=NORMAL is a candidate only when
    the platform profile already uses it, and nothing weaker (OFF, journal off) is ever offered.
    """
    by_pragma = {s.pragma: s for s in platform.settings}
    fixed = [s for s in platform.settings if s.pragma in UNMEASURED]
    knobs: list[Knob] = []
    wal = by_pragma.get("journal_mode")
    if wal is not None and str(wal.value).lower() == "wal":
        knobs.append(
            Knob(
                "journal_mode",
                [("rollback journal (default)", ()), ("WAL", (journal_mode_wal(),))],
                forced=1,
                why_forced="kept: the node's readers run beside its writer, which needs WAL",
            )
        )
    sync = by_pragma.get("synchronous")
    if sync is not None and str(sync.value).upper() == "NORMAL":
        knobs.append(Knob("synchronous", [("FULL (default)", ()), ("NORMAL", (synchronous_normal(),))]))
    knobs.append(
        Knob(
            "cache_size",
            [("2 MiB (default)", ())] + [(f"{m} MiB", (cache_size_mib(m),)) for m in (16, 64, 128)],
        )
    )
    knobs.append(Knob("mmap_size", [("off (default)", ())] + [(f"{m} MiB", (mmap_size_mib(m),)) for m in (256, 1024)]))
    knobs.append(Knob("temp_store", [("file (default)", ()), ("memory", (temp_store_memory(),))]))
    if wal is not None:
        knobs.append(
            Knob(
                "wal_autocheckpoint",
                [("1000 pages (default)", ())] + [(f"{p} pages", (wal_autocheckpoint(p),)) for p in (2000, 4000)],
            )
        )
    return knobs, fixed


@dataclass
class TuneResult:
    profile: Profile
    knobs: list[KnobResult]
    platform: Profile
    target: Target
    seconds: float
    path: Path


def _measure_knob(
    copy: Path,
    knob: Knob,
    chosen: list[Setting],
    target: Target,
    seconds_each: float,
    trials: int,
    log: Callable[[str], None],
) -> KnobResult:
    samples: dict[str, dict[str, list[float]]] = {label: {} for label, _ in knob.options}
    order = list(range(len(knob.options)))
    rng = random.Random(len(knob.name))
    for trial in range(trials):
        rng.shuffle(order)
        for index in order:
            label, settings = knob.options[index]
            conn = open_libsql(copy, [*chosen, *settings])
            try:
                for workload, op in workloads(conn, target, seed=trial).items():
                    rate = ops_per_second(op, seconds_each, warmup=seconds_each / 4)
                    samples[label].setdefault(workload, []).append(rate)
            finally:
                conn.close()
    base_label = knob.options[0][0]
    medians = {label: {w: statistics.median(v) for w, v in by_w.items()} for label, by_w in samples.items()}
    ratios = {label: {w: medians[label][w] / medians[base_label][w] for w in medians[label]} for label in medians}
    spread = statistics.median(noise(v) for v in samples[base_label].values())
    scores = {label: geomean(list(r.values())) for label, r in ratios.items()}
    if knob.forced is not None:
        index, why = knob.forced, knob.why_forced
    else:
        best = max(range(len(knob.options)), key=lambda i: scores[knob.options[i][0]])
        if best != 0 and scores[knob.options[best][0]] > 1 + spread:
            index, why = best, f"fastest, x{scores[knob.options[best][0]]:.2f} beyond noise ±{spread:.0%}"
        else:
            index, why = 0, f"no option beat the default beyond noise ±{spread:.0%}"
    label, settings = knob.options[index]
    result = KnobResult(knob.name, label, settings, medians, ratios, scores[label], spread, why)
    log(format_knob(result))
    return result


def format_knob(result: KnobResult) -> str:
    workloads_ = list(next(iter(result.ratios.values())))
    lines = [f"{result.knob}: chose {result.chosen} ({result.why})"]
    lines.append("  " + "option".ljust(24) + "".join(w.rjust(15) for w in workloads_) + "geomean".rjust(10))
    for label, ratios in result.ratios.items():
        mark = "*" if label == result.chosen else " "
        cells = "".join(f"x{ratios[w]:.2f}".rjust(15) for w in workloads_)
        lines.append(
            f"{mark} {label.ljust(24)}{cells}{('x' + format(geomean(list(ratios.values())), '.2f')).rjust(10)}"
        )
    return "\n".join(lines)


def database_file(data_dir: Path) -> tuple[Path, bool]:
    """The node's database in `data_dir` and whether it is an embedded replica."""
    if (data_dir / DB_FILE).is_file():
        return data_dir / DB_FILE, False
    if (data_dir / REPLICA_FILE).is_file():
        return data_dir / REPLICA_FILE, True
    raise FileNotFoundError(
        f"no database at {data_dir / DB_FILE} or {data_dir / REPLICA_FILE}; start the node on this data dir first"
    )


def snapshot(source: Path, scratch: Path) -> Path:
    """A consistent copy of the node's database in `scratch`, taken through a read-only connection.

    Read-only matters: closing the last read-write connection of a WAL database checkpoints and
    removes the WAL, which would change the node's files (and a replica's frame bookkeeping).
    VACUUM INTO reads one snapshot, also while the node is writing.
    """
    import apsw

    copy = scratch / "tune.db"
    conn = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        conn.execute("VACUUM INTO ?", (str(copy),))
    finally:
        conn.close()
    return copy


def tune(
    data_dir: Path,
    seconds: float = 60.0,
    platform: str | None = None,
    log: Callable[[str], None] = print,
    trials: int = 3,
    synthetic_rows: int = 20_000,
) -> TuneResult:
    """Measure, choose and write `data_dir/pragmas.toml`; returns what was measured and chosen."""
    source, replica = database_file(data_dir)
    key = platform or platform_key()
    base = select_profile("auto", key)  # never the tuned file: the platform profile is the durability ceiling
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix=".tune-", dir=data_dir))
    try:
        copy = snapshot(source, scratch)
        conn = libsql.connect(str(copy), isolation_level=None)
        target = pick_target(conn)
        prepare_copy(conn, synthetic_rows if target.synthetic else 0)
        if target.synthetic:
            target = Target(WRITE_TABLE, 1, synthetic_rows, synthetic=True)
        conn.close()
        knobs, fixed = knobs_for(base)
        if replica:
            # The sync machinery owns the replica's journal and checkpoints; the node skips those settings.
            knobs = [k for k in knobs if k.name != "wal_autocheckpoint"]
        size = copy.stat().st_size
        where = f"{target.table} (rowids {target.low}..{target.high})"
        if target.synthetic:
            where = f"a synthetic table of {synthetic_rows} rows (the database holds no rows to read)"
        log(
            f"copied {source} ({size / 2**20:.1f} MiB) in {time.monotonic() - started:.1f} s; "
            f"measuring for about {seconds:.0f} s"
        )
        if replica:
            log("embedded replica: journal_mode and wal_autocheckpoint stay with the sync machinery (WAL)")
        log(f"reads on {where}; writes: {BATCH}-row and 1-row transactions into a scratch table of the copy")
        log(f"durability: never below the {base.name} profile: {base.durability}")
        measurements = sum(len(k.options) for k in knobs) * trials * len(WORKLOAD_NAMES)
        # --duration is measuring time; the copy above is not counted (it grows with the database).
        seconds_each = max(MIN_TRIAL_SECONDS, seconds / measurements / 1.25)  # 1.25: each has a warm-up
        chosen: list[Setting] = list(fixed)
        results = []
        for knob in knobs:
            result = _measure_knob(copy, knob, chosen, target, seconds_each, trials, log)
            results.append(result)
            chosen.extend(result.settings)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if any(x.pragma == "synchronous" for x in chosen):
        durability = f"{base.durability} (as the {base.name} profile; measured by edgenode tune)"
    else:
        durability = (
            "synchronous=FULL: every commit is synced before it is acknowledged, never corrupts; more durable "
            f"than the {base.name} profile, whose synchronous=NORMAL did not measure faster here (edgenode tune)."
        )
    profile = Profile(f"tuned-{key}", durability, tuple(_ordered(chosen, base)))
    path = write_profile(data_dir, profile, results, key)
    elapsed = time.monotonic() - started
    log(f"wrote {path}: {', '.join(s.name for s in profile.settings)}")
    log("`edgenode serve --profile auto` (the default) uses it from the next start; delete the file to go back")
    return TuneResult(profile, results, base, target, elapsed, path)


def _ordered(settings: list[Setting], base: Profile) -> list[Setting]:
    """journal_mode first (later settings depend on it), then the platform profile's order."""
    rank = {s.pragma: i for i, s in enumerate(base.settings)}
    return sorted(settings, key=lambda s: (s.pragma != "journal_mode", rank.get(s.pragma, len(rank))))


def _toml_value(value: Any) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value) if isinstance(value, str) else str(value)


def render_profile(profile: Profile, results: Sequence[KnobResult], key: str) -> str:
    gains = {s.name: r for r in results for s in r.settings}
    lines = [
        f"# Written by `edgenode tune` on {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} ({key}).",
        "# `edgenode serve --profile auto` uses this file; delete it to return to the platform profile.",
        f"name = {_toml_value(profile.name)}",
        f"durability = {_toml_value(profile.durability)}",
    ]
    for setting in profile.settings:
        result = gains.get(setting.name)
        reason = setting.reason
        if result is not None:
            reason += f" (measured x{result.gain:.2f} geomean over reads and writes)"
        lines += [
            "",
            "[[setting]]",
            f"name = {_toml_value(setting.name)}",
            f"pragma = {_toml_value(setting.pragma)}",
            f"value = {_toml_value(setting.value)}",
            f"reason = {_toml_value(reason)}",
        ]
        if setting.expect is not None:
            lines.append(f"expect = {_toml_value(setting.expect)}")
    return "\n".join(lines) + "\n"


def write_profile(data_dir: Path, profile: Profile, results: Sequence[KnobResult], key: str) -> Path:
    """Write atomically, then read it back the way `serve` will, so a bad file is never left behind."""
    path = data_dir / TUNED_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_profile(profile, results, key))
    loaded = load_tuned(tmp)
    if [(s.pragma, str(s.value)) for s in loaded.settings] != [(s.pragma, str(s.value)) for s in profile.settings]:
        tmp.unlink()
        raise RuntimeError("the written profile does not read back as written")
    os.replace(tmp, path)
    return path
