"""`edgenode tune`: measure PRAGMA settings on this host and data; write DATA_DIR/pragmas.toml."""

from __future__ import annotations

import click

from edgenode.cli import settings_options
from edgenode.config import Settings


@click.command()
@click.option(
    "--duration",
    "duration",
    type=click.FloatRange(min=1.0),
    default=60.0,
    show_default=True,
    help="Seconds to spend measuring (more gives steadier choices).",
)
@settings_options
def tune(settings: Settings, duration: float) -> None:
    """Measure each candidate PRAGMA on a copy of the node's database; write the chosen profile.

    The copy lives in a scratch directory inside the data dir and is deleted afterwards; the
    database itself is only read. Durability never drops below this platform's profile.
    `edgenode serve --profile auto` then uses DATA_DIR/pragmas.toml.
    """
    from edgenode.tune import tune as run_tune

    try:
        run_tune(settings.data_path, seconds=duration, log=click.echo)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from exc
