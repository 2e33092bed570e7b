"""An HTTP worker process: `python -m edgenode.http_workers.worker`, started by `supervisor.py`.

It accepts on the listening socket it inherited from the owner, answers the hot read paths from
its own reader processes (`dispatch.py`) and forwards the rest to the owner's unix socket. It
holds no write and no stream state, so `kill -9` loses nothing: the owner starts another. It stops
when the owner is gone (`edgenode.lifeline`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from typing import Any

import msgspec
from starlette.routing import BaseRoute

from edgenode import lifeline, owner
from edgenode.api.component import Component
from edgenode.auth import Authenticator
from edgenode.config import Settings
from edgenode.http_workers.forward import OwnerLink
from edgenode.http_workers.supervisor import (
    EPOCH_FD_ENV,
    LISTEN_FD_ENV,
    OWNER_SOCKET_ENV,
    READY_FD_ENV,
    SETTINGS_ENV,
)

log = logging.getLogger(__name__)


class OwnerLinkComponent(Component):
    """Tells the owner this worker is ready (the last step of its start: the server accepts right
    after), re-reads the JWT key file as often as the owner does (a rotated key is refused here
    too, within a heartbeat), and closes the worker's connections to the owner when it stops."""

    name = "owner_link"

    def __init__(self, link: OwnerLink, ready_fd: int, authenticator: Authenticator, every: float) -> None:
        self.link = link
        self.ready_fd = ready_fd
        self.authenticator = authenticator
        self.every = every
        self._key_watch: asyncio.Task[None] | None = None

    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self) -> None:
        if self.authenticator.jwt_key_file is not None:
            self._key_watch = asyncio.create_task(self._watch_key(), name="jwt-key")
        os.write(self.ready_fd, b"1")
        os.close(self.ready_fd)

    async def _watch_key(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.authenticator.refresh_key()
            except Exception:
                log.exception("checking the JWT key file failed")

    async def stop(self) -> None:
        if self._key_watch is not None:
            self._key_watch.cancel()
        await self.link.aclose()

    def status(self) -> dict[str, Any]:
        return {"forwarded": self.link.forwarded}


def main() -> None:
    lifeline.watch()
    settings = msgspec.json.decode(os.environ.pop(SETTINGS_ENV), type=Settings)
    listen_fd = int(os.environ.pop(LISTEN_FD_ENV))
    epoch_fd = int(os.environ.pop(EPOCH_FD_ENV))
    owner_socket = os.environ.pop(OWNER_SOCKET_ENV)
    ready_fd = int(os.environ.pop(READY_FD_ENV))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s[worker]: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per forwarded request otherwise
    owner.warm_up()  # reader processes fork from it

    from edgenode import http_server
    from edgenode.api import create_app
    from edgenode.commands.serve import error_body
    from edgenode.encryption import load_key
    from edgenode.hrana_node.component import HranaComponent
    from edgenode.http_workers.database import ReadOnlyLocalDatabase
    from edgenode.http_workers.dispatch import Dispatcher
    from edgenode.http_workers.epoch import SchemaEpoch
    from edgenode.pragmas import select_profile

    db = ReadOnlyLocalDatabase(
        settings.data_path,
        select_profile(settings.profile, data_dir=settings.data_path),
        SchemaEpoch(epoch_fd),
        readers=settings.read_connections,
        max_rows=settings.max_rows,
        timeout_ms=settings.query_timeout_ms,
        encryption_key=load_key(settings),
    )
    link = OwnerLink(owner_socket, error_body)
    authenticator = Authenticator.from_settings(settings.auth_token, settings.read_token, settings.jwt_key_file)
    components = [
        HranaComponent(settings, db, authenticator, stateless=True),
        OwnerLinkComponent(link, ready_fd, authenticator, settings.changes_heartbeat),
    ]
    app = create_app(settings, db, components=components, authenticator=authenticator)
    dispatcher = Dispatcher(app, db, link, settings.max_body_bytes)
    listener = socket.socket(fileno=listen_fd)
    http_server.run(dispatcher, settings, error_body, access_log=False, sockets=[listener])


if __name__ == "__main__":
    main()
