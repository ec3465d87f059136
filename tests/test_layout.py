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


# The declared layer order, bottom first: a module imports only its own layer and the ones below.
LAYERS = (
    ("paper_values", "runtime", "weights", "interfaces"),  # data, plumbing, the model interfaces
    ("samples_store", "sae", "energies"),  # on-disk samples, transcoders, intrinsic scores psi
    ("constraints", "diffusion"),  # the KLSC maths, samplers and EnergyDPS
    ("analysis", "baselines"),  # metrics; the methods EnergyDPS is compared with
    ("worlds",),  # the GMM, the mini-world, the paper's models
    ("explain",),  # explanation runs through the samples store
    ("studies",),  # notebook-specific orchestration (nbNN_*)
    ("profiles",),  # notebooks' settings
    ("pipeline", "viz", "report", "notebook_runner", "scale_check"),  # stages, figures, ledgers, runs
)


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index of ``module``'s layer (by its first name below ``klsc_lib``); None for the package itself."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for i, names in enumerate(layers):
        if parts[1] in names:
            return i
    raise AssertionError(f"{module} is in no declared layer: add {parts[1]!r} to LAYERS")


def upward_imports(graph: dict[str, set[str]], layers=LAYERS) -> list[tuple[str, str]]:
    """Edges that import a module of a higher layer."""
    return sorted((u, v) for u, vs in graph.items() for v in vs
                  if None not in (layer_of(u, layers), layer_of(v, layers))
                  and layer_of(v, layers) > layer_of(u, layers))


def test_layer_check_sees_a_planted_upward_import():
    layers = (("low",), ("high",))
    graph = {"klsc_lib.low.a": {"klsc_lib.high.b"}, "klsc_lib.high.b": {"klsc_lib.low.c"}, "klsc_lib.low.c": set()}
    assert upward_imports(graph, layers) == [("klsc_lib.low.a", "klsc_lib.high.b")]


def test_imports_follow_the_declared_layer_order():
    assert upward_imports(import_graph()) == []
