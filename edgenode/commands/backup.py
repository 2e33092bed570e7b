"""`edgenode backup` and `edgenode restore`: online snapshots of a node's database, atomic restores."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from edgenode.backup import KINDS, PRIMARY, STANDALONE, BackupError, Progress


def _progress(verb: str) -> Progress:
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        percent = 100 * done / total if total else 100
        click.echo(f"{verb}: {percent:5.1f}% ({done / 2**20:.1f} / {total / 2**20:.1f} MiB)", err=True)

    return report


def _key_option(func):  # type: ignore[no-untyped-def]
    return click.option(
        "--encryption-key-file",
        envvar="EDGENODE_ENCRYPTION_KEY_FILE",
        default=None,
        type=click.Path(dir_okay=False),
        help="An encrypted node's key file (or its key in env EDGENODE_ENCRYPTION_KEY).",
    )(func)


def _key(key_file: str | None):  # type: ignore[no-untyped-def]
    from edgenode.encryption import EncryptionError, load_key_from

    try:
        return load_key_from(key_file)
    except EncryptionError as exc:
        raise click.ClickException(str(exc)) from None


def _data_dir_option(func):  # type: ignore[no-untyped-def]
    return click.option(
        "--data-dir",
        envvar="EDGENODE_DATA_DIR",
        default="./.edgenode",
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="The node's data directory [env EDGENODE_DATA_DIR].",
    )(func)


@click.command()
@_data_dir_option
@click.option("--to", "dest", required=True, type=click.Path(path_type=Path), help="The backup file to write.")
@click.option(
    "--database",
    "kind",
    type=click.Choice(KINDS),
    default=None,
    help="Which database of the data directory (default: the only one there).",
)
@_key_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def backup(data_dir: Path, dest: Path, kind: str | None, encryption_key_file: str | None, as_json: bool) -> None:
    """Write a consistent copy of a node's database to a file, while the node keeps serving.

    Works on a running or stopped standalone node, primary or replica. The copy is one moment of
    the database, checked (integrity_check, row counts) before it appears at --to; an interrupted
    backup leaves nothing there. Vector and text indexes are not included: a restored node
    rebuilds them.
    """
    from edgenode.backup import backup as run_backup

    try:
        report = run_backup(data_dir, dest, kind=kind, progress=_progress("backup"), key=_key(encryption_key_file))
    except KeyboardInterrupt:
        click.echo(f"backup interrupted; nothing was written at {dest}", err=True)
        sys.exit(130)
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.snapshot_at))
    click.echo(f"backed up {report.kind} database to {report.path} ({report.bytes / 2**20:.1f} MiB, {report.seconds}s)")
    click.echo(f"snapshot    includes every commit acknowledged before {at}")
    if report.generation is not None:
        click.echo(f"position    generation {report.generation}, frame {report.frame}")
    if report.note:
        click.echo(f"note        {report.note}")
    click.echo("verified    integrity_check ok; rows: " + ", ".join(f"{t}={n}" for t, n in report.tables.items()))


@click.command()
@click.option(
    "--from",
    "source",
    required=True,
    help="Backup file; with --to-time, a primary's archive (directory or s3://BUCKET/PREFIX).",
)
@click.option(
    "--to-time",
    default=None,
    help="Rebuild the database as it was at this moment from an archive: ISO 8601 (UTC if no offset) or unix seconds.",
)
@click.option(
    "--s3-endpoint",
    envvar="EDGENODE_ARCHIVE_S3_ENDPOINT",
    default=None,
    help="S3-compatible endpoint of an s3:// archive (default AWS) [env EDGENODE_ARCHIVE_S3_ENDPOINT].",
)
@click.option(
    "--s3-region",
    envvar="EDGENODE_ARCHIVE_S3_REGION",
    default="us-east-1",
    show_default=True,
    help="Region of an s3:// archive [env EDGENODE_ARCHIVE_S3_REGION].",
)
@_data_dir_option
@click.option(
    "--as",
    "kind",
    type=click.Choice([STANDALONE, PRIMARY]),
    default=STANDALONE,
    show_default=True,
    help="Restore as a standalone node's database or as a primary's (a new database id: replicas re-bootstrap).",
)
@click.option("--force", is_flag=True, help="Replace an existing database (never one a running process has open).")
@_key_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def restore(
    source: str,
    to_time: str | None,
    s3_endpoint: str | None,
    s3_region: str,
    data_dir: Path,
    kind: str,
    force: bool,
    encryption_key_file: str | None,
    as_json: bool,
) -> None:
    """Restore a backup file as the database of a data directory, verified and in one rename.

    With --to-time, rebuild the database as it was at that moment from a primary's continuous
    archive (`edgenode primary --archive`). Refuses a directory that already has a database unless
    --force. An interrupted restore leaves either no database or the whole one; the node refuses to
    start until `edgenode restore` is run again (or its staging files are removed).
    """
    if to_time is not None:
        _restore_to_time(source, to_time, s3_endpoint, s3_region, data_dir, kind, force, as_json)
        return
    from edgenode.backup import restore as run_restore

    if source.startswith("s3://"):
        raise click.UsageError("an s3:// source is an archive: give --to-time (e.g. --to-time now)")
    try:
        report = run_restore(
            Path(source), data_dir, kind=kind, force=force, progress=_progress("restore"), key=_key(encryption_key_file)
        )
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    click.echo(f"restored {report.source} to {report.path} ({report.bytes / 2**20:.1f} MiB, {report.seconds}s)")
    click.echo("verified    integrity_check ok; rows: " + ", ".join(f"{t}={n}" for t, n in report.tables.items()))
    for path in report.removed:
        click.echo(f"removed     {path}")


def _restore_to_time(
    source: str,
    to_time: str,
    endpoint: str | None,
    region: str,
    data_dir: Path,
    kind: str,
    force: bool,
    as_json: bool,
) -> None:
    from edgenode.primary.pitr import iso, parse_time, restore_to_time

    try:
        moment = time.time() if to_time == "now" else parse_time(to_time)
        report = restore_to_time(
            source,
            moment,
            data_dir,
            kind=kind,
            force=force,
            endpoint=endpoint,
            region=region,
            progress=_progress("restore"),
        )
    except BackupError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    r = report.restore
    click.echo(f"restored {r.source} as of {iso(moment)} to {r.path} ({r.bytes / 2**20:.1f} MiB, {r.seconds}s)")
    last = iso(report.last_commit_at) if report.last_commit_at else "none after the snapshot"
    click.echo(f"position    generation {report.generation}, frame {report.frame}; {report.commits} commits replayed")
    click.echo(f"last commit {last}")
    if report.note:
        click.echo(f"note        {report.note}")
    click.echo("verified    integrity_check ok; rows: " + ", ".join(f"{t}={n}" for t, n in r.tables.items()))
