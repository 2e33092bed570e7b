"""`edgenode primary` (serve a local primary) and `edgenode token` (mint JWTs for it)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from edgenode.cli import settings_options
from edgenode.config import Settings


@click.command()
@settings_options
def primary(settings: Settings) -> None:
    """Run a local libSQL primary that embedded replicas sync from (like `turso dev`)."""
    from edgenode import http_server
    from edgenode.backup import HalfRestored, check_not_half_restored
    from edgenode.primary.app import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.binds_loopback and not (settings.auth_token or settings.read_token or settings.jwt_key_file):
        raise click.UsageError("binding a non-loopback address needs --auth-token, --read-token or --jwt-key-file")
    try:
        check_not_half_restored(settings.data_path)
    except HalfRestored as exc:
        raise click.ClickException(str(exc)) from exc
    from edgenode.encryption import EncryptionError, check_start

    try:
        check_start(settings, "primary.db", "primary")
    except EncryptionError as exc:
        raise click.ClickException(str(exc)) from None
    app = create_app(settings)
    # uvicorn turns SIGTERM/SIGINT into a graceful shutdown, which runs the app's lifespan exit. The
    # bound keeps a long-polling pull (up to 30 s) or a slow download from holding the shutdown up.
    http_server.run(app, settings, _error_body, timeout_graceful_shutdown=10)


def _error_body(path: str, code: str, message: str) -> bytes:
    from edgenode.primary.app import error_body

    return error_body(path, code, message)


@click.command()
@click.option("--data-dir", envvar="EDGENODE_DATA_DIR", default="./.edgenode", show_default=True, type=click.Path())
@click.option("--access", type=click.Choice(["ro", "rw"]), default="rw", show_default=True)
@click.option("--ttl", type=int, default=None, help="Seconds until the token expires (default: never).")
def token(data_dir: str, access: str, ttl: int | None) -> None:
    """Print a JWT for the primary; creates DATA_DIR/jwt_{private,public}.pem on first use.

    Start the primary with --jwt-key-file DATA_DIR/jwt_public.pem to accept these tokens."""
    from edgenode.auth import Access, generate_keypair, mint_token

    directory = Path(data_dir)
    private_path = directory / "jwt_private.pem"
    if not private_path.exists():
        _, public_path = generate_keypair(directory)
        click.echo(f"created key pair; start the primary with --jwt-key-file {public_path}", err=True)
    click.echo(mint_token(private_path.read_bytes(), Access(access), ttl))
