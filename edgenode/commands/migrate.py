"""`edgenode migrate`: apply sql/ migrations to the node's database (or to its primary)."""

from __future__ import annotations

import click
import libsql

from edgenode.cli import settings_options
from edgenode.config import Settings
from edgenode.migrations import LibsqlTarget, MigrationError, run_migrations
from edgenode.standalone import DB_FILE


@click.command()
@click.option("--to", "to", type=int, default=None, help="Apply up to and including this version.")
@click.option("--dry-run", is_flag=True, help="List what would be applied; change nothing.")
@settings_options
def migrate(settings: Settings, to: int | None, dry_run: bool) -> None:
    """Apply pending migrations from sql/, each once, in order, in a transaction."""
    if settings.is_replica:
        from edgenode.replica.migrate import target_for  # type: ignore[import-not-found]

        target = target_for(settings)
    else:
        settings.data_path.mkdir(parents=True, exist_ok=True)
        target = LibsqlTarget(libsql.connect(str(settings.data_path / DB_FILE), isolation_level=None))
    try:
        report = run_migrations(target, to=to, dry_run=dry_run, progress=click.echo)
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in report.already:
        click.echo(f"already applied  {name}")
    for name in report.pending:
        click.echo(f"would apply      {name}")
    for name in report.applied:
        click.echo(f"applied          {name}")
    if not (report.applied or report.pending):
        click.echo("nothing to apply")
