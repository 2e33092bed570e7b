"""Assembles a node from settings: the database for its mode, its components, the app.

The mode is decided here, from the settings, once; nothing downstream probes the database for it.
Imports are deferred: a replica's relay process is spawned before the heavy front-end modules
(vectors, text) are imported, so its interpreter starts while this one still imports.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgenode.auth import Authenticator
from edgenode.backup import check_not_half_restored
from edgenode.config import Settings
from edgenode.pragmas import select_profile

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from edgenode.api.component import Component
    from edgenode.database import Database
    from edgenode.http_workers.supervisor import HttpWorkers
    from edgenode.replica.database import ReplicaDatabase
    from edgenode.standalone import LocalDatabase

log = logging.getLogger(__name__)


def open_database(settings: Settings) -> Database:
    """The database for the node's mode."""
    check_not_half_restored(settings.data_path)
    return _replica(settings) if settings.is_replica else _local(settings)


def open_node(settings: Settings, authenticator: Authenticator) -> tuple[Database, list[Component]]:
    """The database and the components that serve it. One authenticator for all of them: a rotated
    JWT key (`Authenticator.refresh_key`) is then refused by every route at once."""
    check_not_half_restored(settings.data_path)
    db: Database
    components: list[Component] = []
    if settings.is_replica:
        from edgenode.api.sync import SyncComponent

        replica = db = _replica(settings)
        components.append(SyncComponent(replica))
        if replica.lf is not None:
            from edgenode.api.outbox import OutboxComponent

            components.append(OutboxComponent(replica.lf))
    else:
        db = _local(settings)
    if not settings.is_replica or settings.write_mode != "local-first":
        from edgenode.api.outbox import NoOutboxComponent

        components.append(NoOutboxComponent(settings.is_replica))
    from edgenode.backup_http import BackupComponent
    from edgenode.changes.component import ChangesComponent
    from edgenode.hrana_node.component import HranaComponent
    from edgenode.text.manager import TextManager
    from edgenode.vectors.manager import VectorManager

    # Filters run SQL in this process: bounded by the same time as any read query.
    vectors = VectorManager(db, settings.data_path, filter_timeout_ms=settings.query_timeout_ms)
    text = TextManager(db, settings.data_path, vectors=vectors, filter_timeout_ms=settings.query_timeout_ms)
    components += [vectors, text, HranaComponent(settings, db, authenticator), BackupComponent(settings, db)]
    components.append(ChangesComponent(settings, db, authenticator))
    return db, components


def _replica(settings: Settings) -> ReplicaDatabase:
    from edgenode.replica.database import ReplicaDatabase

    replica = ReplicaDatabase(settings, select_profile(settings.profile, data_dir=settings.data_path))
    replica.spawn_relay()  # its interpreter starts while the node imports and builds the rest
    return replica


def _local(settings: Settings) -> LocalDatabase:
    from edgenode.encryption import load_key
    from edgenode.standalone import LocalDatabase

    return LocalDatabase(
        settings.data_path,
        select_profile(settings.profile, data_dir=settings.data_path),
        readers=settings.read_connections,
        migrate=settings.migrate,
        max_rows=settings.max_rows,
        timeout_ms=settings.query_timeout_ms,
        encryption_key=load_key(settings),
    )


def build_node_app(settings: Settings, workers: HttpWorkers | None = None) -> Starlette:
    """The node's app; with `workers`, the owner of HTTP worker processes (their last component:
    they start once everything else runs, and learn each schema change before it is acknowledged)."""
    from edgenode.api import create_app

    authenticator = Authenticator.from_settings(settings.auth_token, settings.read_token, settings.jwt_key_file)
    db, components = open_node(settings, authenticator)
    if workers is not None:
        from edgenode.standalone import LocalDatabase

        assert isinstance(db, LocalDatabase)  # the command refuses workers on a replica
        db.schema_listeners.append(workers.epoch.publish)
        components.append(workers)
    return create_app(settings, db, components=components, authenticator=authenticator)
