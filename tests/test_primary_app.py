"""HTTP-level rules of the sync endpoints that real clients depend on, checked in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.testclient import TestClient

from edgenode.config import Settings
from edgenode.primary.app import create_app
from edgenode.primary.generations import PrimaryStore


@pytest.fixture
def app_and_store(tmp_path: Path) -> tuple[TestClient, PrimaryStore]:
    settings = Settings(data_dir=str(tmp_path / "data"), migrate=False, auth_token="t")
    store = PrimaryStore(tmp_path / "data")
    return TestClient(create_app(settings, store=store), headers={"Authorization": "Bearer t"}), store


def test_unexpected_failures_on_sync_endpoints_are_503_never_500(
    app_and_store: tuple[TestClient, PrimaryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, store = app_and_store
    with client:

        def broken(*args: object) -> None:
            raise OSError("disk on fire")

        monkeypatch.setattr(store, "pull", broken)
        monkeypatch.setattr(store, "push", broken)
        monkeypatch.setattr(store, "export_size", broken)
        pull = client.get("/sync/1/1/129")
        assert pull.status_code == 503 and "disk on fire" in pull.json()["error"]
        assert client.post("/sync/1/1/2", content=b"\0" * 4120).status_code == 503
        assert client.get("/export/1").status_code == 503


def test_malformed_ranges_are_400_and_oversized_pushes_413(app_and_store: tuple[TestClient, PrimaryStore]) -> None:
    client, _ = app_and_store
    with client:
        assert client.get("/sync/1/5/5").status_code == 400
        assert client.get("/sync/x/1/2").status_code == 400
        assert client.post("/sync/1/1/5000", content=b"").status_code == 413
        assert client.post("/sync/1/1/3", content=b"short").status_code == 400
        assert client.get("/info", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/health", headers={"Authorization": ""}).status_code == 200


def test_an_internal_value_error_is_503_not_a_client_error(
    app_and_store: tuple[TestClient, PrimaryStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, store = app_and_store
    with client:

        def buggy(*args: object) -> None:
            raise ValueError("a bug, not the client's fault")

        monkeypatch.setattr(store, "pull", buggy)
        assert client.get("/sync/1/1/129").status_code == 503
        assert client.get("/sync/1/1/129?wait_ms=abc").status_code == 400


def test_the_database_id_is_stable_for_a_data_dir_and_rides_on_every_sync_response(tmp_path: Path) -> None:
    def serve(data: Path) -> tuple[str, str, str]:
        settings = Settings(data_dir=str(data), migrate=False, auth_token="t")
        with TestClient(create_app(settings, store=PrimaryStore(data)), headers={"Authorization": "Bearer t"}) as c:
            info = c.get("/info")
            pull = c.get("/sync/1/1/129")
            assert pull.status_code == 400  # nothing to pull: "checkpoint needed", still carrying the id
            return (
                info.json()["database_id"],
                info.headers["x-edgenode-database-id"],
                pull.headers["x-edgenode-database-id"],
            )

    first = serve(tmp_path / "a")
    assert len(set(first)) == 1 and len(first[0]) == 32
    assert serve(tmp_path / "a") == first  # restarts keep it
    assert serve(tmp_path / "b")[0] != first[0]  # another data dir is another database
