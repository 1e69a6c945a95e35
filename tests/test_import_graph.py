"""The project's own modules import one another without a circle, hidden ones included.

The graph is read with :mod:`ast` from the source, so nothing is imported and every import counts: at the
top of a file, inside a function and under ``if TYPE_CHECKING:`` (a type-only import is still a
dependency: the day it becomes a real import, the circle bites). What counts as an edge, as Python
runs it:

- ``import a.b.c`` and ``from a.b.c import name`` run ``a/__init__.py``, ``a/b/__init__.py`` and then
  ``a/b/c.py``: an edge to each of them, except the ``__init__.py`` of a package the importing module sits
  in (Python has already started it before the importing module runs, so it is not run again).
- ``from a import x`` (and ``from . import x``) reads the name ``x`` from ``a/__init__.py``: an edge to
  ``a/__init__.py`` even inside the package ``a`` — whether ``x`` is set by ``a/__init__.py`` cannot be
  known without running it — and, where ``x`` is a submodule, an edge to ``a/x.py`` too.
- Modules are the ``.py`` files of ``brain_ct/``, ``train/``, ``benchmarks/`` and ``app.py``;
  ``importlib.import_module("...")`` with a literal name counts like ``import``.

A circle is printed as ``a.py -> b.py -> a.py`` with the line of each import. And an import of a project
module inside a function of ``brain_ct/`` or ``train/`` says on its line why it is not at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("brain_ct", "train", "benchmarks", "app.py", "app_gradio.py")


def module_files(repo: Path, roots: tuple[str, ...] = ROOTS) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under ``roots`` (a package is named by its ``__init__``)."""
    files: dict[str, Path] = {}
    for root in roots:
        base = repo / root
        paths = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
        for path in paths:
            parts = list(path.relative_to(repo).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _is_package(name: str, files: dict[str, Path]) -> bool:
    return files[name].name == "__init__.py"


def _package_of(name: str, files: dict[str, Path]) -> str:
    return name if _is_package(name, files) else name.rpartition(".")[0]


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _running(importer: str, files: dict[str, Path]) -> set[str]:
    """Packages whose ``__init__`` has started before ``importer`` runs (its own packages)."""
    package = _package_of(importer, files)
    return set(_ancestors(package)) if package else set()


def _targets_of_import(dotted: str, importer: str, files: dict[str, Path]) -> list[str]:
    """Project modules that ``import dotted`` runs, leaving out packages already running."""
    running = _running(importer, files)
    return [name for name in _ancestors(dotted) if name in files and name not in running]


def _resolve_relative(node: ast.ImportFrom, importer: str, files: dict[str, Path]) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package_of(importer, files).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _edges_of(node: ast.AST, importer: str, files: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [t for alias in node.names for t in _targets_of_import(alias.name, importer, files)]
    if isinstance(node, ast.ImportFrom):
        source = _resolve_relative(node, importer, files)
        targets = _targets_of_import(source, importer, files)
        if source in files and _is_package(source, files) and source not in targets:
            targets.append(source)  # the names are read from the package's __init__, run or running
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            if sub in files:
                targets.append(sub)
        return targets
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return _targets_of_import(node.args[0].value, importer, files)
    return []


def import_graph(files: dict[str, Path]) -> dict[str, dict[str, int]]:
    """Module → {imported project module: line of its first import}, from every import in the file."""
    graph: dict[str, dict[str, int]] = {}
    for name, path in files.items():
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            for target in _edges_of(node, name, files):
                if target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def circles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One loop (first module repeated at the end) through each group of :func:`tangles`."""
    return [_loop_through(group, graph) for group in tangles(graph)]


def tangles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), its modules sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def _loop_through(group: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """The shortest path from the group's first module back to itself (breadth-first)."""
    start, members = group[0], set(group)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in members or nxt in came_from:
                    continue
                came_from[nxt] = node
                if nxt == start:
                    path = [start]
                    while path[-1] != start or len(path) == 1:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                following.append(nxt)
        frontier = following
    raise AssertionError(f"no loop through {group}")  # a strongly connected group always has one


def describe(group: list[str], graph: dict[str, dict[str, int]], files: dict[str, Path], repo: Path) -> str:
    """One tangle for people: every import between its modules (file:line -> file), a shortest loop first."""
    members = set(group)
    loop = _loop_through(group, graph)
    steps = list(zip(loop, loop[1:], strict=False))
    steps += sorted((a, b) for a in members for b in graph[a] if b in members and (a, b) not in steps)
    lines = [f"{files[a].relative_to(repo)}:{graph[a][b]} -> {files[b].relative_to(repo)}" for a, b in steps]
    return f"circle through {len(members)} modules:\n  " + "\n  ".join(lines)


def test_the_project_has_no_import_circle() -> None:
    files = module_files(REPO)
    graph = import_graph(files)
    found = tangles(graph)
    assert not found, "import circles (file:line of each import):\n" + "\n".join(
        describe(group, graph, files, REPO) for group in found
    )


def test_the_graph_covers_the_project() -> None:
    files = module_files(REPO)
    graph = import_graph(files)
    assert {"brain_ct", "brain_ct.io", "train.__main__", "app"} <= set(files)
    # app.py reads brain_ct: its package's __init__ and the module itself are both edges.
    assert {"brain_ct", "brain_ct.io"} <= set(graph["app"])


def _write_package(tmp_path: Path, sources: dict[str, str]) -> dict[str, dict[str, int]]:
    for relative, text in sources.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return import_graph(module_files(tmp_path, ("pkg",)))


HIDDEN = {
    "in a function": "def f():\n    from pkg.a import x\n",
    "under TYPE_CHECKING": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n",
    "as a relative import": "from .a import x\n",
    "through importlib": "import importlib\nimportlib.import_module('pkg.a')\n",
}


@pytest.mark.parametrize("how", sorted(HIDDEN))
def test_a_hidden_import_still_closes_a_circle(tmp_path: Path, how: str) -> None:
    graph = _write_package(
        tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from pkg.b import y\nx = 1\n", "pkg/b.py": HIDDEN[how]}
    )
    assert circles(graph) == [["pkg.a", "pkg.b", "pkg.a"]]


def test_from_package_import_counts_as_an_import_of_its_init(tmp_path: Path) -> None:
    graph = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.a import x\nNAME = 1\n",
            "pkg/a.py": "from pkg import NAME\nx = NAME\n",
            "pkg/b.py": "from pkg.a import x\n",
        },
    )
    assert graph["pkg.a"] == {"pkg": 1}
    # Inside the package, pkg/__init__.py is already running: importing pkg.a is no edge to it.
    assert graph["pkg.b"] == {"pkg.a": 1}
    assert circles(graph) == [["pkg", "pkg.a", "pkg"]]


