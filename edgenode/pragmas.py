"""SQLite PRAGMA profiles per platform, applied to every connection the node owns.

Each setting is a named `Setting` with a one-line reason (the apsw `bestpractice` idea): small,
testable, reportable. A profile is an ordered tuple of settings plus a statement of what it
promises about durability. Settings are applied one by one and read back; whatever the engine
refuses or ignores (an embedded replica's connection refuses tuning PRAGMAs) is reported, not
fatal. `bench/pragmas.py` measures each setting against SQLite defaults.
"""

from __future__ import annotations

import platform
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Execute = Callable[[str], list[tuple[Any, ...]]]

TUNED_FILE = "pragmas.toml"


@dataclass(frozen=True)
class Setting:
    name: str
    pragma: str
    value: str | int
    reason: str
    # What reading the pragma back returns when the setting took (journal_mode answers 'wal').
    expect: str | int | None = None

    def apply(self, execute: Execute) -> str | int:
        """Set it and read it back; raise RuntimeError when the engine did not take it."""
        rows = execute(f"PRAGMA {self.pragma} = {self.value}")
        current = rows[0][0] if rows else None
        if current is None:
            back = execute(f"PRAGMA {self.pragma}")
            current = back[0][0] if back else None
        want = self.expect if self.expect is not None else self.value
        if str(current).lower() != str(want).lower():
            raise RuntimeError(f"engine kept {self.pragma}={current!r}")
        return current


def journal_mode_wal() -> Setting:
    return Setting(
        "journal_mode_wal", "journal_mode", "wal", "readers never block the writer; commits append to the log", "wal"
    )


def synchronous_normal() -> Setting:
    return Setting(
        "synchronous_normal",
        "synchronous",
        "NORMAL",
        "in WAL mode fsync only at checkpoints: never corrupts, a power cut may drop the newest commits",
        1,
    )


def synchronous_full() -> Setting:
    return Setting("synchronous_full", "synchronous", "FULL", "fsync every commit: nothing committed is lost", 2)


def fullfsync_on() -> Setting:
    return Setting(
        "fullfsync_on", "fullfsync", 1, "on macOS plain fsync leaves data in the drive cache; F_FULLFSYNC flushes it"
    )


def checkpoint_fullfsync_on() -> Setting:
    return Setting(
        "checkpoint_fullfsync_on",
        "checkpoint_fullfsync",
        1,
        "macOS: checkpoints really reach the disk before the WAL is reused",
    )


def busy_timeout(ms: int = 5000) -> Setting:
    return Setting(f"busy_timeout_{ms}", "busy_timeout", ms, "wait for a competing writer instead of failing at once")


def cache_size_mib(mib: int) -> Setting:
    return Setting(
        f"cache_size_{mib}mib", "cache_size", -mib * 1024, f"{mib} MiB page cache keeps the hot working set in memory"
    )


def temp_store_memory() -> Setting:
    return Setting("temp_store_memory", "temp_store", "MEMORY", "sorts and temp b-trees stay off the disk", 2)


def mmap_size_mib(mib: int) -> Setting:
    return Setting(
        f"mmap_size_{mib}mib",
        "mmap_size",
        mib * 1024 * 1024,
        "reads map pages instead of copying them through read()",
    )


def wal_autocheckpoint(pages: int) -> Setting:
    return Setting(
        f"wal_autocheckpoint_{pages}",
        "wal_autocheckpoint",
        pages,
        "fewer, larger checkpoints for write bursts; the WAL stays bounded",
    )


def foreign_keys_on() -> Setting:
    return Setting("foreign_keys_on", "foreign_keys", 1, "the schema's REFERENCES and ON DELETE CASCADE are enforced")


@dataclass(frozen=True)
class Profile:
    name: str
    durability: str
    settings: tuple[Setting, ...]
    # Run when a connection closes: lets SQLite refresh statistics it found stale.
    on_close: tuple[str, ...] = ("PRAGMA optimize",)


_CORRECTNESS = (foreign_keys_on(), busy_timeout(5000))

# A profile keeps a speed setting only where `python -m bench pragmas` measured a gain beyond
# noise on the node's workloads (point reads, range scans, write batches, single-row commits,
# vector sidecar updates). On linux-x86_64: WAL x1.3-7 (most on single-row commits),
# synchronous=NORMAL x2.8 on single-row commits, mmap x1.3 point reads and x1.6 range scans.
# These were measured and did not earn a place; the benchmark keeps measuring them, and
# `edgenode tune` still tries them on the user's own host and data.
CANDIDATES: tuple[Setting, ...] = (
    cache_size_mib(64),  # no gain on any workload, costs 64 MiB on each connection
    temp_store_memory(),  # within noise: the node's statements use no temp files
    wal_autocheckpoint(2000),  # inconclusive (x1.12 ±10% on sidecar updates only)
    wal_autocheckpoint(4000),
    synchronous_full(),  # the durability alternative, measured against NORMAL
)

