"""The benchmark suite as a smoke test (`python -m bench --quick`): it runs and writes well-formed
results. No timing assertions: figures on a shared CI machine mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.__main__ import SUITE, available
from bench.report import BEGIN, END, render, rewrite
from tests.procs import ROOT

# Every member of the suite: their --quick passes take about four minutes together.
MEMBERS = SUITE


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Runs one member's quick pass on first use (each in its own process, so one failure names itself)."""
    out = tmp_path_factory.mktemp("bench")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in available():
            pytest.skip(f"bench/{name}.py does not exist yet")
        if name not in done:
            run = subprocess.run(
                [sys.executable, "-m", "bench", name, "--quick", "--out", str(out)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
            done[name] = out
        return done[name]

    return get


@pytest.mark.parametrize("name", MEMBERS)
def test_each_quick_member_writes_machine_parameters_and_rows(results: Callable[[str], Path], name: str) -> None:
    result = json.loads((results(name) / f"{name}.json").read_text())
    assert result["quick"] is True
    assert result["machine"]["platform"] and result["machine"]["versions"]
    assert isinstance(result["parameters"], dict) and result["parameters"]
    # Figures: a `rows` table, a `summary` of figure/value pairs, or named tables of rows.
    tables = [v for v in result.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    assert tables, f"{name} wrote no figures"
    assert result["command"].startswith(f"python -m bench {name}")


def test_pragmas_gives_every_profile_setting_a_verdict_and_a_plot(results: Callable[[str], Path]) -> None:
    from edgenode.pragmas import PROFILES

    out = results("pragmas")
    result = json.loads((out / "pragmas.json").read_text())
    for name, profile in PROFILES.items():
        if name == "sqlite-defaults":
            continue
        for setting in profile.settings:
            entry = result["settings"][setting.name]
            assert entry["verdict"] in ("keep", "drop", "mixed") and entry["why"] and entry["durability"]
    assert (out / "pragmas.png").stat().st_size > 0


def test_cold_start_restarts_without_rebuilding_the_index(results: Callable[[str], Path]) -> None:
    result = json.loads((results("cold_start") / "cold_start.json").read_text())
    restarts = [r for r in result["rows"] if "cache" in r]
    assert restarts and all(r["builds"] == 0 and r["loaded_from_disk"] for r in restarts)


def test_the_report_puts_each_figure_next_to_its_command(results: Callable[[str], Path]) -> None:
    out = results("pragmas")
    body = render(out)
    assert "`python -m bench pragmas --quick`" in body
    assert "quick smoke pass" in body


def test_the_report_rewrites_only_between_the_markers() -> None:
    readme = f"# title\n\nbefore\n{BEGIN}\nold figures\n{END}\nafter\n"
    updated = rewrite(readme, "\nnew figures\n")
    assert updated == f"# title\n\nbefore\n{BEGIN}\nnew figures\n{END}\nafter\n"
    with pytest.raises(ValueError, match="bench:begin"):
        rewrite("# no markers\n", "x")


def test_readme_has_the_generated_section_markers() -> None:
    text = (ROOT / "README.md").read_text()
    assert text.index(BEGIN) < text.index(END)
    assert text.index("## Performance") < text.index(BEGIN)


def test_hrana_bench_leaves_no_turso_server_running(results: Callable[[str], Path]) -> None:
    results("hrana")
    left = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue  # the process ended while we looked
        if any(a.endswith(b"tursodb") for a in args) and b"--sync-server" in args:
            left.append(b" ".join(args).decode(errors="replace"))
    assert not left, f"turso servers still running: {left}"
