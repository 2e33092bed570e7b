"""The owner's side of HTTP workers: the shared sockets, and worker processes kept running.

`HttpWorkers.prepare(settings)` binds the TCP listening socket (the owner's uvicorn serves it and
every worker inherits it: one accept queue, which the kernel shares out on Linux and macOS alike,
where SO_REUSEPORT would not balance on macOS) and a unix socket in a private temporary directory,
on which the owner serves the requests workers forward. As the node's last component it starts
`http_workers - 1` workers once everything else runs, restarts one that exits (a `kill -9` costs
its in-flight reads only), and stops them before the node stops. Workers stop by themselves when
the owner dies (`edgenode.lifeline`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import uvicorn
from starlette.routing import BaseRoute

from edgenode import lifeline
from edgenode.api.component import Component
from edgenode.config import Settings
from edgenode.http_workers.epoch import SchemaEpoch

log = logging.getLogger(__name__)

# What the owner hands a worker (the settings carry tokens: never on the command line).
SETTINGS_ENV = "EDGENODE_WORKER_SETTINGS"
LISTEN_FD_ENV = "EDGENODE_WORKER_LISTEN_FD"
EPOCH_FD_ENV = "EDGENODE_WORKER_EPOCH_FD"
OWNER_SOCKET_ENV = "EDGENODE_WORKER_OWNER_SOCKET"
READY_FD_ENV = "EDGENODE_WORKER_READY_FD"  # the worker writes a byte there once it is about to accept

_DIR_PREFIX = "edgenode-http-"
_POLL_SECONDS = 0.2
_RESTART_PAUSE = 1.0  # a worker that dies within this long of starting waits as long before the next
_STOP_SECONDS = 10.0


class HttpWorkers(Component):
    name = "http_workers"

    def __init__(self, settings: Settings, listener: socket.socket, owner_dir: str, epoch: SchemaEpoch) -> None:
        self.settings = settings
        self.count = settings.http_workers - 1
        self.listener = listener
        self.owner_dir = owner_dir
        self.owner_socket_path = os.path.join(owner_dir, "owner.sock")
        self.owner_socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.owner_socket.bind(self.owner_socket_path)
        self.owner_socket.listen(2048)
        self.epoch = epoch
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self.started_at: list[float] = [0.0] * self.count
        self.restarts = 0
        self._ready_pipes: list[int | None] = [None] * self.count
        self._ever_ready = [False] * self.count
        self._monitor: asyncio.Task[None] | None = None
        self._stopping = False

    @classmethod
    def prepare(cls, settings: Settings) -> HttpWorkers:
        config = uvicorn.Config(app=None, host=settings.host, port=settings.port)
        listener = config.bind_socket()
        _remove_dead_owners_dirs()
        # 0700: only this user may forward. The pid in the name lets a later start remove it after kill -9.
        owner_dir = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")
        return cls(settings, listener, owner_dir, SchemaEpoch.create())

    @property
    def sockets(self) -> list[socket.socket]:
        """What the owner's HTTP server listens on."""
        return [self.listener, self.owner_socket]

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self) -> None:
        for index in range(self.count):
            await self._spawn(index)
        self._monitor = asyncio.create_task(self._watch(), name="http-workers")

    async def drain(self) -> None:
        """Stop the workers gracefully while the owner still serves what they forward: run when the
        owner's graceful stop begins, before its server stops taking connections."""
        self._stopping = True
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        await asyncio.to_thread(self._stop_all)

    async def stop(self) -> None:
        await self.drain()
        for index in range(self.count):
            self._close_ready_pipe(index)
        shutil.rmtree(self.owner_dir, ignore_errors=True)

    def not_ready_reason(self) -> str | None:
        # Until each worker first accepts, the node serves with less than its configured capacity.
        waiting = self._ever_ready.count(False)
        return f"{waiting} of {self.count} HTTP worker(s) still starting" if waiting else None

    def status(self) -> dict[str, Any]:
        return {
            "workers": self.count,
            "pids": [p.pid for p in self.processes if p is not None and p.poll() is None],
            "restarts": self.restarts,
        }

    async def _spawn(self, index: int) -> None:
        env = {
            **os.environ,
            SETTINGS_ENV: msgspec.json.encode(self.settings).decode(),
            LISTEN_FD_ENV: str(self.listener.fileno()),
            EPOCH_FD_ENV: str(self.epoch.fd),
            OWNER_SOCKET_ENV: self.owner_socket_path,
        }
        ready_read, ready_write = os.pipe()
        os.set_blocking(ready_read, False)
        env[READY_FD_ENV] = str(ready_write)
        args = [sys.executable, "-m", "edgenode.http_workers.worker"]
        fds = (self.listener.fileno(), self.epoch.fd, ready_write)
        try:
            process = await asyncio.to_thread(subprocess.Popen, args, pass_fds=fds, **lifeline.child_options(env))
        finally:
            os.close(ready_write)
        self._close_ready_pipe(index)
        self._ready_pipes[index] = ready_read
        self.processes[index] = process
        self.started_at[index] = time.monotonic()
        log.info("http worker %d started (pid %d)", index + 1, process.pid)

    def _check_ready(self, index: int) -> None:
        fd = self._ready_pipes[index]
        if fd is None:
            return
        try:
            said = os.read(fd, 1)
        except BlockingIOError:
            return
        if said:
            self._ever_ready[index] = True
        self._close_ready_pipe(index)  # a byte, or EOF: the worker exited before it was ready

    def _close_ready_pipe(self, index: int) -> None:
        fd, self._ready_pipes[index] = self._ready_pipes[index], None
        if fd is not None:
            os.close(fd)

    async def _watch(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_POLL_SECONDS if all(self._ever_ready) else 0.02)
            for index in range(self.count):
                self._check_ready(index)
            for index, process in enumerate(self.processes):
                if process is None or process.poll() is None or self._stopping:
                    continue
                code = process.returncode
                log.warning("http worker %d (pid %d) exited with %s; restarting it", index + 1, process.pid, code)
                if time.monotonic() - self.started_at[index] < _RESTART_PAUSE:
                    await asyncio.sleep(_RESTART_PAUSE)
                self.restarts += 1
                await self._spawn(index)

    def _stop_all(self) -> None:
        started = [p for p in self.processes if p is not None]
        live = [p for p in started if p.poll() is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_SECONDS
        for process in live:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("http worker (pid %d) did not stop within %g s; killed", process.pid, _STOP_SECONDS)
                process.kill()
                process.wait()
        for process in started:
            if process.stdin is not None:
                process.stdin.close()


def _remove_dead_owners_dirs() -> None:
    """Socket directories of owners killed with -9 (a graceful stop removes its own)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*-*"):
        pid = path.name[len(_DIR_PREFIX) :].split("-", 1)[0]
        if not pid.isdigit() or not path.is_dir() or path.stat().st_uid != os.getuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's
