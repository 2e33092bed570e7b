"""A libSQL connection owned by a child process.

The libsql Python binding holds the GIL for the whole of every call, network I/O of `sync()`
included (measured: a 134 ms bootstrap left the event loop 2 of 26 ticks). A connection on a
thread therefore still stalls the whole node for as long as any statement runs. So each
connection lives in its own process: the event loop only waits on a pipe, reads use both
cores, and a runaway statement can really be stopped by killing its process.

Calls are `owner.call(fn, *args)` where `fn(conn, *args)` is a module-level function (it is sent
by reference) and arguments and results pickle. One call runs at a time per owner.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

Opener = Callable[..., tuple[Any, Any]]  # (*args) -> (connection, metadata for the parent)


class OwnerDied(Exception):
    """The owning process exited (killed, crashed) while a call was running or before it ran."""


def _context() -> multiprocessing.context.BaseContext:
    # forkserver: children start from a clean, preloaded process (no inherited event loop or
    # threads, unlike fork) and in a fraction of spawn's start-up time.
    if sys.platform != "win32" and "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["edgenode.owner", "edgenode.engine", "edgenode.replica.connection"])
        return ctx
    return multiprocessing.get_context("spawn")


def warm_up() -> None:
    """Start the fork server in the background (a fresh interpreter importing the preloads), so the
    first connection process forks from a ready server while the node is still importing."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver

        threading.Thread(target=forkserver.ensure_running, name="forkserver-warm-up", daemon=True).start()


def _serve(pipe: multiprocessing.connection.Connection, opener: Opener, args: tuple[Any, ...]) -> None:
    try:
        conn, meta = opener(*args)
    except BaseException as exc:
        _send_quietly(pipe, ("err", _portable(exc)))
        return
    # A failed send: the parent died while we opened (killed during start-up), nobody to serve.
    serving = _send_quietly(pipe, ("ok", meta))
    while serving:
        try:
            message = pipe.recv()
        except (EOFError, OSError):
            break  # the parent is gone: nothing more will be asked
        if message is None:
            break
        fn, call_args = message
        try:
            reply = ("ok", fn(conn, *call_args))
        except BaseException as exc:
            reply = ("err", _portable(exc))
        serving = _send_quietly(pipe, reply)
    try:
        conn.close()
    except Exception:
        pass


def _send_quietly(pipe: multiprocessing.connection.Connection, message: tuple[str, Any]) -> bool:
    """Send; False when the parent is gone (its end of the pipe closed), which is no error of ours."""
    try:
        pipe.send(message)
        return True
    except OSError:  # BrokenPipeError, ConnectionResetError
        return False


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeError carrying its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")


class ProcessOwner:
    def __init__(self, name: str, opener: Opener, *args: Any) -> None:
        self.name = name
        self._opener = opener
        self._args = args
        self._process: multiprocessing.process.BaseProcess | None = None
        self._pipe: multiprocessing.connection.Connection | None = None
        # One thread waits on the pipe so the event loop never does.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.meta: Any = None
        self._lock = asyncio.Lock()
        self._broken = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> Any:
        parent, child = _context().Pipe()
        process = _context().Process(target=_serve, args=(child, self._opener, self._args), name=self.name, daemon=True)
        process.start()
        child.close()
        self._process, self._pipe = process, parent
        self._broken = False
        status, payload = await asyncio.get_running_loop().run_in_executor(self._executor, self._receive)
        if status == "err":
            await self._reap()
            raise payload
        self.meta = payload
        return payload

    def _receive(self) -> tuple[str, Any]:
        assert self._pipe is not None
        try:
            return self._pipe.recv()
        except (EOFError, OSError) as exc:
            raise OwnerDied(f"{self.name} exited") from exc

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            pipe = self._pipe
            if pipe is None or self._broken:
                raise OwnerDied(f"{self.name} is not running")
            loop = asyncio.get_running_loop()
            # uvloop's add_reader leaves the descriptor non-blocking; Connection.send/recv assume
            # a blocking one (a large message otherwise fails half-written with EAGAIN).
            os.set_blocking(pipe.fileno(), True)
            try:
                pipe.send((fn, args))
            except (BrokenPipeError, OSError) as exc:
                raise OwnerDied(f"{self.name} exited") from exc
            # Wait for the reply on the event loop itself: no thread hop per call.
            ready = loop.create_future()
            fd = pipe.fileno()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            except asyncio.CancelledError:
                # Its reply would reach the next caller: retire the process instead (an open
                # transaction in it rolls back; nothing was acknowledged).
                self._broken = True
                self.kill()
                raise
            finally:
                loop.remove_reader(fd)
                os.set_blocking(fd, True)
            status, payload = self._receive()
        if status == "err":
            raise payload
        return payload

    def kill(self) -> None:
        """Stop it now, mid-statement if need be (the waiting call gets OwnerDied)."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    async def restart(self) -> Any:
        self.kill()
        await self._reap()
        return await self.start()

    async def _reap(self) -> None:
        process, pipe = self._process, self._pipe
        self._process = self._pipe = None
        if pipe is not None:
            pipe.close()
        if process is not None:
            await asyncio.to_thread(process.join, 10)

    async def close(self, on_close: Sequence[str] = ()) -> None:
        if self._pipe is not None and self._process is not None and self._process.is_alive():
            try:
                for sql in on_close:
                    await self.call(_execute_quietly, sql)
                self._pipe.send(None)
            except (OwnerDied, BrokenPipeError, OSError):
                pass
        await self._reap()
        self._executor.shutdown(wait=False)


def _execute_quietly(conn: Any, sql: str) -> None:
    try:
        conn.execute(sql)
    except Exception as exc:  # `PRAGMA optimize` on close is best effort
        log.debug("%s on close failed: %s", sql, exc)
