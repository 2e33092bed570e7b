"""`edgenode changes --tables a,b`: print a node's change stream, one JSON object a line.

Reconnects with its cursor when the node cuts the stream (slow reader, restart); stops on a
`resync` (the cursor is older than what the node keeps) with exit status 3.
"""

from __future__ import annotations

import json
import sys
import time

import click
import httpx

from edgenode.changes.client import parse_sse
from edgenode.commands.node_client import node_options


@click.command()
@click.option("--tables", required=True, help="Comma-separated tables to follow.")
@click.option("--where", default=None, help="Only rows whose column equals a value: column=value.")
@click.option("--after", default=None, help="Resume after this cursor (default: only new changes).")
@click.option("--capture", is_flag=True, help="Capture the tables first (needs the read-write token).")
@node_options
def changes(tables: str, where: str | None, after: str | None, capture: bool, url: str, token: str | None) -> None:
    """Print the changes of TABLES on a running node as they commit (Ctrl-C stops).

    \b
    Examples:
      edgenode changes --tables prompts --capture
      edgenode changes --tables prompts,evaluations --where user_id=42 --after 1200
    """
    headers = {"authorization": f"Bearer {token}"} if token else {}
    base = url.rstrip("/")
    if not base.lower().startswith(("http://", "https://")):
        # Not a connection to retry: every reconnect would fail the same way, forever.
        raise click.ClickException(f"--url {url!r}: give the node's http:// or https:// URL")
    with httpx.Client(headers=headers, timeout=httpx.Timeout(30.0, read=None)) as client:
        if capture:
            for table in tables.split(","):
                response = client.put(f"{base}/api/v1/changes/tables/{table.strip()}")
                if response.status_code != 200:
                    raise click.ClickException(f"capturing {table}: {response.status_code} {response.text}")
        cursor = after
        while True:
            params = {"tables": tables, **({"where": where} if where else {}), **({"after": cursor} if cursor else {})}
            try:
                with client.stream("GET", f"{base}/api/v1/changes", params=params) as response:
                    if response.status_code != 200:
                        response.read()
                        raise click.ClickException(f"{response.status_code}: {response.text}")
                    for event in parse_sse(response.iter_lines()):
                        if event.event == "resync":
                            click.echo(json.dumps({"event": "resync", **event.data}), err=True)
                            sys.exit(3)
                        if event.event == "error":
                            click.echo(json.dumps({"event": "error", **event.data}), err=True)
                            break
                        cursor = event.id or cursor
                        click.echo(json.dumps(event.data))
            except httpx.TransportError as exc:
                click.echo(json.dumps({"event": "disconnected", "message": str(exc), "cursor": cursor}), err=True)
            time.sleep(1.0)  # then resume from the cursor
