"""Test-only crash points of a node: `EDGENODE_CRASH_AT=N3` makes the process (the node's main process
or its replica connection's process) die by SIGKILL when it reaches the point named N3.

The points are the `kill -9` moments of docs/local-first.md §6 (N1-N9), so the crash tests can hit the
narrow windows of the local-first write path deterministically, with a real kill -9, instead of hoping
a random kill lands there. The variable is read once, at import: when it is unset a crash point costs
one comparison of a module global with a string. Before dying, the point writes one line to stderr
(`edgenode: crash point N3`), which is how a test knows the window was hit.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "EDGENODE_CRASH_AT"
_AT = os.environ.get(ENV) or None


def crash_point(name: str) -> None:
    """Die here, by SIGKILL (no cleanup, no flush of anything but this line), if ENV names `name`."""
    if _AT is not None and _AT == name:
        sys.stderr.write(f"edgenode: crash point {name} (pid {os.getpid()})\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    """Whether ENV names `name` (for a point that must be scheduled rather than hit inline)."""
    return _AT is not None and _AT == name
