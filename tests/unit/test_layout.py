"""The package's layout keeps its shape: no module imports one that imports it back, and no
module grows far past ~400 lines (docs/architecture.md, "One home per concern")."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "occystrap"
MAX_LINES = 420  # ~400, with room for a formatter's line or two


def _module(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.Module, known: set[str]) -> set[str]:
    """The package's modules imported at module level, `if TYPE_CHECKING:` included (a
    cycle there is still a cycle for the reader); imports inside functions are lazy on
    purpose (httpx only when a proxy is set, --help without the pipeline) and left out."""
    found: set[str] = set()
    todo: list[ast.stmt] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If | ast.Try):
            todo += [*node.body, *node.orelse, *getattr(node, "finalbody", [])]
            for handler in getattr(node, "handlers", []):
                todo += handler.body
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found |= {
                name
                for name in [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                if name in known
            }
    return found


def test_no_import_cycle() -> None:
    files = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: _imports(ast.parse(p.read_text()), set(files)) - {m} for m, p in files.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module) :] + [module]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_no_module_far_past_400_lines() -> None:
    long = sorted(
        (len(p.read_text().splitlines()), str(p.relative_to(PACKAGE)))
        for p in PACKAGE.rglob("*.py")
    )
    over = [f"{name}: {n}" for n, name in long if n > MAX_LINES]
    assert not over, f"split these by concern: {over}"