PROFILES: dict[str, Profile] = {
    # Unmeasured here (no Mac on this bench): it carries the Linux evidence plus the macOS flush;
    # `edgenode tune` on the Mac measures the rest.
    "darwin-arm64": Profile(
        "darwin-arm64",
        "WAL + synchronous=NORMAL with F_FULLFSYNC at checkpoints: the database never corrupts; a power cut "
        "may drop commits since the last checkpoint (a replica re-pulls them from the primary).",
        (journal_mode_wal(), synchronous_normal(), checkpoint_fullfsync_on(), *_CORRECTNESS, mmap_size_mib(256)),
    ),
    "linux-arm64": Profile(
        "linux-arm64",
        "WAL + synchronous=NORMAL: never corrupts; a power cut may drop commits since the last checkpoint.",
        (journal_mode_wal(), synchronous_normal(), *_CORRECTNESS, mmap_size_mib(256)),
    ),
    "linux-x86_64": Profile(
        "linux-x86_64",
        "WAL + synchronous=NORMAL: never corrupts; a power cut may drop commits since the last checkpoint.",
        (journal_mode_wal(), synchronous_normal(), *_CORRECTNESS, mmap_size_mib(256)),
    ),
    "sqlite-defaults": Profile(
        "sqlite-defaults",
        "SQLite's defaults (rollback journal, synchronous=FULL): every commit fsynced; the baseline benchmarks "
        "compare against. Foreign keys stay on because the schema relies on them.",
        (foreign_keys_on(),),
        on_close=(),
    ),
}


def platform_key(system: str | None = None, machine: str | None = None) -> str:
    """`darwin-arm64`, `linux-x86_64`, ... for this host or the given uname values."""
    system = (system or sys.platform).lower()
    machine = (machine or platform.machine()).lower()
    if system.startswith("darwin") or system == "macos":
        system = "darwin"
    elif system.startswith("linux"):
        system = "linux"
    machine = {"aarch64": "arm64", "amd64": "x86_64", "x64": "x86_64"}.get(machine, machine)
    return f"{system}-{machine}"


def select_profile(name: str = "auto", platform_string: str | None = None, data_dir: Path | None = None) -> Profile:
    """The profile for `name`; `auto` prefers a tuned file in the data dir, then the platform's profile.

    An unknown platform falls back to linux-x86_64's settings, which are conservative on any 64-bit host.
    """
    if name == "auto":
        if data_dir is not None and (data_dir / TUNED_FILE).is_file():
            return load_tuned(data_dir / TUNED_FILE)
        name = platform_string or platform_key()
        if name not in PROFILES:
            name = "linux-arm64" if name.endswith("arm64") else "linux-x86_64"
    if name not in PROFILES:
        raise ValueError(f"unknown PRAGMA profile {name!r}; expected auto or one of {', '.join(PROFILES)}")
    return PROFILES[name]


def load_tuned(path: Path) -> Profile:
    """A profile written by `edgenode tune`: `[[setting]]` tables with name, pragma, value, reason."""
    data = tomllib.loads(path.read_text())
    settings = tuple(
        Setting(s["name"], s["pragma"], s["value"], s.get("reason", "measured by edgenode tune"), s.get("expect"))
        for s in data.get("setting", [])
    )
    return Profile(data.get("name", "tuned"), data.get("durability", "as measured by edgenode tune"), settings)


@dataclass
class PragmaReport:
    profile: str
    durability: str
    applied: dict[str, Any] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "durability": self.durability,
            "applied": self.applied,
            "refused": self.refused,
        }


def apply_profile(profile: Profile, execute: Execute, skip: frozenset[str] = frozenset()) -> PragmaReport:
    """Apply what the engine accepts; `skip` names pragmas the caller must not touch on this connection."""
    report = PragmaReport(profile.name, profile.durability)
    for setting in profile.settings:
        if setting.pragma in skip:
            report.refused[setting.name] = "not applied on this connection"
            continue
        try:
            report.applied[setting.name] = setting.apply(execute)
        except Exception as exc:
            report.refused[setting.name] = str(exc)
    return report
