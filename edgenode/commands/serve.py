"""`edgenode serve`: run a node (standalone, or a replica when a primary is configured)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from edgenode.backup import HalfRestored
from edgenode.cli import settings_options
from edgenode.config import Settings

if TYPE_CHECKING:
    from edgenode.http_workers.supervisor import HttpWorkers


def check_exposure(settings: Settings) -> None:
    if not settings.binds_loopback and not (settings.auth_token or settings.jwt_key_file):
        raise click.UsageError(
            f"refusing to listen on {settings.host} without a token: anyone who can reach it could read and write. "
            "Set --auth-token / EDGENODE_AUTH_TOKEN (or --jwt-key-file), or bind 127.0.0.1."
        )


def build_app(settings: Settings, workers: HttpWorkers | None = None):
    from edgenode.node import build_node_app

    return build_node_app(settings, workers)


def check_http_workers(settings: Settings) -> None:
    if settings.http_workers > 1 and settings.is_replica:
        raise click.UsageError(
            f"--http-workers {settings.http_workers}: a replica serves HTTP from one process for now "
            "(HTTP workers answer reads from a standalone node's file); drop the flag or set it to 1."
        )


@click.command()
@settings_options
def serve(settings: Settings) -> None:
    """Run the node: REST API, Hrana and vector search over the local database."""
    check_exposure(settings)
    check_http_workers(settings)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edgenode.encryption import EncryptionError, check_start

    try:
        _, lines = check_start(
            settings,
            "replica/replica.db" if settings.is_replica else "edgenode.db",
            "replica" if settings.is_replica else "standalone",
        )
    except EncryptionError as exc:
        raise click.ClickException(str(exc)) from None
    for line in lines:
        click.echo(line, err=True)
    from edgenode import owner, startup

    owner.warm_up()  # connection processes fork from it; it starts while the node imports
    startup.mark("imports")
    workers = None
    if settings.http_workers > 1:
        from edgenode.http_workers.supervisor import HttpWorkers

        workers = HttpWorkers.prepare(settings)
    try:
        app = build_app(settings, workers)
    except HalfRestored as exc:
        raise click.ClickException(str(exc)) from exc
    startup.mark("app_built")
    from edgenode import http_server

    if workers is None:
        http_server.run(app, settings, error_body, access_log=False)
    else:
        http_server.run(
            app, settings, error_body, sockets=workers.sockets, before_shutdown=workers.drain, access_log=False
        )


def error_body(path: str, code: str, message: str) -> bytes:
    """An error the HTTP server answers itself (a stalled body's 408), in the shape of the route's API."""
    from edgenode.api.errors import error_body as api_error_body

    return api_error_body(path, code, message)
