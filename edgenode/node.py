"""Assembles a node from settings: the database for its mode, its components, the app."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from edgenode.api import create_app
from edgenode.api.app import Component
from edgenode.backup import check_not_half_restored
from edgenode.config import Settings
from edgenode.database import Database, LocalDatabase
from edgenode.pragmas import select_profile

log = logging.getLogger(__name__)


def open_database(settings: Settings) -> Database:
    check_not_half_restored(settings.data_path)
    profile = select_profile(settings.profile, data_dir=settings.data_path)
    if settings.is_replica:
        from edgenode.replica import ReplicaDatabase  # type: ignore[import-not-found]

        replica = ReplicaDatabase(settings, profile)
        replica.spawn_relay()  # its interpreter starts while the node imports and builds the rest
        return replica
    return LocalDatabase(
        settings.data_path,
        profile,
        readers=settings.read_connections,
        migrate=settings.migrate,
        max_rows=settings.max_rows,
        timeout_ms=settings.query_timeout_ms,
    )


def load_components(settings: Settings, db: Database) -> list[Component]:
    from edgenode.backup_http import BackupComponent
    from edgenode.hrana_node.component import HranaComponent
    from edgenode.text.manager import TextManager
    from edgenode.vectors.manager import VectorManager

    vectors = VectorManager(db, settings.data_path)
    text = TextManager(db, settings.data_path, vectors=vectors)
    components: list[Component] = [vectors, text, HranaComponent(settings, db), BackupComponent(settings, db)]
    replica_component = getattr(db, "component", None)
    if replica_component is not None:
        components.insert(0, replica_component())
    return components


def build_node_app(settings: Settings) -> Starlette:
    db = open_database(settings)
    return create_app(settings, db, components=load_components(settings, db))
