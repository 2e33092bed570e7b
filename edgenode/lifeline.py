"""A child process that stops when the process that started it is gone, even after `kill -9`.

The parent hands the child a pipe as stdin and keeps the write end; the kernel closes that end
however the parent exits, so the child reads EOF and stops itself with SIGTERM, its normal
graceful stop. Portable where Linux's PR_SET_PDEATHSIG is not (macOS has no equivalent).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Any

ENV = "EDGENODE_LIFELINE"
# A child that does not finish its graceful stop within this long after its parent died exits anyway.
GRACE_SECONDS = 60.0


def child_options(env: dict[str, str] | None = None) -> dict[str, Any]:
    """`subprocess.Popen` keyword arguments that tie the child's life to this process."""
    return {"stdin": subprocess.PIPE, "env": {**(os.environ if env is None else env), ENV: "1"}}


def watch() -> None:
    """In the child: when started with `child_options()`, stop once the parent is gone.

    The variable is removed so the child's own children (which get their own lifelines) do not
    mistake their stdin for one."""
    if os.environ.pop(ENV, None) != "1":
        return

    def wait_for_eof() -> None:
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_SECONDS)
        os._exit(1)

    threading.Thread(target=wait_for_eof, name="lifeline", daemon=True).start()
