"""REST and Hrana point reads at `--http-workers` 1, 2, 3 side by side, Hrana next to turso:
`python -m bench.http_workers [--seconds S] [--workers 1,2,3] [--clients 8,32]`.

Not a suite member (it writes no results file): a quick A/B of the process count, with the
workloads, seeds and load generator of `bench/api_reads.py` and `bench/hrana.py` (Hrana with a new
connection per request, like for like with `turso --sync-server`, and keep-alive). Each worker
count gets a fresh node on a copy of one seeded file; turso runs once, measured right after the
node at each level so both see the same machine state. It prints the machine's load average: on a
busy machine the figures mean little.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from bench import api_reads, hrana
from bench.common import NodeProcess

ROWS = 20_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_workers", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per level and server")
    parser.add_argument("--workers", default="1,2,3", help="http_workers values, in order")
    parser.add_argument("--clients", default="8,32", help="concurrency levels")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    print(f"load average before: {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgenode-bench-workers-") as name:
        tmp = Path(name)
        hrana.seed(tmp / "hrana.db", ROWS)
        shutil.copy(tmp / "hrana.db", tmp / "turso.db")
        turso = hrana.TursoServer(tmp / "turso.db", tmp / "turso.log")
        try:
            for round_, workers in enumerate(args.workers.split(",")):
                rest_dir, hrana_dir = tmp / f"rest-{round_}", tmp / f"hrana-{round_}"
                hrana_dir.mkdir()
                shutil.copy(tmp / "hrana.db", hrana_dir / "edgenode.db")
                node = NodeProcess(["serve", "--data-dir", str(rest_dir), "--http-workers", workers], tmp / "rest.log")
                try:
                    node.wait_ready()
                    api_reads.seed(node.url, ROWS)
                    time.sleep(2)  # the workers are up
                    for clients in levels:
                        r = api_reads.http_load(node.url, clients, args.seconds, ROWS)
                        print(
                            f"REST  http_workers={workers} clients={clients}: {r['qps']:,.0f} req/s, "
                            f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, errors {r['errors']}",
                            flush=True,
                        )
                finally:
                    node.stop()
                node = NodeProcess(
                    ["serve", "--data-dir", str(hrana_dir), "--no-migrate", "--http-workers", workers],
                    tmp / "hrana.log",
                )
                try:
                    node.wait_ready()
                    time.sleep(2)
                    for clients in levels:
                        new = hrana.http_load(node.url, "read", clients, args.seconds, ROWS, False)
                        peer = hrana.http_load(turso.url, "read", clients, args.seconds, ROWS, False)
                        kept = hrana.http_load(node.url, "read", clients, args.seconds, ROWS, True)
                        print(
                            f"Hrana http_workers={workers} clients={clients}: new connection {new['qps']:,.0f} req/s "
                            f"(p99 {new['p99_ms']:.1f} ms) vs turso {peer['qps']:,.0f} (p99 {peer['p99_ms']:.1f} ms) "
                            f"= {new['qps'] / peer['qps']:.2f}x; keep-alive {kept['qps']:,.0f} req/s "
                            f"(p99 {kept['p99_ms']:.1f} ms); errors {new['errors']}/{kept['errors']}",
                            flush=True,
                        )
                finally:
                    node.stop()
        finally:
            turso.stop()
    print(f"load average after: {os.getloadavg()}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
