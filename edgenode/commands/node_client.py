"""What every command that talks to a running node over its REST API shares.

`edgenode vectors`, `edgenode text` (and any later command of that kind) do not open the data
directory: its files have one owner, the running node. They call the node's REST API instead, so
they work the same against a local or a remote node. This module holds that client, the `--url`
and `--token` options, and the small parsers and printers those commands have in common.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import httpx

URL_HELP = "Node URL [env EDGENODE_URL; default http://127.0.0.1:8080]"
TOKEN_HELP = "Bearer token [env EDGENODE_AUTH_TOKEN]"

F = TypeVar("F", bound=Callable[..., Any])


class NodeClient:
    """A REST client that turns transport failures and error bodies into one-line ClickExceptions.

    Connects on first use: a subcommand's own `--url` / `--token` (`NodeGroup`) may replace the
    group's before then."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self.token = token
        self._http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
            self._http = httpx.Client(base_url=self.url.rstrip("/"), headers=headers, timeout=60.0)
        return self._http

    def call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self.http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise click.ClickException(f"cannot reach the node at {self.http.base_url}: {exc}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": {"code": "http_error", "message": response.text}}
        if response.status_code >= 400:
            error = payload.get("error", {}) if isinstance(payload, dict) else {}
            raise click.ClickException(
                f"{response.status_code} {error.get('code', 'error')}: {error.get('message', response.text)}"
            )
        return payload

    def wait_ready(self, path: str, what: str, timeout: float) -> Any:
        """Poll a derived index's `GET path` until it is built; its progress goes to stderr."""
        deadline = time.monotonic() + timeout
        shown = None
        while True:
            info = self.call("GET", path)
            if info["state"] == "ready" and info.get("progress", 1.0) >= 1.0:
                return info
            if info["state"] == "error":
                raise click.ClickException(f"{what} failed: {info.get('error')}")
            progress = info.get("progress", 0.0)
            if time.monotonic() > deadline:
                raise click.ClickException(f"{what} not ready after {timeout}s ({progress:.0%})")
            line = f"{info['state']} {progress:.0%}"
            if line != shown:
                click.echo(line, err=True)
                shown = line
            time.sleep(0.2)


def node_options(command: F) -> F:
    """`--url` and `--token` on a command (`edgenode changes`) or on a `NodeGroup`, whose context
    object the group's callback makes a NodeClient of."""
    command = click.option("--token", envvar="EDGENODE_AUTH_TOKEN", default=None, help=TOKEN_HELP)(command)
    return click.option(
        "--url", envvar="EDGENODE_URL", default="http://127.0.0.1:8080", show_default=True, help=URL_HELP
    )(command)


def _override(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """A subcommand's `--url` / `--token`, given after it, wins over the group's (or its default)."""
    client = ctx.find_object(NodeClient)
    if value is not None and client is not None and param.name is not None:
        setattr(client, param.name, value)


class NodeGroup(click.Group):
    """A group of commands that call a node (`edgenode vectors`, `edgenode text`): `--url` and
    `--token` work before the subcommand, as the group's options, and after it, as the
    subcommand's (`edgenode text search docs q --url ...`), like `edgenode changes --url ...`."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        given = {opt for param in cmd.params for opt in getattr(param, "opts", [])}
        for flag, help_text in (("--url", URL_HELP), ("--token", TOKEN_HELP)):
            if flag not in given:
                option = click.Option(
                    [flag],
                    default=None,
                    expose_value=False,
                    callback=_override,
                    help=f"{help_text} (or before the command)",
                )
                cmd.params.append(option)
        super().add_command(cmd, name)


def echo_json(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2))


def parse_param(text: str) -> Any:
    """A `--param` value: JSON when it parses (numbers, null, arrays), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def filter_body(filter_sql: str | None, params: tuple[str, ...]) -> dict[str, Any] | None:
    """The `"filter"` of a search request from `--filter` and its `--param`s."""
    if not filter_sql:
        return None
    return {"sql": filter_sql, "params": [parse_param(p) for p in params]}


def load_vector(vector: str | None, vector_file: str | None) -> list[float]:
    """A query vector from `--vector` (JSON) or `--vector-file` (JSON array or .npy; '-' is stdin)."""
    if (vector is None) == (vector_file is None):
        raise click.UsageError("give exactly one of --vector or --vector-file")
    if vector_file == "-":
        text = sys.stdin.read()
    elif vector_file is not None:
        path = Path(vector_file)
        try:
            if path.suffix == ".npy":
                import numpy as np

                return [float(x) for x in np.load(path).reshape(-1)]
            text = path.read_text()
        except (OSError, ValueError, TypeError) as exc:  # missing, unreadable, not an array of numbers
            raise click.BadParameter(
                f"cannot read a vector from {vector_file}: {exc}", param_hint="--vector-file"
            ) from None
    else:
        text = vector or ""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"the vector is not a JSON array of numbers: {exc}") from exc
    if not isinstance(value, list):
        raise click.UsageError("the vector must be a JSON array of numbers")
    return value
