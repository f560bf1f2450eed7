"""The package's modules import each other one way: no circle among module-level imports."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "art_wdat"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package modules that ``path`` imports, anywhere but under ``if TYPE_CHECKING:`` (function-level imports
    included: a lazy import still makes a circle of meaning, only a later one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules}


def graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    # A package's __init__ re-exports its modules; the edges that matter are between the modules themselves.
    return {module_name(p): imports_of(p, modules) - {module_name(p)} for p in paths if p.name != "__init__.py"}


def reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for nxt in edges.get(node, ()):
            if nxt == goal:
                return True
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def test_training_runs_settings_then_loop_then_trainer():
    edges = graph()
    assert "art_wdat.training.settings" in edges["art_wdat.training.loop"]
    assert "art_wdat.training.loop" in edges["art_wdat.training.trainer"]
    for low, high in (("settings", "loop"), ("settings", "trainer"), ("loop", "trainer"), ("recipe", "settings"),
                      ("selection", "loop")):
        assert not reaches(edges, f"art_wdat.training.{low}", f"art_wdat.training.{high}"), (low, high)


def test_the_parser_does_not_import_the_commands():
    edges = graph()
    assert "art_wdat.cli.parser" in edges["art_wdat.cli.commands"]
    assert not reaches(edges, "art_wdat.cli.parser", "art_wdat.cli.commands")


def test_no_module_imports_itself_through_others():
    edges = graph()
    circles = sorted(m for m in edges if reaches(edges, m, m))
    assert circles == []
