"""A normal (non-editable) install of the wheel works outside the checkout: the migrations ship
inside the package, and the console script serves, queries, executes and migrates."""

from __future__ import annotations

import signal
import subprocess
import sys
import venv
from pathlib import Path

import httpx

from tests.installed import Installed
from tests.procs import ROOT


def _build(tmp_path: Path) -> tuple[Path, Path]:
    """The wheel, built by the same script `make wheel`, CI and the Dockerfile use."""
    subprocess.run([sys.executable, ".ci/release/build.py", "hnswlib"], cwd=ROOT, check=True, capture_output=True)
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", str(ROOT), "-w", str(out)],
        cwd=tmp_path,
        check=True,
    )
    (wheel,) = out.glob("edgenode-*.whl")
    return wheel, ROOT / "build" / "wheelhouse"


def test_the_wheel_installed_in_a_fresh_venv_outside_the_checkout_migrates_serves_and_answers(tmp_path: Path) -> None:
    wheel, wheelhouse = _build(tmp_path)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = [str(py), "-m", "pip", "install", "--quiet", "--find-links", str(wheelhouse), str(wheel)]
    subprocess.run(install, cwd=tmp_path, check=True, timeout=600)

    home = tmp_path / "home"
    home.mkdir()
    edgenode = Installed([str(env_dir / "bin" / "edgenode")], cwd=home, env={"PATH": "/usr/bin:/bin"})
    where = subprocess.run(
        [str(py), "-c", "from edgenode.migrations import default_sql_dir; print(default_sql_dir())"],
        cwd=home,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where
    assert sorted(p.name for p in Path(where).glob("*.sql")) == sorted(p.name for p in (ROOT / "sql").glob("*.sql"))

    data = home / "data"
    migrated = edgenode.run("migrate", "--data-dir", str(data))
    assert migrated.returncode == 0, migrated.stderr
    assert "applied          001_core.sql" in migrated.stdout

    node = edgenode.start("serve", "--data-dir", str(data), name="node", ready="/ready")
    try:
        applied = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT version FROM _edgenode_migrations"})
        assert applied.status_code == 200, applied.text
        shipped = sorted(int(p.name.split("_", 1)[0]) for p in (ROOT / "sql").glob("*.sql"))
        assert [row[0] for row in applied.json()["rows"]] == shipped
        write = {"statements": [{"sql": "INSERT INTO users (id, email) VALUES (?, ?)", "params": ["u1", "a@x"]}]}
        assert httpx.post(node.url + "/api/v1/execute", json=write).status_code == 200
        read = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT email FROM users"})
        assert read.json()["rows"] == [["a@x"]]
    finally:
        assert node.stop() in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it stopped on