def test_a_submodule_named_in_from_import_is_an_edge_to_it(tmp_path: Path) -> None:
    graph = _write_package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "",
            "pkg/a.py": "from pkg.sub import c\n",
        },
    )
    assert graph["pkg.a"] == {"pkg.sub": 1, "pkg.sub.c": 1}
    assert circles(graph) == []


def unexplained_inner_imports(files: dict[str, Path], repo: Path) -> list[str]:
    """``file:line`` of each import of a project module made inside a function without a reason on its line.

    Such an import hides a dependency from the reader of the file's top; it stays only for a measured
    start-up cost (torch, transformers, datasets), said in a comment on the import's first line.
    """
    roots = {name.split(".")[0] for name in files}
    found = []
    for path in files.values():
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for func in ast.walk(ast.parse(text)):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                else:
                    continue
                if any(n.split(".")[0] in roots for n in names) and "#" not in lines[node.lineno - 1]:
                    found.append(f"{path.relative_to(repo)}:{node.lineno}")
    return sorted(set(found))


def test_an_import_of_the_project_inside_a_function_says_why() -> None:
    files = module_files(REPO, ("brain_ct", "train"))
    assert unexplained_inner_imports(files, REPO) == []


def test_an_unexplained_inner_import_is_found(tmp_path: Path) -> None:
    sources = {
        "pkg/__init__.py": "",
        "pkg/a.py": "x = 1\n",
        "pkg/b.py": "def f():\n    from pkg.a import x\n\n\ndef g():\n    from pkg.a import x  # slow to import\n",
    }
    _write_package(tmp_path, sources)
    assert unexplained_inner_imports(module_files(tmp_path, ("pkg",)), tmp_path) == [
        str(Path("pkg/b.py")) + ":2"
    ]
