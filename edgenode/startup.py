"""Where a node's start-up time goes: named marks in seconds since the process started.

The marks are logged in one line when the node is first ready, so a slow restart (after `kill -9`,
say) can be read off its log instead of guessed at (`python -m bench.cold_start kill9` collects them).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("edgenode.startup")


def _process_age() -> float:
    """Seconds since this process was created (Linux: from /proc; elsewhere: since this import)."""
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat, counted after the ")" of the name
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


_origin = time.monotonic() - _process_age()
marks: dict[str, float] = {}
_reported = False


def mark(name: str) -> None:
    """Record that `name` finished now (the first time only)."""
    marks.setdefault(name, round(time.monotonic() - _origin, 3))


def ready() -> None:
    """The node answered /ready with 200 for the first time: log the timeline once."""
    global _reported
    if _reported:
        return
    _reported = True
    mark("ready")
    log.info(
        "ready %.2f s after process start (%.2f s of CPU in this process): %s",
        marks["ready"],
        time.process_time(),
        ", ".join(f"{k} {v}" for k, v in marks.items()),
    )
