"""The import graph of runstore (and syncd) has no cycle, and the client package does not
import the server package. Walked with ast over the source, so a lazy import inside a function
counts as much as one at the top (it is the same dependency, only deferred); imports under
`if TYPE_CHECKING:` do not (they never run). `from runstore import rules` is an edge to the
submodule runstore.rules, not to the package's __init__."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> dict[str, Path]:
    out = {}
    for path in (ROOT / package).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return skip


def import_graph(packages: tuple[str, ...] = ("runstore", "syncd")) -> dict[str, set[str]]:
    mods: dict[str, Path] = {}
    for package in packages:
        mods.update(_modules(package))
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names]
                targets = [s for s in subs if s in mods]
                if len(targets) < len(subs):
                    targets.append(node.module)
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_runstore_or_syncd() -> None:
    graph = import_graph()
    assert "runstore.run" in graph and "runstore.remote.upload" in graph
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_client_does_not_import_the_server() -> None:
    graph = import_graph()
    client = [m for m in graph if m.startswith("runstore.remote")]
    for module in client:
        assert not any(t.startswith("runstore.server") for t in graph[module]), module
    # and at run time: importing the client leaves the server package (and FastAPI) unloaded
    code = ("import sys, runstore.remote, runstore.rules, runstore.protocol; "
            "bad = [m for m in sys.modules if m.startswith(('runstore.server', 'fastapi'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


def test_rules_import_neither_pydantic_nor_the_server() -> None:
    code = ("import sys, runstore.rules; "
            "bad = [m for m in sys.modules if m.startswith(('pydantic', 'runstore.server'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)
