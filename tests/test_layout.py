"""The package's layout, as docs/architecture.md draws it, held against the code.

Imports are read from the source (``ast``), module level and inside functions
alike, so that a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "service"
CORE = {
    "service.settings",
    "service.models",
    "service.packing",
    "service.errors",
    "service.logs",
    "service.stats",
    "service.lazy",
}

# What each part may import from the package, besides the core modules and itself
# (docs/architecture.md, "The package map").
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "store": set(),
    "providers": set(),
    "engine": {"store"},
    "web": {"engine", "store", "providers"},
    "cli": {"web", "engine", "store", "providers"},
    "tooling": {"cli", "web", "engine", "store", "providers"},
}
MAX_LINES = 360
MAX_TOP_LEVEL_MODULES = 12


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The ``service.*`` modules a file imports: ``from service.x import y``
    counts ``service.x.y`` when that is a module, and ``service.x`` when ``y``
    is a name defined there."""
    known = modules()
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("service")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("service"):
                continue
            submodules = {f"{node.module}.{a.name}" for a in node.names} & known.keys()
            found |= submodules
            if len(submodules) < len(node.names):  # names defined by the module itself
                found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; the package imports absolutely")
    return found


def part_of(module: str) -> str:
    if module in CORE or module == "service":
        return "core"
    return module.split(".")[1]


def test_top_level_reads_as_a_map() -> None:
    top = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top
    assert not [n for n in top if n.startswith(("bench", "chaos"))]
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == (
        MAY_IMPORT.keys() - {"core"}
    )


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_follow_the_map(module: str) -> None:
    if module == "service":
        return  # the public face re-exports from the engine
    own = part_of(module)
    allowed = MAY_IMPORT[own] | {own, "core"}
    for target in imports_of(modules()[module]):
        assert part_of(target) in allowed, f"{module} imports {target}"


def test_product_never_imports_tooling() -> None:
    for module, path in modules().items():
        if part_of(module) != "tooling":
            assert not {t for t in imports_of(path) if t.startswith("service.tooling")}, module


def test_no_import_cycles() -> None:
    graph = {m: {t for t in imports_of(p) if t in modules()} for m, p in modules().items()}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError(" -> ".join([*path[path.index(node) :], node]))
        if node in done:
            return
        for nxt in graph[node]:
            visit(nxt, [*path, node])
        done.add(node)

    for module in graph:
        visit(module, [])


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_stay_small(module: str) -> None:
    lines = modules()[module].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, f"{module}: {lines} lines; split it by concept"


def test_lua_lives_beside_the_scripts_that_run_it() -> None:
    lua = {p.parent for p in PACKAGE.rglob("*.lua")}
    assert lua == {PACKAGE / "store" / "lua"}
