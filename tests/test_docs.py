"""README stays true: its quick start commands exist and its example requests work."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import httpx

from tests.conftest import RW
from tests.procs import Proc

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def quick_start() -> str:
    return README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_quick_start_is_two_make_targets_that_exist() -> None:
    first_block = quick_start().split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make dev", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^dev:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_curl_examples_work_against_a_node(node: Proc) -> None:
    commands = re.findall(r"^curl .*?(?<!\\)$", quick_start().replace("\\\n", " "), re.M)
    assert commands, "README quick start has no curl examples"
    for command in commands:
        words = shlex.split(command)
        url = next(w for w in words if w.startswith("localhost:"))
        path = url.split("localhost:8080", 1)[1]
        body = words[words.index("-d") + 1] if "-d" in words else None
        response = httpx.request(
            "POST" if body else "GET",
            node.url + path,
            content=body,
            headers={"Authorization": f"Bearer {RW}"},
        )
        assert response.status_code == 200, (command, response.text)
