"""The package's import structure: no module imports itself back through others (function-level imports included),
and the engine loads without Qt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = "unstar_gui"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth (functions included), except under `if TYPE_CHECKING:`, which never
    runs: an annotation naming a class from a module above is not an import of it."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _from_module(package: str, node: ast.ImportFrom) -> str:
    """The absolute name of the module a `from ... import` reads from, inside `package`."""
    if not node.level:
        return node.module or ""
    base = package.split(".")
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def relative_targets() -> dict[str, set[str]]:
    """module -> the module paths its relative imports name (`from ..x import y` in a.b.c -> "a.x")."""
    out: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                out.setdefault(name, set()).add(_from_module(package, node))
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (relative imports resolved; `from pkg import
    name` counts as importing pkg.name when that is a module, else pkg)."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                stem = _from_module(package, node)
                for alias in node.names:
                    targets.add(f"{stem}.{alias.name}" if f"{stem}.{alias.name}" in modules else stem)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] when there is none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str]:
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
        return []

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_relative_and_function_level_imports_but_not_type_checking_ones():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
                     "def f():\n    import c\n")
    assert sorted(n.names[0].name for n in _imports(tree)) == ["TYPE_CHECKING", "b", "c"]  # never "a"
    graph = import_graph()
    assert "unstar_gui.engine.events" in graph["unstar_gui.engine.pipeline"]  # from .events import ... (top level)
    assert "unstar_gui.engine.evaluate.attacks" in graph["unstar_gui.engine.settings"]  # inside a function


def test_every_relative_import_names_a_module_of_the_package():
    """A relative import that climbs too few or too many levels (say, after a module moved into a subpackage) only
    fails when its function runs; this finds it without running anything."""
    modules = {module_name(p) for p in ROOT.rglob("*.py")}
    broken = sorted(f"{name}: {target}" for name, targets in relative_targets().items() for target in targets
                    if target not in modules)
    assert broken == []


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle == [], " -> ".join(cycle)


def test_engine_loads_without_qt():
    code = ("import sys, unstar_gui.engine.pipeline, unstar_gui.engine.importers, unstar_gui.engine.export; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'PySide6'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
