"""No import circle inside a package: the imports of every module, read with `ast`.

Counted: `import pkg.a`, `from pkg.a import x`, `from pkg import a` (a submodule), and the
relative forms, at any depth: function-local imports are imports (a function-local import
that only hides a circle is a circle). Not counted: imports under `if TYPE_CHECKING:`, which
never run, and the package's own `__init__` as a parent of every submodule (importing
`pkg.a` runs `pkg/__init__.py` first; that is how Python packages work, not a circle of
ours). `from pkg import Name` of a name defined in `__init__` counts as an edge to `pkg`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module_name(package: str, path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    tree: ast.AST, module: str, is_package: bool, modules: set[str] | frozenset[str] = frozenset()
) -> set[str]:
    """Every module name this module imports, TYPE_CHECKING blocks left out. In
    `from x import a`, x.a is what is imported when it is one of `modules`, else x."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, up level - 1
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """{module: the package's modules it imports} for every .py file of `package`."""
    files = sorted((ROOT / package).rglob("*.py"))
    modules = {_module_name(package, f): f for f in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = _imports(tree, name, path.name == "__init__.py", set(modules))
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_reader_sees_function_local_relative_and_hidden_circles():
    code = """
from __future__ import annotations
from typing import TYPE_CHECKING
import pkg.a
from . import b
from .c import thing
if TYPE_CHECKING:
    from pkg import d
def f():
    from pkg.e import x
    import pkg.f as g
"""
    modules = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e", "pkg.f", "pkg.m"}
    found = _imports(ast.parse(code), "pkg.m", False, modules)
    assert found == {"pkg.a", "pkg.b", "pkg.c", "pkg.e", "pkg.f", "typing", "__future__"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize("package", ["textseg", "vitcifar"])
def test_no_import_circle(package):
    graph = import_graph(package)
    assert len(graph) > 5 and f"{package}.cli" in graph  # the package was read
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle in {package}: {' -> '.join(cycle)}"
