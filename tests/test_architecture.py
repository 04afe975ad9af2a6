"""The package's modules import each other without cycles.

The graph is built from the source with ``ast``: an edge for every import a module
runs when it is imported (at module level, in a class body, or under a plain ``if`` or
``try``). Imports under ``if TYPE_CHECKING:`` and inside functions are left out: the
first never run, the second run later, when every module is loaded. A second test
counts the imports inside functions too: a cycle hidden by a deferred import is still
two modules that cannot be understood apart. ``from p import m``
is an edge to the submodule ``p.m`` when ``m`` is one, otherwise to ``p``; a
submodule's implicit import of its parent package is not an edge (every package
``__init__`` that re-exports its submodules would otherwise be a cycle).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

import michelangelo_mlflow

PACKAGE = Path(michelangelo_mlflow.__file__).parent

Graph = Mapping[str, frozenset[str]]


def modules_of(package: Path) -> dict[str, Path]:
    """Every module of ``package`` by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_run(
    body: Sequence[ast.AST], *, deferred: bool
) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when ``body`` runs (in functions: if ``deferred``)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not deferred:
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports_run(node.orelse, deferred=deferred)
        else:  # if, try (and its handlers), with, for, while, match, class and def bodies
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                yield from _imports_run(getattr(node, field, []), deferred=deferred)


def _targets(node: ast.Import | ast.ImportFrom, home: str, known: Mapping[str, Path]) -> set[str]:
    """The package's modules one import statement in module ``home`` imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:
        package = home if known[home].name == "__init__.py" else home.rpartition(".")[0]
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        source = f"{base}.{node.module}" if node.module else base
    else:
        source = node.module or ""
    found = {f"{source}.{alias.name}" for alias in node.names} & known.keys()
    if len(found) < len(node.names) and source in known:
        found.add(source)  # some names are attributes of the module itself
    return found


def import_graph(package: Path, *, deferred: bool = False) -> dict[str, frozenset[str]]:
    """Each module of ``package`` and the package's modules it imports when imported.

    With ``deferred``, also those its functions import when they run.
    """
    known = modules_of(package)
    graph = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        statements = _imports_run(tree.body, deferred=deferred)
        targets = set().union(*(_targets(n, name, known) for n in statements))
        graph[name] = frozenset(targets - {name})
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each strongly connected group of modules, as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_within(graph, set(group), group[0]) for group in groups]


def _path_within(graph: Graph, group: set[str], start: str) -> list[str]:
    """A shortest import path from ``start`` back to itself inside ``group``."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & group):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is in a cycle but has no path back to itself")


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE)
    assert "michelangelo_mlflow._settings._model" in graph  # the walk found the subpackages
    found = [" -> ".join(cycle) for cycle in cycles(graph)]
    assert not found, "import cycles (module-level imports):\n" + "\n".join(found)


def test_no_cycle_even_through_imports_inside_functions() -> None:
    graph = import_graph(PACKAGE, deferred=True)
    found = [" -> ".join(cycle) for cycle in cycles(graph)]
    assert not found, "import cycles (counting imports inside functions):\n" + "\n".join(found)


def test_the_layer_picture_names_every_module() -> None:
    text = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    unnamed = [
        module
        for module in modules_of(PACKAGE)
        if not re.search(rf"(?<!\w){re.escape(module.rpartition('.')[2])}(?!\w)", text)
    ]
    assert not unnamed, f"docs/architecture.md does not name {unnamed}"


@pytest.mark.parametrize(
    ("importer", "imported"),
    [
        ("michelangelo_mlflow._errors", "michelangelo_mlflow._versions"),
        ("michelangelo_mlflow._ipython", "michelangelo_mlflow._notebook"),
        ("michelangelo_mlflow._registry._backends", "michelangelo_mlflow._registry._apiserver"),
        ("michelangelo_mlflow._registry._apiserver", "michelangelo_mlflow._registry._interface"),
        ("michelangelo_mlflow._settings._model", "michelangelo_mlflow._settings._sources"),
    ],
)
def test_the_graph_sees_the_imports_that_were_cycles(importer: str, imported: str) -> None:
    assert imported in import_graph(PACKAGE)[importer]


def _write(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_is_found_and_named(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import A\n",
            "pkg/a.py": "from pkg import b\nA = 1\n",
            "pkg/b.py": "try:\n    from . import c\nexcept ImportError:\n    pass\n",
            "pkg/c.py": "import pkg.a\n",
        },
    )
    assert cycles(import_graph(package)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_type_checking_and_function_imports_are_not_edges(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from typing import TYPE_CHECKING\nfrom pkg import b\n"
            "if TYPE_CHECKING:\n    from pkg.c import C\n",
            "pkg/b.py": "def f():\n    from pkg import a\n",
            "pkg/c.py": "from pkg.a import X\nC = 1\n",
        },
    )
    assert cycles(import_graph(package, deferred=True)) == [["pkg.a", "pkg.b", "pkg.a"]]
    graph = import_graph(package)
    assert graph == {
        "pkg": frozenset(),
        "pkg.a": frozenset({"pkg.b"}),
        "pkg.b": frozenset(),
        "pkg.c": frozenset({"pkg.a"}),
    }
    assert cycles(graph) == []
