"""The image type at the bottom of the package, and the downhill import graph it makes possible."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import brain_ct
from brain_ct import framing, io, windowing
from brain_ct.image import Box, CTImage

PACKAGE = Path(brain_ct.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_level_imports(tree: ast.Module) -> set[str]:
    """Modules named by imports outside functions (including ``if TYPE_CHECKING:`` blocks)."""
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                # `from brain_ct import framing` names the submodule brain_ct.framing
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in _module_level_imports(ast.parse(path.read_text())) if m in modules and m != name}
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            # A package importing its own submodule is how packages work, not a circle.
            if nxt.startswith(node + "."):
                continue
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, path)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [])
    return found


def test_image_module_imports_nothing_of_the_package() -> None:
    graph = _import_graph()
    assert graph["brain_ct.image"] == set()


def test_the_package_import_graph_has_no_circle() -> None:
    assert _cycles(_import_graph()) == []


def test_cycle_finder_reports_a_circle() -> None:
    # The check above must be able to fail: a two-module circle is found.
    assert _cycles({"a": {"b"}, "b": {"a"}}) == [["a", "b", "a"]]


@pytest.mark.parametrize(
    "module", ["brain_ct.image", "brain_ct.framing", "brain_ct.windowing", "brain_ct.io"]
)
def test_each_low_module_imports_first_in_a_fresh_interpreter(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_old_import_paths_name_the_same_types() -> None:
    assert io.CTImage is CTImage
    assert io.Box is Box
    assert brain_ct.CTImage is CTImage
    assert framing.CTImage is CTImage
    assert windowing.CTImage is CTImage


def test_ctimage_shape_is_height_then_width() -> None:
    ct = CTImage(
        hu=None,
        display=np.zeros((70, 90), np.uint8),
        meta={},
        head_box=(0, 0, 90, 70),
        source="image",
        name="upload",
    )
    assert ct.shape == (70, 90)
    assert (ct.colour_fraction, ct.head_check) == (0.0, "passed")
