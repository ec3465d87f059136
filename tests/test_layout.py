"""The package layout follows the paper's taxonomy and its imports flow one way."""

from __future__ import annotations

import ast
from pathlib import Path

import klsc_lib

PACKAGE = Path(klsc_lib.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Edges module -> klsc_lib module it imports, for every import statement in the
    file (module level or inside functions: a lazy import still couples the two)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("klsc_lib"):
                targets.append(node.module)
                targets += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (cycle := visit(v)):
                return cycle
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (cycle := visit(u)):
            return cycle
    return None


def test_cycle_finder_sees_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_klsc_lib_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30, "the graph walk found too few modules"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_few_top_level_modules():
    top = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(top) <= 10, top


def test_models_and_maths_never_import_notebook_level_code():
    """Imports flow one way: worlds, diffusion, constraints, sae never import the
    report, the notebook runner, profiles or viz."""
    upper = ("klsc_lib.report", "klsc_lib.notebook_runner", "klsc_lib.profiles", "klsc_lib.viz")
    lower = ("klsc_lib.worlds", "klsc_lib.diffusion", "klsc_lib.constraints", "klsc_lib.sae", "klsc_lib.energies",
             "klsc_lib.interfaces")
    graph = import_graph()
    bad = [(u, v) for u, vs in graph.items() if u.startswith(lower) for v in vs if v.startswith(upper)]
    assert not bad, bad
