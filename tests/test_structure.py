"""The package's shape: no import cycle inside eanet/, and MLflow imported only by eanet.tracking.

Read from the source with `ast` (nothing is imported), so a cycle that only a function-level
import closes is found too; imports under `if TYPE_CHECKING:` never run and do not count.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "eanet"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(module: str, tree: ast.AST) -> set[str]:
    """The eanet modules `module` imports anywhere (module level or inside functions), except
    under `if TYPE_CHECKING:`. `from eanet.x import y` imports eanet.x, and eanet.x.y if that
    is a module; a relative import is resolved against `module`'s package."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            names = []
        found.update(name for name in names if name in MODULES)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module: imported_modules(module, ast.parse(path.read_text(), str(path)))
            for module, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as [a, b, …, a], or None (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return path[path.index(successor):] + [successor]
            if successor not in state:
                cycle = visit(successor)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_the_graph_sees_every_kind_of_import():
    graph = import_graph()
    assert "eanet.config" in graph["eanet.run"]  # module level
    assert "eanet.training.train" in graph["eanet.run"]  # inside main()
    assert "eanet.tracking.store" in graph["eanet.sweeps.callbacks"]  # from … import, in a method
    assert "eanet.training.startup" not in graph["eanet.training.train"]  # `if TYPE_CHECKING:` only


def test_no_import_cycle_inside_eanet():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_only_eanet_tracking_imports_mlflow():
    """`grep -rlE "^\\s*(import mlflow|from mlflow)" eanet` lists only eanet/tracking/."""
    pattern = re.compile(r"^\s*(import mlflow|from mlflow)", re.MULTILINE)
    importing = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*")
                       if p.is_file() and p.suffix == ".py" and pattern.search(p.read_text()))
    assert importing, "the search found no mlflow import at all"
    outside = [p for p in importing if not p.startswith("eanet/tracking/")]
    assert outside == [], f"mlflow imported outside eanet/tracking/: {outside}"
