"""Entry point of the frozen `edgenode` executable (.ci/release/build.py freezes this module).

A frozen executable is its own interpreter: every child process edgenode starts runs
`sys.executable` again. This entry makes that safe:

- `multiprocessing.freeze_support()` first: the forkserver and resource tracker that
  `edgenode.owner` starts re-run the executable with interpreter flags and `-c <bootstrap>`, and
  PyInstaller's version of freeze_support recognises and runs those;
- `-m MODULE ARGS...` runs a module as `python -m` would, so the children started as
  `[sys.executable, "-m", ...]` (the sync relay, `edgenode dev`'s primary and node) start the same
  way from a venv and from the executable;
- anything else is the command line (`edgenode serve ...`).
"""

from __future__ import annotations

import multiprocessing
import runpy
import sys


def main() -> None:
    multiprocessing.freeze_support()
    if len(sys.argv) >= 3 and sys.argv[1] == "-m":
        module = sys.argv[2]
        sys.argv = [sys.executable, *sys.argv[3:]]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    from edgenode.cli import main as cli

    cli(prog_name="edgenode")


if __name__ == "__main__":
    main()
