"""`edgenode dev`: a local primary and a node synced to it, on loopback, in one command.

Data lives under `DATA_DIR/primary` and `DATA_DIR/node` (default `./.edgenode`). The bearer token
is created on first use and kept in `DATA_DIR/dev-token`, so clients keep working across runs.
Ctrl-C or SIGTERM stops the node first (its last sync and index saves), then the primary.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import click
import httpx

from edgenode import lifeline

TOKEN_FILE = "dev-token"


def _token(data_dir: Path) -> str:
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    # A new session: Ctrl-C in the terminal reaches only `edgenode dev`, which stops the children in
    # order. The lifeline stops them if `edgenode dev` itself dies (kill -9). `-m edgenode` runs
    # from a venv's python and from the frozen executable alike (edgenode.frozen).
    return subprocess.Popen(
        [sys.executable, "-m", "edgenode", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        **lifeline.child_options({**os.environ, "PYTHONUNBUFFERED": "1"}),
    )


def _wait_up(proc: subprocess.Popen[bytes], url: str, path: str, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise click.ClickException(f"{url} exited with {proc.returncode}; its log ({log_path}):\n{tail}")
        try:
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise click.ClickException(f"{url}{path} did not answer 200 within {timeout:g} s; see {log_path}")


def _stop(proc: subprocess.Popen[bytes] | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        click.echo(f"{name} did not stop within 20 s; killing it", err=True)
        proc.kill()
        proc.wait(5)


@click.command()
@click.option("--data-dir", default="./.edgenode", show_default=True, type=click.Path(file_okay=False))
@click.option("--port", default=8080, show_default=True, help="The node's port.")
@click.option("--primary-port", default=8081, show_default=True, help="The primary's port.")
@click.option("--sync-interval", default=1.0, show_default=True, help="Seconds between the node's syncs.")
def dev(data_dir: str, port: int, primary_port: int, sync_interval: float) -> None:
    """Run a local primary and an edge node replicating it (loopback only), until Ctrl-C."""
    root = Path(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    token = _token(root)
    host = "127.0.0.1"
    primary_url = f"http://{host}:{primary_port}"
    node_url = f"http://{host}:{port}"
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    primary: subprocess.Popen[bytes] | None = None
    node: subprocess.Popen[bytes] | None = None
    try:
        primary_log = root / "primary.log"
        primary = _spawn(
            [
                *("primary", "--data-dir", str(root / "primary")),
                *("--host", host, "--port", str(primary_port), "--auth-token", token),
            ],
            primary_log,
        )
        _wait_up(primary, primary_url, "/health", 60, primary_log)
        node_log = root / "node.log"
        node = _spawn(
            [
                *("serve", "--data-dir", str(root / "node"), "--host", host, "--port", str(port)),
                *("--auth-token", token, "--primary-url", primary_url, "--primary-token", token),
                *("--sync-interval", str(sync_interval)),
            ],
            node_log,
        )
        _wait_up(node, node_url, "/ready", 120, node_log)
        click.echo(f"primary  {primary_url}   (data {root / 'primary'}, log {primary_log})")
        click.echo(f"node     {node_url}   (data {root / 'node'}, log {node_log})")
        click.echo(f"token    {token}")
        click.echo("")
        click.echo("try:")
        create = "CREATE TABLE IF NOT EXISTS notes(id INTEGER PRIMARY KEY, body TEXT)"
        click.echo(
            f"  curl -s -H 'Authorization: Bearer {token}' -X POST {node_url}/api/v1/execute \\\n"
            f"""    -d '{{"statements": [{{"sql": "{create}"}},"""
            """ {"sql": "INSERT INTO notes(body) VALUES (?)", "params": ["hello"]}]}'"""
        )
        click.echo(
            f"  curl -s -H 'Authorization: Bearer {token}' -X POST {node_url}/api/v1/query "
            """-d '{"sql": "SELECT * FROM notes"}'"""
        )
        click.echo("Ctrl-C stops both.", err=True)
        while not stop.wait(0.5):
            for proc, name in ((primary, "primary"), (node, "node")):
                if proc.poll() is not None:
                    click.echo(f"the {name} exited with {proc.returncode}; stopping", err=True)
                    stop.set()
    finally:
        _stop(node, "node")
        _stop(primary, "primary")
    code = node.returncode if node is not None else 0
    sys.exit(0 if code in (0, -signal.SIGTERM, None) else 1)
