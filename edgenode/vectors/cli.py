"""`edgenode vectors create|list|get|delete|rebuild|search`: manage collections of a running node.

The commands talk to the node over its REST API (the replica file and the index files have one
owner, the running node), so they work the same against a local or a remote node.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
import httpx

URL_HELP = "Node URL [env EDGENODE_URL; default http://127.0.0.1:8080]"
TOKEN_HELP = "Bearer token [env EDGENODE_AUTH_TOKEN]"


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=60.0)

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

    def wait_ready(self, name: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            info = self.call("GET", f"/api/v1/collections/{name}")
            if info["state"] == "ready" and info.get("progress", 1.0) >= 1.0:
                return info
            if info["state"] == "error":
                raise click.ClickException(f"collection {name} failed: {info.get('error')}")
            if time.monotonic() > deadline:
                raise click.ClickException(f"collection {name} not ready after {timeout}s ({info['progress']:.0%})")
            click.echo(f"{info['state']} {info['progress']:.0%}", err=True)
            time.sleep(1.0)


def _echo(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--url", envvar="EDGENODE_URL", default="http://127.0.0.1:8080", show_default=True, help=URL_HELP)
@click.option("--token", envvar="EDGENODE_AUTH_TOKEN", default=None, help=TOKEN_HELP)
@click.pass_context
def vectors(ctx: click.Context, url: str, token: str | None) -> None:
    """Vector collections of a running node (over its REST API: --url, --token).

    \b
    Examples:
      edgenode vectors create prompts --table prompt_embeddings --column embedding --dim 384 \\
          --filter-column model --wait
      edgenode vectors list
      edgenode vectors search prompts --vector-file q.json -k 5 --filter "model = ?" --param all-MiniLM-L6-v2
      edgenode vectors rebuild prompts --wait
    """
    ctx.obj = Client(url, token)


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
    client: Client,
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
    _echo(client.wait_ready(name, timeout) if wait else info)


@vectors.command(name="list")
@click.pass_obj
def list_(client: Client) -> None:
    """List collections with their state and size."""
    for info in client.call("GET", "/api/v1/collections")["collections"]:
        click.echo(
            f"{info['name']}\t{info['table']}.{info['column']}\tdim={info['dim']}\t{info['metric']}\t"
            f"{info['state']}\tsize={info['size']}\tposition={info['position']}"
        )


@vectors.command()
@click.argument("name")
@click.pass_obj
def get(client: Client, name: str) -> None:
    """Show one collection as JSON."""
    _echo(client.call("GET", f"/api/v1/collections/{name}"))


@vectors.command()
@click.argument("name")
@click.pass_obj
def delete(client: Client, name: str) -> None:
    """Delete collection NAME (its definition, feed triggers and local index files)."""
    _echo(client.call("DELETE", f"/api/v1/collections/{name}"))


@vectors.command()
@click.argument("name")
@click.option("--wait/--no-wait", default=False, help="Wait until the rebuilt index is swapped in.")
@click.option("--timeout", type=float, default=3600.0, show_default=True)
@click.pass_obj
def rebuild(client: Client, name: str, wait: bool, timeout: float) -> None:
    """Rebuild NAME from the table (the old index keeps serving until the new one is ready)."""
    info = client.call("POST", f"/api/v1/collections/{name}/rebuild")
    if wait:
        time.sleep(0.2)
        info = client.wait_ready(name, timeout)
    _echo(info)


def _load_vector(vector: str | None, vector_file: str | None) -> list[float]:
    if (vector is None) == (vector_file is None):
        raise click.UsageError("give exactly one of --vector or --vector-file")
    if vector_file == "-":
        text = sys.stdin.read()
    elif vector_file is not None:
        path = Path(vector_file)
        if path.suffix == ".npy":
            import numpy as np

            return [float(x) for x in np.load(path).reshape(-1)]
        text = path.read_text()
    else:
        text = vector or ""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"the vector is not a JSON array of numbers: {exc}") from exc
    if not isinstance(value, list):
        raise click.UsageError("the vector must be a JSON array of numbers")
    return value


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
    client: Client,
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

    def param(text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            return text

    body: dict[str, Any] = {"vector": _load_vector(vector, vector_file), "k": k, "mode": mode}
    if filter_sql:
        body["filter"] = {"sql": filter_sql, "params": [param(p) for p in params]}
    if ef is not None:
        body["ef"] = ef
    if include:
        body["include"] = list(include)
    _echo(client.call("POST", f"/api/v1/collections/{name}/search", body))
