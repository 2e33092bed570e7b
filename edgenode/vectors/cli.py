"""`edgenode vectors create|list|get|delete|rebuild|search`: manage collections of a running node.

The commands talk to the node over its REST API (the replica file and the index files have one
owner, the running node), so they work the same against a local or a remote node.
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


@click.group(cls=NodeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@node_options
@click.pass_context
def vectors(ctx: click.Context, url: str, token: str | None) -> None:
    """Vector collections of a running node (over its REST API: --url, --token, before or after the command).

    \b
    Examples:
      edgenode vectors create prompts --table prompt_embeddings --column embedding --dim 384 \\
          --filter-column model --wait
      edgenode vectors list
      edgenode vectors search prompts --vector-file q.json -k 5 --filter "model = ?" --param all-MiniLM-L6-v2
      edgenode vectors rebuild prompts --wait
    """
    ctx.obj = NodeClient(url, token)


def _wait_ready(client: NodeClient, name: str, timeout: float) -> Any:
    return client.wait_ready(f"/api/v1/collections/{name}", f"collection {name}", timeout)


@vectors.command()
@click.argument("name")
@click.option("--table", required=True, help="Table holding the embeddings.")
@click.option("--column", required=True, help="F32_BLOB column with the embeddings.")
@click.option("--dim", type=int, required=True, help="Dimensions of each vector.")
@click.option("--metric", type=click.Choice(["cosine", "l2", "ip"]), default="cosine", show_default=True)
@click.option("--filter-column", "filter_columns", multiple=True, help="Column usable in filters (repeatable).")
@click.option("--m", type=int, default=16, show_default=True, help="HNSW M (graph degree).")
@click.option("--ef-construction", type=int, default=200, show_default=True)
@click.option("--ef-search", type=int, default=64, show_default=True)
@click.option("--wait/--no-wait", default=False, help="Wait until the index is built.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Seconds --wait waits.")
@click.pass_obj
def create(
    client: NodeClient,
    name: str,
    table: str,
    column: str,
    dim: int,
    metric: str,
    filter_columns: tuple[str, ...],
    m: int,
    ef_construction: int,
    ef_search: int,
    wait: bool,
    timeout: float,
) -> None:
    """Create (or replace) collection NAME; the node builds its index in the background."""
    body = {
        "table": table,
        "column": column,
        "dim": dim,
        "metric": metric,
        "filter_columns": list(filter_columns),
        "hnsw": {"m": m, "ef_construction": ef_construction, "ef_search": ef_search},
    }
    info = client.call("PUT", f"/api/v1/collections/{name}", body)
    echo_json(_wait_ready(client, name, timeout) if wait else info)


@vectors.command(name="list")
@click.pass_obj
def list_(client: NodeClient) -> None:
    """List collections with their state and size."""
    for info in client.call("GET", "/api/v1/collections")["collections"]:
        click.echo(
            f"{info['name']}\t{info['table']}.{info['column']}\tdim={info['dim']}\t{info['metric']}\t"
            f"{info['state']}\tsize={info['size']}\tposition={info['position']}"
        )


@vectors.command()
@click.argument("name")
@click.pass_obj
def get(client: NodeClient, name: str) -> None:
    """Show one collection as JSON."""
    echo_json(client.call("GET", f"/api/v1/collections/{name}"))


@vectors.command()
@click.argument("name")
@click.pass_obj
def delete(client: NodeClient, name: str) -> None:
    """Delete collection NAME (its definition, feed triggers and local index files)."""
    echo_json(client.call("DELETE", f"/api/v1/collections/{name}"))


@vectors.command()
@click.argument("name")
@click.option("--wait/--no-wait", default=False, help="Wait until the rebuilt index is swapped in.")
@click.option("--timeout", type=float, default=3600.0, show_default=True)
@click.pass_obj
def rebuild(client: NodeClient, name: str, wait: bool, timeout: float) -> None:
    """Rebuild NAME from the table (the old index keeps serving until the new one is ready)."""
    info = client.call("POST", f"/api/v1/collections/{name}/rebuild")
    if wait:
        time.sleep(0.2)
        info = _wait_ready(client, name, timeout)
    echo_json(info)


@vectors.command()
@click.argument("name")
@click.option("--vector", help="Query vector as a JSON array.")
@click.option("--vector-file", help="File with the query vector: JSON array or .npy; '-' for stdin.")
@click.option("-k", "k", type=int, default=10, show_default=True)
@click.option("--filter", "filter_sql", help="Boolean SQL expression over the collection's filter columns.")
@click.option("--param", "params", multiple=True, help="Filter parameter for a ? (repeatable; JSON or text).")
@click.option("--mode", type=click.Choice(["auto", "ann", "exact"]), default="auto", show_default=True)
@click.option("--ef", type=int, default=None, help="HNSW ef for this query.")
@click.option("--include", multiple=True, help="Table column to return with each hit (repeatable).")
@click.pass_obj
def search(
    client: NodeClient,
    name: str,
    vector: str | None,
    vector_file: str | None,
    k: int,
    filter_sql: str | None,
    params: tuple[str, ...],
    mode: str,
    ef: int | None,
    include: tuple[str, ...],
) -> None:
    """k nearest rows of NAME to a vector, best first, as JSON."""

    body: dict[str, Any] = {"vector": load_vector(vector, vector_file), "k": k, "mode": mode}
    if filter_sql:
        body["filter"] = filter_body(filter_sql, params)
    if ef is not None:
        body["ef"] = ef
    if include:
        body["include"] = list(include)
    echo_json(client.call("POST", f"/api/v1/collections/{name}/search", body))
