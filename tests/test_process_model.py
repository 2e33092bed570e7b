"""No edgenode process outlives the one that started it: not after Ctrl-C, not after SIGTERM,
not after `kill -9` of the parent (Linux: the process tree is read from /proc)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from tests.installed import Installed, descendants, start_dev, wait_all_gone

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")


def venv_edgenode(tmp_path: Path) -> Installed:
    return Installed([sys.executable, "-m", "edgenode"], cwd=tmp_path, env=dict(os.environ))


def check_serve_leaves_no_child_after_kill_9(edgenode: Installed, tmp_path: Path) -> None:
    node = edgenode.start("serve", "--data-dir", str(tmp_path / "data"), name="node", ready="/ready")
    children = descendants(node.popen.pid)
    assert len(children) >= 2, children  # the writer, the readers, the forkserver
    node.stop(signal.SIGKILL)
    assert wait_all_gone(children) == set()


def check_dev_leaves_no_child_after(edgenode: Installed, tmp_path: Path, signum: int) -> None:
    dev = start_dev(edgenode, tmp_path / ".edgenode")
    auth = {"Authorization": f"Bearer {dev.token}"}
    assert httpx.get(dev.node_url + "/ready", headers=auth).status_code == 200
    children = descendants(dev.popen.pid)
    assert len(children) >= 4, children  # primary, node, the node's relay and connection owner
    dev.popen.send_signal(signum)
    dev.popen.wait(60)
    assert wait_all_gone(children, timeout=60) == set(), (tmp_path / ".edgenode" / "node.log").read_text()
    for url in (dev.node_url, dev.primary_url):
        with pytest.raises(httpx.TransportError):
            httpx.get(url + "/health", timeout=1)


def test_no_child_of_a_node_outlives_its_kill_9(tmp_path: Path) -> None:
    check_serve_leaves_no_child_after_kill_9(venv_edgenode(tmp_path), tmp_path)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["sigint", "sigterm", "kill-9"])
def test_no_process_of_dev_outlives_it(tmp_path: Path, signum: int) -> None:
    check_dev_leaves_no_child_after(venv_edgenode(tmp_path), tmp_path, signum)
