"""`edgenode text create|list|get|delete|rebuild|search|seed`: text collections of a running node.

Like `edgenode vectors`, the commands talk to the node over its REST API
(edgenode.commands.node_client), so they work the same against a local or a remote node.
"""

from __future__ import annotations

import time
from typing import Any

import click

from edgenode.commands.node_client import (
    NodeClient,
    NodeGroup,
    echo_json,
    filter_body,
    load_vector,
    node_options,
)

# The seed schema's searchable text (sql/001_core.sql): `edgenode text seed` creates these.
SEED: dict[str, dict[str, Any]] = {
    "prompts": {
        "table": "prompts",
        "columns": ["title", "content"],
        "filter_columns": ["user_id", "status", "deleted_at"],
        "tokenizer": "porter",
    },
    "prompt_templates": {
        "table": "prompt_templates",
        "columns": ["name", "description", "content"],
        "filter_columns": [],
        "tokenizer": "porter",
    },
}


def _wait_ready(client: NodeClient, name: str, timeout: float) -> Any:
    return client.wait_ready(f"/api/v1/text/{name}", f"text collection {name}", timeout)


@click.group(cls=NodeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@node_options
@click.pass_context
def text(ctx: click.Context, url: str, token: str | None) -> None:
    """Full-text collections of a running node (over its REST API: --url, --token, before or after the command).

    \b
    Examples:
      edgenode text seed --wait          # prompts and prompt_templates, searchable
      edgenode text create docs --table docs --column title --column body --filter-column tag --wait
      edgenode text search prompts 'summar* NOT draft' --filter "status = ?" --param active
      edgenode text search docs 'vector database' --vector-file q.json --collection docs_emb
    """
    ctx.obj = NodeClient(url, token)


@text.command()
@click.argument("name")
@click.option("--table", required=True, help="Table holding the text.")
@click.option("--column", "columns", multiple=True, required=True, help="Text column to index (repeatable).")
@click.option("--filter-column", "filter_columns", multiple=True, help="Column usable in filters (repeatable).")
@click.option("--tokenizer", type=click.Choice(["unicode61", "porter", "trigram"]), default="unicode61")
@click.option("--wait/--no-wait", default=False, help="Wait until the index is built.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.pass_obj
def create(
    client: NodeClient,
    name: str,
    table: str,
    columns: tuple[str, ...],
    filter_columns: tuple[str, ...],
    tokenizer: str,
    wait: bool,
    timeout: float,
) -> None:
    """Create (or replace) text collection NAME; the node builds its index in the background."""
    body = {"table": table, "columns": list(columns), "filter_columns": list(filter_columns), "tokenizer": tokenizer}
    info = client.call("PUT", f"/api/v1/text/{name}", body)
    echo_json(_wait_ready(client, name, timeout) if wait else info)


@text.command()
@click.option("--wait/--no-wait", default=False, help="Wait until the indexes are built.")
@click.option("--timeout", type=float, default=3600.0, show_default=True)
@click.pass_obj
def seed(client: NodeClient, wait: bool, timeout: float) -> None:
    """Make the seed schema's prompts and prompt templates searchable (collections named after their tables)."""
    for name, body in SEED.items():
        info = client.call("PUT", f"/api/v1/text/{name}", body)
        echo_json(_wait_ready(client, name, timeout) if wait else info)


@text.command(name="list")
@click.pass_obj
def list_(client: NodeClient) -> None:
    """List text collections with their state and size."""
    for info in client.call("GET", "/api/v1/text")["collections"]:
        click.echo(
            f"{info['name']}\t{info['table']}({','.join(info['columns'])})\t{info['tokenizer']}\t"
            f"{info['state']}\tsize={info['size']}\tposition={info['position']}"
        )


@text.command()
@click.argument("name")
@click.pass_obj
def get(client: NodeClient, name: str) -> None:
    """Show one text collection as JSON."""
    echo_json(client.call("GET", f"/api/v1/text/{name}"))


@text.command()
@click.argument("name")
@click.pass_obj
def delete(client: NodeClient, name: str) -> None:
    """Delete text collection NAME (its definition and local index files)."""
    echo_json(client.call("DELETE", f"/api/v1/text/{name}"))


@text.command()
@click.argument("name")
@click.option("--wait/--no-wait", default=False, help="Wait until the rebuilt index is swapped in.")
@click.option("--timeout", type=float, default=3600.0, show_default=True)
@click.pass_obj
def rebuild(client: NodeClient, name: str, wait: bool, timeout: float) -> None:
    """Rebuild NAME from the table (the old index keeps serving until the new one is ready)."""
    info = client.call("POST", f"/api/v1/text/{name}/rebuild")
    if wait:
        time.sleep(0.2)
        info = _wait_ready(client, name, timeout)
    echo_json(info)


@text.command()
@click.argument("name")
@click.argument("q")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--offset", type=int, default=0, show_default=True, help="Skip this many hits (pagination).")
@click.option(
    "--syntax",
    type=click.Choice(["fts5", "plain", "any"]),
    default="fts5",
    show_default=True,
    help="fts5: the query language; plain: rows with every word of Q; any: rows with any word of Q.",
)
@click.option("--filter", "filter_sql", help="Boolean SQL expression over the collection's filter columns.")
@click.option("--param", "params", multiple=True, help="Filter parameter for a ? (repeatable; JSON or text).")
@click.option("--weight", "weights", multiple=True, help="COLUMN=WEIGHT for BM25 (repeatable; default 1).")
@click.option("--include", multiple=True, help="Table column to return with each hit (repeatable).")
@click.option("--vector", help="Hybrid: query vector as a JSON array.")
@click.option("--vector-file", help="Hybrid: file with the query vector (JSON array or .npy; '-' for stdin).")
@click.option("--collection", help="Hybrid: vector collection over the same table.")
@click.option("--vector-weight", type=float, default=0.5, show_default=True, help="Hybrid: the vector arm's share.")
@click.pass_obj
def search(
    client: NodeClient,
    name: str,
    q: str,
    k: int,
    offset: int,
    syntax: str,
    filter_sql: str | None,
    params: tuple[str, ...],
    weights: tuple[str, ...],
    include: tuple[str, ...],
    vector: str | None,
    vector_file: str | None,
    collection: str | None,
    vector_weight: float,
) -> None:
    """Rows of NAME matching Q, best first (BM25), with highlighted snippets, as JSON."""

    body: dict[str, Any] = {"q": q, "k": k, "offset": offset, "syntax": syntax}
    if filter_sql:
        body["filter"] = filter_body(filter_sql, params)
    if weights:
        parsed = {}
        for item in weights:
            column, sep, value = item.partition("=")
            try:
                parsed[column] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                raise click.UsageError(f"--weight {item!r}: give COLUMN=NUMBER")
        body["weights"] = parsed
    if include:
        body["include"] = list(include)
    if collection or vector or vector_file:
        body["vector"] = load_vector(vector, vector_file)
        body["collection"] = collection
        body["hybrid"] = {"weight": vector_weight}
    echo_json(client.call("POST", f"/api/v1/text/{name}/search", body))
