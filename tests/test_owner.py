"""Connection owners in child processes: calls, errors, deaths and cancellation."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from edgenode.engine import open_local, run_read
from edgenode.errors import SQLError
from edgenode.owner import OwnerDied, ProcessOwner
from edgenode.pragmas import select_profile

SLOW = "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 30000000) SELECT count(*) FROM c"


def pid_of_child(_conn: Any) -> int:
    return os.getpid()


def fail(_conn: Any) -> None:
    raise SQLError("boom", 3)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def owner(tmp_path: Path) -> ProcessOwner:
    return ProcessOwner("test-owner", open_local, str(tmp_path / "db"), select_profile(), False)


def test_calls_run_in_another_process_and_return_results(tmp_path: Path) -> None:
    async def scenario() -> None:
        o = owner(tmp_path)
        await o.start()
        assert await o.call(pid_of_child) == o.pid != os.getpid()
        result = await o.call(run_read, "SELECT 1 + 1", [], 10, 1000)
        assert result.rows == [[2]]
        await o.close()

    run(scenario())


def test_errors_cross_the_process_boundary_intact(tmp_path: Path) -> None:
    async def scenario() -> None:
        o = owner(tmp_path)
        await o.start()
        with pytest.raises(SQLError) as info:
            await o.call(fail)
        assert info.value.index == 3 and str(info.value) == "boom"
        assert await o.call(pid_of_child) == o.pid  # still usable
        await o.close()

    run(scenario())


def test_the_event_loop_keeps_running_while_a_statement_computes(tmp_path: Path) -> None:
    async def scenario() -> None:
        o = owner(tmp_path)
        await o.start()
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        loop = asyncio.get_running_loop()
        began = loop.time()
        await o.call(run_read, SLOW, [], 10, 60_000)
        elapsed = loop.time() - began
        task.cancel()
        assert ticks >= 0.5 * elapsed / 0.01  # a thread-owned libsql connection gives ~0 here
        await o.close()

    run(scenario())


def test_a_killed_owner_reports_death_and_restarts(tmp_path: Path) -> None:
    async def scenario() -> None:
        o = owner(tmp_path)
        await o.start()
        os.kill(o.pid, signal.SIGKILL)
        with pytest.raises(OwnerDied):
            await o.call(pid_of_child)
        await o.restart()
        assert await o.call(pid_of_child) == o.pid
        await o.close()

    run(scenario())


def test_a_cancelled_call_retires_the_process_so_no_reply_goes_astray(tmp_path: Path) -> None:
    async def scenario() -> None:
        o = owner(tmp_path)
        await o.start()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(o.call(run_read, SLOW, [], 10, 60_000), 0.2)
        with pytest.raises(OwnerDied):
            await o.call(pid_of_child)
        await o.restart()
        assert (await o.call(run_read, "SELECT 7", [], 10, 1000)).rows == [[7]]
        await o.close()

    run(scenario())


def test_large_arguments_and_results_cross_under_uvloop(tmp_path: Path) -> None:
    import uvloop

    async def scenario() -> None:
        o = owner(tmp_path)
        await o.start()
        blob = b"x" * 8_000_000  # far beyond a pipe buffer: a non-blocking send would fail with EAGAIN
        for _ in range(3):
            result = await o.call(run_read, "SELECT length(?), ?", [blob, blob], 10, 10_000)
            assert result.rows[0][0] == len(blob)
        await o.close()

    uvloop.run(scenario())
