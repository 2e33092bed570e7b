"""Command line: `edgenode serve|primary|dev|migrate|status|version|token|vectors|text|tune|backup|restore`.

Each subcommand that runs with settings takes the same flags (`settings_options`), resolved by
`edgenode.config.load_settings` (flags > env > TOML > defaults).
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

import click

from edgenode import __version__, lifeline
from edgenode.config import SETTINGS_DOC, ConfigError, Settings, load_settings

_CLICK_TYPES: dict[type, Any] = {int: int, float: float, str: str}


def settings_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add one flag per setting plus --config; the command receives `settings: Settings`."""

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        flags = {name: kwargs.pop(name, None) for name in SETTINGS_DOC}
        config_file = kwargs.pop("config", None)
        try:
            settings = load_settings(flags, config_file=config_file)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        return func(settings=settings, **kwargs)

    defaults = Settings()
    for name, doc in reversed(list(SETTINGS_DOC.items())):
        default = getattr(defaults, name)
        envs = "/".join(doc.env)
        help_text = f"{doc.help} [env {envs}; default {default!r}]"
        if isinstance(default, bool):
            wrapper = click.option(doc.flag, name, default=None, help=help_text)(wrapper)
        else:
            kind = _CLICK_TYPES.get(type(default), str)
            wrapper = click.option(doc.flag, name, type=kind, default=None, help=help_text)(wrapper)
    wrapper = click.option(
        "--config",
        "config",
        type=click.Path(),
        default=None,
        help="TOML settings file [env EDGENODE_CONFIG; default DATA_DIR/edgenode.toml if present]",
    )(wrapper)
    return wrapper


class LazyGroup(click.Group):
    """Subcommands live in their own modules and are imported only when used."""

    lazy: dict[str, str] = {
        "serve": "edgenode.commands.serve:serve",
        "migrate": "edgenode.commands.migrate:migrate",
        "status": "edgenode.commands.status:status",
        "primary": "edgenode.primary.cli:primary",
        "token": "edgenode.primary.cli:token",
        "dev": "edgenode.commands.dev:dev",
        "vectors": "edgenode.vectors.cli:vectors",
        "text": "edgenode.text.cli:text",
        "changes": "edgenode.changes.cli:changes",
        "tune": "edgenode.commands.tune:tune",
        "backup": "edgenode.commands.backup:backup",
        "restore": "edgenode.commands.backup:restore",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, attr = self.lazy[name].split(":")
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                # A broken install (a module or an extension missing from a wheel or a frozen
                # build) must say so, not show a shorter command list.
                raise click.ClickException(
                    f"the {name!r} command cannot be loaded: {type(exc).__name__}: {exc}"
                ) from exc
            return getattr(module, attr)
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgenode")
def main() -> None:
    """edgenode: a local-first edge database node over libSQL."""
    lifeline.watch()


@main.command()
def version() -> None:
    """Print edgenode's version and the versions of the engines it runs on."""
    from edgenode.versions import versions

    for name, value in versions().items():
        click.echo(f"{name} {value}")


if __name__ == "__main__":
    main(sys.argv[1:])
