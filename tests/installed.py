"""Drive an installed `edgenode` (a wheel's console script, the single-file binary) the way a
user would: from a directory outside the checkout, with only the environment it is given."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.procs import free_port


@dataclass
class Installed:
    command: list[str]
    cwd: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, *args: str, name: str, ready: str = "/health", timeout: float = 60) -> Running:
        port = free_port()
        log = self.cwd / f"{name}.log"
        popen = subprocess.Popen(
            [*self.command, *args, "--host", "127.0.0.1", "--port", str(port)],
            cwd=self.cwd,
            env=self.env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        running = Running(popen, f"http://127.0.0.1:{port}", log)
        running.wait_for(ready, timeout)
        return running


@dataclass
class Running:
    popen: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_for(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"exited with {self.popen.returncode}:\n{self.log.read_text(errors='replace')}")
            try:
                if httpx.get(self.url + path, timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        raise AssertionError(f"{path} not 200 after {timeout}s:\n{self.log.read_text(errors='replace')}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signum)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    """The ones still running (zombies count as gone: they hold no resources but their pid)."""
    running = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            running.add(pid)
    return running


def wait_all_gone(pids: set[int], timeout: float = 30) -> set[int]:
    deadline = time.monotonic() + timeout
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(pids)


def clean_env(**extra: str) -> dict[str, str]:
    """`env -i`: nothing from the test runner's environment leaks in (no PATH, no HOME, no venv)."""
    return dict(extra)


@dataclass
class Dev:
    """A running `edgenode dev`: its process, the node and primary URLs and the token it printed."""

    popen: subprocess.Popen[bytes]
    node_url: str
    primary_url: str
    token: str
    log: Path


def start_dev(edgenode: Installed, data: Path, timeout: float = 120) -> Dev:
    node_port, primary_port = free_port(), free_port()
    log = edgenode.cwd / "dev.log"
    args = ["--data-dir", str(data), "--port", str(node_port), "--primary-port", str(primary_port)]
    popen = subprocess.Popen(
        [*edgenode.command, "dev", *args, "--sync-interval", "0.2"],
        cwd=edgenode.cwd,
        env=edgenode.env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = {line.split()[0]: line.split() for line in log.read_text(errors="replace").splitlines() if line}
        if "token" in lines:
            return Dev(popen, lines["node"][1], lines["primary"][1], lines["token"][1], log)
        if popen.poll() is not None:
            break
        time.sleep(0.1)
    popen.kill()
    raise AssertionError(f"edgenode dev did not come up:\n{log.read_text(errors='replace')}")
