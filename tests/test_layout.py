"""The house's shape, held: each stage imports only what its docstring allows.

Reads every module's imports (the ``TYPE_CHECKING`` block excepted, lazy imports
included) and checks them against the rules in the packages' docstrings and
docs/architecture.md, so a shortcut across stages fails here, not in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGES = ("api", "canbus", "cli", "config", "core", "delivery", "dev", "runtime", "store")

# stage -> the other stages of the project it may import
ALLOWED: dict[str, set[str]] = {
    "core": {"config"},
    "config": {"core"},  # lazily: the notice catalogue, to check texts
    "canbus": {"config", "core"},
    "store": {"core"},
    "delivery": {"canbus", "config", "core", "store"},
    "api": {"core"},
    "runtime": {"canbus", "config", "core", "delivery", "store"},
    "dev": {"api", "canbus", "config", "core", "delivery", "runtime", "store"},
    "cli": set(PACKAGES) - {"cli"},
}
# third-party or standard modules that only some stages may import
ONLY_IN: dict[str, set[str]] = {
    "paho": {"delivery", "api", "dev"},
    "sqlite3": {"store", "api", "dev"},
    "can": {"canbus", "delivery", "runtime", "dev", "cli"},
    "cantools": {"canbus", "delivery", "runtime", "dev"},
    "isotp": {"canbus", "dev"},
    "pydantic": {"config", "api"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


MODULES = {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in PACKAGES else None


def _project_edges() -> dict[str, set[str]]:
    return {m: {i for i in imps if i in MODULES and i != m} for m, imps in MODULES.items()}


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = _project_edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_each_stage_imports_only_what_it_may(stage: str) -> None:
    wrong = []
    for module, imps in MODULES.items():
        if _stage(module) != stage:
            continue
        for imp in imps:
            other = _stage(imp)
            if other and other != stage and other not in ALLOWED[stage]:
                wrong.append(f"{module} imports {imp}")
    assert wrong == []


@pytest.mark.parametrize("library", sorted(ONLY_IN))
def test_outside_libraries_stay_in_their_stage(library: str) -> None:
    wrong = [
        f"{module} imports {library}"
        for module, imps in MODULES.items()
        if any(i == library or i.startswith(library + ".") for i in imps)
        and _stage(module) not in ONLY_IN[library]
    ]
    assert wrong == []


def test_every_subpackage_says_what_it_owns_and_may_import() -> None:
    for name in PACKAGES:
        doc = ast.get_docstring(ast.parse((SRC / "pack_agent" / name / "__init__.py").read_text()))
        assert doc and len(doc) > 200, f"pack_agent.{name} has no docstring of its own"
