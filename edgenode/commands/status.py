"""`edgenode status`: a human summary of a running node."""

from __future__ import annotations

from typing import Any

import click
import httpx

from edgenode.cli import settings_options
from edgenode.config import Settings


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def summarise(status: dict[str, Any], ready: dict[str, Any]) -> list[str]:
    db = status["database"]
    lines = [
        f"role        {status['role']}",
        f"ready       {ready.get('status')}" + (f" ({ready['reason']})" if ready.get("reason") else ""),
        f"database    {db.get('path')} ({_size(db.get('size_bytes', 0))}, WAL {_size(db.get('wal_bytes', 0))})",
    ]
    pragmas = db.get("pragmas") or {}
    if pragmas:
        lines.append(
            f"profile     {pragmas['profile']}: {len(pragmas['applied'])} applied, {len(pragmas['refused'])} refused"
        )
        for name, why in pragmas["refused"].items():
            lines.append(f"  refused   {name}: {why}")
    applied = sum(1 for m in status["migrations"] if m["applied"])
    lines.append(f"migrations  {applied}/{len(status['migrations'])} applied")
    for name, component in status.get("components", {}).items():
        # Collections (vectors, text) are a dict per collection: shown by name, not left out.
        parts = [
            f"{k}({', '.join(f'{ik}={iv}' for ik, iv in v.items() if not isinstance(iv, dict | list))})"
            if isinstance(v, dict)
            else f"{k}={v}"
            for k, v in component.items()
            if not isinstance(v, list) and v != {}
        ]
        lines.append(f"{name:<11} {', '.join(parts)}")
    lines.append(f"uptime      {status['uptime_seconds']:.0f}s, edgenode {status['versions']['edgenode']}")
    return lines


@click.command()
@click.option("--url", default=None, help="Node URL [default http://HOST:PORT from the settings].")
@click.option("--json", "as_json", is_flag=True, help="Print the raw /api/v1/status JSON.")
@settings_options
def status(settings: Settings, url: str | None, as_json: bool) -> None:
    """Show what a running node is doing."""
    url = url or f"http://{settings.host}:{settings.port}"
    headers = (
        {"Authorization": f"Bearer {settings.auth_token or settings.read_token}"}
        if (settings.auth_token or settings.read_token)
        else {}
    )
    try:
        response = httpx.get(f"{url}/api/v1/status", headers=headers, timeout=5)
        ready = httpx.get(f"{url}/ready", timeout=5).json()
    except httpx.HTTPError as exc:
        raise click.ClickException(f"no node answering at {url}: {exc}") from exc
    if response.status_code != 200:
        raise click.ClickException(f"{url} answered {response.status_code}: {response.text}")
    if as_json:
        click.echo(response.text)
        return
    for line in summarise(response.json(), ready):
        click.echo(line)
