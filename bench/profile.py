"""Where a request's time goes in the node process: a cProfile per request path, kept as text.

Each path runs sequentially (one caller) against a real standalone node app driven in-process
through ASGI (no sockets, no load generator competing for the CPU): REST `/api/v1/query` and
`/api/v1/execute`, Hrana `/v3/pipeline` reads and writes, `LocalDatabase.read`/`write`, and writes
from 8 concurrent callers (group commit). It prints microseconds per call and writes
`<out>/profiles/<path>.txt` with the top functions by own time and by cumulative time.

What a profile cannot see: the connection-owner processes (the engine's own time shows as the
wait on their pipes: `select`/`epoll`), and Hrana's statements in the server's worker threads
(cProfile follows the event-loop thread only).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from bench.common import DEFAULT_OUT, machine, table

Call = Callable[[int], Awaitable[None]]


class Asgi:
    """Drives a Starlette app in-process: its lifespan, and one request at a time."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._done: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Asgi:
        async def receive() -> dict[str, Any]:
            return await self._events.get()

        async def send(message: dict[str, Any]) -> None:
            await self._done.put(message)

        self._task = asyncio.create_task(self.app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
        await self._events.put({"type": "lifespan.startup"})
        message = await self._done.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"node did not start: {message}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._events.put({"type": "lifespan.shutdown"})
        await self._done.get()
        if self._task is not None:
            await self._task

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # no disconnect while the response is produced
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return status, b"".join(chunks)


def _checked(status: int, payload: bytes, what: str) -> None:
    if status != 200:
        raise RuntimeError(f"{what}: {status} {payload[:300]!r}")


async def _profile(name: str, call: Call, n: int, out: Path, concurrency: int = 1) -> dict[str, Any]:
    for i in range(min(50, n)):  # warm caches (statement analysis, connections)
        await call(i)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    if concurrency == 1:
        for i in range(n):
            await call(i)
    else:

        async def worker(w: int) -> None:
            for i in range(w, n, concurrency):
                await call(i)

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    profiler.disable()
    elapsed = time.perf_counter() - start
    text = io.StringIO()
    text.write(f"# {name}: {n} calls, {concurrency} concurrent, {elapsed / n * 1e6:.0f} us/call (profiled)\n\n")
    stats = pstats.Stats(profiler, stream=text)
    text.write("## by own time\n")
    stats.sort_stats("tottime").print_stats(25)
    text.write("## by cumulative time\n")
    stats.sort_stats("cumulative").print_stats(30)
    folder = out / "profiles"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text.getvalue())
    return {"path": name, "calls": n, "concurrency": concurrency, "us_per_call": elapsed / n * 1e6}


async def _paths(data_dir: Path, n: int, out: Path) -> list[dict[str, Any]]:
    from edgenode.config import Settings
    from edgenode.node import build_node_app

    app = build_node_app(Settings(data_dir=str(data_dir)))
    rows = []
    async with Asgi(app) as node:
        db = app.state.node.db
        setup = [
            {"sql": "CREATE TABLE bench_people (id INTEGER PRIMARY KEY, email TEXT, username TEXT)"},
            *(
                {"sql": "INSERT INTO bench_people (email, username) VALUES (?, ?)", "params": [f"u{i}@x", f"u{i}"]}
                for i in range(1000)
            ),
        ]
        _checked(*await node.post("/api/v1/execute", msgspec.json.encode({"statements": setup})), "setup")
        read_sql = "SELECT id, email, username FROM bench_people WHERE id = ?"
        write_sql = "INSERT INTO bench_people (email, username) VALUES (?, ?)"

        async def rest_query(i: int) -> None:
            body = msgspec.json.encode({"sql": read_sql, "params": [i % 1000 + 1]})
            _checked(*await node.post("/api/v1/query", body), "rest query")

        async def rest_execute(i: int) -> None:
            body = msgspec.json.encode({"statements": [{"sql": write_sql, "params": [f"w{i}@x", f"w{i}"]}]})
            _checked(*await node.post("/api/v1/execute", body), "rest execute")

        def pipeline(sql: str, args: list[dict[str, Any]]) -> bytes:
            stmt = {"sql": sql, "args": args}
            return msgspec.json.encode(
                {"baton": None, "requests": [{"type": "execute", "stmt": stmt}, {"type": "close"}]}
            )

        async def hrana_read(i: int) -> None:
            body = pipeline(read_sql, [{"type": "integer", "value": str(i % 1000 + 1)}])
            _checked(*await node.post("/v3/pipeline", body), "hrana read")

        async def hrana_write(i: int) -> None:
            args = [{"type": "text", "value": f"h{i}@x"}, {"type": "text", "value": f"h{i}"}]
            _checked(*await node.post("/v3/pipeline", pipeline(write_sql, args)), "hrana write")

        rows.append(await _profile("rest_query", rest_query, n, out))
        rows.append(await _profile("rest_execute", rest_execute, n, out))
        rows.append(await _profile("rest_execute_8_concurrent", rest_execute, n, out, concurrency=8))
        rows.append(await _profile("hrana_read", hrana_read, n, out))
        rows.append(await _profile("hrana_write", hrana_write, n, out))
        rows.append(await _profile("hrana_write_8_concurrent", hrana_write, n, out, concurrency=8))

        async def db_read(i: int) -> None:
            await db.read(read_sql, [i % 1000 + 1])

        rows.append(await _profile("database_read", db_read, n, out))
    return rows


def run(quick: bool = False, out: Path | None = None) -> dict[str, Any]:
    out = out or DEFAULT_OUT
    n = 200 if quick else 3000
    with tempfile.TemporaryDirectory(prefix="edgenode-profile-") as tmp:
        rows = asyncio.run(_paths(Path(tmp) / "data", n, out))
    print(table(rows, ["path", "calls", "concurrency", "us_per_call"]))
    print(f"   profiles in {out / 'profiles'}", flush=True)
    return {
        "benchmark": "profile",
        "command": "python -m bench profile" + (" --quick" if quick else ""),
        "machine": machine(),
        "parameters": {"calls_per_path": n, "profiles": str(out / "profiles")},
        "rows": rows,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
