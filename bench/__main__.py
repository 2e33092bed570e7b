"""Run the benchmark suite: `python -m bench [NAME ...] [--quick] [--out DIR]`.

Each member is a module `bench/<name>.py` with `run(quick: bool, out: Path) -> dict`; it prints
its figures and the suite writes `<out>/<name>.json`. A member that could not measure a peer it is
meant to compare against lists it under `peers_missing`: its figures are still written, but the run
fails, since a comparison that did not run is not a result.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.common import DEFAULT_OUT, save

SUITE = [
    "api_reads",
    "profile",
    "sync",
    "replication",
    "vectors",
    "hrana",
    "pragmas",
    "cold_start",
    "search",
    "soak",
    "backup",
    "writes",
    "changes",
]


def available() -> list[str]:
    here = Path(__file__).parent
    return [name for name in SUITE if (here / f"{name}.py").exists()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"members to run (default: all of {', '.join(available())})")
    parser.add_argument("--quick", action="store_true", help="a smoke pass: small sizes, a few minutes at most")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON and PNG files go")
    args = parser.parse_args(argv)
    names = args.names or available()
    unknown = [n for n in names if n not in available()]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available())}")
    failed = []
    for name in names:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        start = time.monotonic()
        try:
            module = importlib.import_module(f"bench.{name}")
            result = module.run(quick=args.quick, out=args.out)
            result.setdefault("quick", args.quick)
            path = save(name, result, args.out)
            print(f"   wrote {path} in {time.monotonic() - start:.1f}s", flush=True)
            if result.get("peers_missing"):
                print(f"   peers not measured: {'; '.join(result['peers_missing'])}", flush=True)
                failed.append(name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
