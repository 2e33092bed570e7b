"""The import rules ARCHITECTURE.md states hold: each layer imports only from the layers it may,
and no package's modules import each other in a circle.

Imports are read with `ast` (no module is imported). Imports under `if TYPE_CHECKING:` are left
out: they name types for the checker and never run.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "edgenode"

# Layers, lowest first, as ARCHITECTURE.md lists them; a module's layer is the first that names it.
# A module may import from its own layer and the layers below it (NOT_FROM lists the exceptions).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "edgenode",
            "edgenode.versions",
            "edgenode.values",
            "edgenode.durable",
            "edgenode.rwlock",
            "edgenode.metrics",
            "edgenode.config",
            "edgenode.auth",
            "edgenode.analysis",
            "edgenode.pragmas",
            "edgenode.migrations",
            "edgenode.owner",
            "edgenode.errors",
            "edgenode.results",
            "edgenode.tune",
            "edgenode.binding",
            "edgenode.sync_protocols",
            "edgenode.startup",
            "edgenode.tls",
            "edgenode.bodies",
            "edgenode.http_server",
            "edgenode.lifeline",
            "edgenode.s3",
            "edgenode.encryption",
            "edgenode.objectstore",
            "edgenode.commit_marks",
            "edgenode.expect",
            "edgenode.crash",
            "edgenode.origins",
            "edgenode.primary",  # the package itself: import-free constants shared with the relay
        ),
    ),
    ("protocol", ("edgenode.hrana", "edgenode.hrana.")),
    ("primary", ("edgenode.primary.",)),
    (
        "data",
        (
            "edgenode.statements",
            "edgenode.stream_pragmas",
            "edgenode.idempotency",
            "edgenode.backup",
            "edgenode.feed",
            "edgenode.engine",
            "edgenode.sessions",
            "edgenode.database",
            "edgenode.standalone",
            "edgenode.standalone.",
            "edgenode.replica",
            "edgenode.replica.",
        ),
    ),
    (
        "front-ends",
        (
            "edgenode.api",
            "edgenode.api.",
            "edgenode.hrana_node",
            "edgenode.hrana_node.",
            "edgenode.vectors",
            "edgenode.vectors.",
            "edgenode.text",
            "edgenode.text.",
            "edgenode.backup_http",
            "edgenode.changes",
            "edgenode.changes.",
        ),
    ),
    (
        "assembly",
        (
            "edgenode.node",
            "edgenode.cli",
            "edgenode.__main__",
            "edgenode.frozen",
            "edgenode.commands",
            "edgenode.commands.",
            "edgenode.http_workers",
            "edgenode.http_workers.",
        ),
    ),
]
# The primary is a role of its own: it shares the foundation and the Hrana protocol with the node
# and nothing else; the layers above it must not reach into it.
NOT_FROM = {"data": {"primary"}, "front-ends": {"primary"}, "primary": set()}
# Stated exceptions (ARCHITECTURE.md): the primary describes its routes with the API's OpenAPI builder.
ALLOWED = {
    ("edgenode.primary.app", "edgenode.api.openapi"),
    # Backups are one tool over every role's files, served by node and primary alike.
    ("edgenode.backup", "edgenode.primary.wal"),
    ("edgenode.primary.app", "edgenode.backup"),
    ("edgenode.primary.app", "edgenode.backup_http"),
    # Point-in-time restore places its result with the one restore routine.
    ("edgenode.primary.pitr", "edgenode.backup"),
}
# Command-line entry points of a package belong to the assembly layer.
ASSEMBLY_MODULES = {"edgenode.primary.cli", "edgenode.vectors.cli", "edgenode.text.cli", "edgenode.changes.cli"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def layer_of(name: str) -> int:
    if name in ASSEMBLY_MODULES:
        return len(LAYERS) - 1
    for index, (_, entries) in enumerate(LAYERS):
        for entry in entries:
            # "pkg." names every module inside pkg; anything else names one module (or package __init__).
            if name == entry or (entry.endswith(".") and name.startswith(entry)):
                return index
    raise AssertionError(f"{name} is in no layer of ARCHITECTURE.md; add it there and to LAYERS")


def _type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def runtime_imports(name: str) -> set[str]:
    """Project modules `name` imports at run time (module level or inside functions)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_block(child):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("edgenode"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                if target.startswith("edgenode"):
                    submodules = {f"{target}.{a.name}" for a in child.names} & MODULES.keys()
                    # `from pkg import module` imports the module; `from pkg import name` the package.
                    found.update(submodules)
                    if len(submodules) < len(child.names):
                        found.add(target)
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(name)
    return {m for m in found if m in MODULES}


GRAPH = {name: runtime_imports(name) for name in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_imports_only_from_its_layer_and_below(name: str) -> None:
    mine = layer_of(name)
    layer_name = LAYERS[mine][0]
    wrong = []
    for target in sorted(GRAPH[name]):
        if (name, target) in ALLOWED:
            continue
        theirs = layer_of(target)
        if theirs > mine or LAYERS[theirs][0] in NOT_FROM.get(layer_name, set()):
            wrong.append(f"{target} ({LAYERS[theirs][0]})")
    assert not wrong, f"{name} ({layer_name}) imports from a layer it may not: {', '.join(wrong)}"


def test_the_primary_role_imports_nothing_of_the_node() -> None:
    node_layers = {"data", "front-ends"}
    for name in MODULES:
        if name.startswith("edgenode.primary.") and name not in ASSEMBLY_MODULES:
            reached = {t for t in GRAPH[name] if LAYERS[layer_of(t)][0] in node_layers and (name, t) not in ALLOWED}
            assert not reached, f"{name} imports the node's {sorted(reached)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return found


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting its modules is not a cycle through them: importing any
    # submodule runs its package's __init__ first anyway.
    graph = {
        name: {t for t in targets if not (MODULES[t].name == "__init__.py" and name.startswith(t + "."))}
        for name, targets in GRAPH.items()
    }
    assert _cycles(graph) == []


def test_the_layer_rules_see_the_imports() -> None:
    """The parser and the layer table find what they should (a guard against passing vacuously)."""
    assert [LAYERS[layer_of(m)][0] for m in ("edgenode.values", "edgenode.hrana.server", "edgenode.primary.app")] == [
        "foundation",
        "protocol",
        "primary",
    ]
    assert [LAYERS[layer_of(m)][0] for m in ("edgenode.replica.forwarder", "edgenode.api.rest", "edgenode.node")] == [
        "data",
        "front-ends",
        "assembly",
    ]
    assert "edgenode.database" in GRAPH["edgenode.standalone.database"]
    assert "edgenode.replica.forwarder" in GRAPH["edgenode.replica.database"]
    assert "edgenode.api.component" in GRAPH["edgenode.vectors.manager"]


_IMPORT_EACH = """
import importlib, json, sys
failed = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "edgenode" or m.startswith("edgenode.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""


def test_every_module_can_be_imported_first() -> None:
    """A circle through package __init__s fails only when it is entered at a certain module, so
    each module is imported first in turn (one interpreter; the project's modules forgotten between)."""
    names = sorted(n for n in MODULES if n != "edgenode.__main__")
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == {}
