"""Dependencies point one way at package level: the import graph of keyplane has no cycle.

Each subpackage of src/keyplane (auth, models, schema ...) is one node and each top-level
module (context, http, app ...) is its own node. An import inside a package stays inside
its node; an import under `if TYPE_CHECKING:` is a type annotation, not a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "keyplane"

Graph = Mapping[str, frozenset[str]]


def node_of(module: str) -> str | None:
    """The node a dotted name inside keyplane belongs to (`keyplane.auth.principal` -> auth)."""
    parts = module.split(".")
    if parts[0] != "keyplane" or len(parts) < 2:
        return None
    return parts[1]


def imported_nodes(tree: ast.Module) -> Iterator[str]:
    """The nodes a module imports at run time (imports under TYPE_CHECKING are skipped)."""
    for statement in _runtime_statements(tree.body):
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
            # `from keyplane import models` names the node in the imported name
            if statement.module == "keyplane":
                names = [f"keyplane.{alias.name}" for alias in statement.names]
            else:
                names = [statement.module]
        else:
            continue
        yield from (node for node in map(node_of, names) if node is not None)


def _runtime_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for statement in body:
        if isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from _runtime_statements(statement.orelse)
            continue
        yield statement
        for child in ast.iter_child_nodes(statement):  # function bodies, try blocks ...
            if isinstance(child, ast.stmt):
                yield from _runtime_statements([child])
            elif isinstance(child, ast.ExceptHandler):
                yield from _runtime_statements(child.body)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph(root: Path) -> dict[str, frozenset[str]]:
    """Node -> the other nodes it imports, over every source file under `root`."""
    edges: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        node = relative.parts[0].removesuffix(".py")
        if node == "__init__":
            continue  # the package's own __init__ imports nothing of ours
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges.setdefault(node, set()).update(n for n in imported_nodes(tree) if n != node)
    return {node: frozenset(targets) for node, targets in edges.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one node, as the
    path of nodes it visits (first node repeated at the end); [] when there is none."""
    found: list[list[str]] = []
    for component in _components(graph):
        if len(component) > 1:
            found.append(_cycle_within(graph, component))
    return sorted(found)


def _components(graph: Graph) -> list[set[str]]:
    # Tarjan's algorithm; the graph has a few dozen nodes, so recursion depth is no concern.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, frozenset())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _tangled(graph: Graph) -> list[set[str]]:
    """The nodes of each cycle's component, in the order `cycles` names them."""
    components = [c for c in _components(graph) if len(c) > 1]
    return sorted(components, key=lambda c: _cycle_within(graph, c))


def _cycle_within(graph: Graph, component: set[str]) -> list[str]:
    """The shortest cycle through the component's first node (breadth first)."""
    start = min(component)
    paths: dict[str, list[str]] = {start: [start]}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for target in sorted(graph.get(node, frozenset()) & component):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{sorted(component)} is strongly connected but has no cycle")


def test_keyplane_has_no_import_cycle_between_its_packages_and_top_level_modules() -> None:
    # given
    graph = import_graph(PACKAGE)

    # when
    found = cycles(graph)

    # then
    assert found == [], "import cycles: " + "; ".join(
        f"{' -> '.join(cycle)} (the cycle joins {', '.join(sorted(members))})"
        for cycle, members in zip(found, _tangled(graph), strict=True)
    )


def test_the_graph_sees_imports_of_every_form_and_skips_type_checking_ones(
    tmp_path: Path,
) -> None:
    # given: a package whose modules import each other in every form the source uses
    files = {
        "app.py": "from keyplane.http import View\n",
        "http.py": (
            "from typing import TYPE_CHECKING\n"
            "from keyplane import models\n"
            "import keyplane.auth.tokens\n"
            "if TYPE_CHECKING:\n"
            "    from keyplane.app import App\n"
        ),
        "auth/__init__.py": "",
        "auth/tokens.py": (
            "from keyplane.auth.keys import Key\n"
            "def later() -> None:\n"
            "    from keyplane.context import Context\n"
        ),
        "auth/keys.py": "import json\n",
        "models/__init__.py": "from keyplane.models.user import User\n",
        "models/user.py": "",
        "context.py": "try:\n    from keyplane.http import View\nexcept ImportError:\n    pass\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)

    # when
    graph = import_graph(tmp_path)

    # then
    assert graph == {
        "app": frozenset({"http"}),
        "http": frozenset({"models", "auth"}),
        "auth": frozenset({"context"}),
        "models": frozenset(),
        "context": frozenset({"http"}),
    }
    assert cycles(graph) == [["auth", "context", "http", "auth"]]


def test_each_cycle_is_named_once_by_its_shortest_path() -> None:
    # given: two separate cycles, one of them with a longer way round as well
    graph = {
        "a": frozenset({"b"}),
        "b": frozenset({"a", "c"}),
        "c": frozenset({"a"}),
        "x": frozenset({"y"}),
        "y": frozenset({"x"}),
        "z": frozenset({"a"}),
    }

    # when
    found = cycles(graph)

    # then
    assert found == [["a", "b", "a"], ["x", "y", "x"]]
