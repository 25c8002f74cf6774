"""The package's shape, checked from its source: no import cycles, and SATOSA only at the edge.

The graph is built with ``ast`` from every module of ``satosa_orcid_plugin`` and counts every
import, also those inside functions (a late import that dodges a cycle at load time is still a
cycle for the reader); only imports under ``if TYPE_CHECKING:`` are left out.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "satosa_orcid_plugin"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE

# Modules that may import satosa: the glue, the operations entry points, the error root, and
# the demo/test tooling (devstack builds the demo proxy's metadata with SATOSA's own code).
SATOSA_ALLOWED = (f"{PACKAGE}.microservice", f"{PACKAGE}.errors", f"{PACKAGE}.ops", f"{PACKAGE}.devstack")
# The alembic environment reads the tables; nothing else outside store/ sees its modules.
STORE_READERS = {f"{PACKAGE}.migrations.env": {"schema", "database"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of everything ``module`` imports (packages and modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                found.add(prefix)
                found.update(f"{prefix}.{alias.name}" for alias in child.names)
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py") if "migrations" not in p.parts}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path, name):
            # "from .store import Store" names the package store and the attribute Store:
            # keep the longest prefix that is one of our modules.
            parts = imported.split(".")
            for end in range(len(parts), 0, -1):
                candidate = ".".join(parts[:end])
                if candidate in modules:
                    if candidate != name:
                        targets.add(candidate)
                    break
        graph[name] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def connect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _is_package_parent(importer: str, imported: str) -> bool:
    """A package's __init__ importing its own submodules (and they it) is how packages are
    assembled, not a layering cycle."""
    return imported.startswith(importer + ".") or importer.startswith(imported + ".")


def test_the_package_has_no_import_cycle() -> None:
    graph = {m: {t for t in ts if not _is_package_parent(m, t)} for m, ts in _graph().items()}
    assert _cycles(graph) == []


def test_only_the_glue_ops_and_the_error_root_import_satosa() -> None:
    offenders = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        if name.startswith(SATOSA_ALLOWED) or "migrations" in path.parts:
            continue
        bad = sorted(i for i in _imports(path, name) if i == "satosa" or i.startswith("satosa."))
        if bad:
            offenders[name] = bad
    assert offenders == {}


def test_nothing_outside_the_store_package_touches_its_rows_or_sessions() -> None:
    """Sessions, row classes and the store's private names stay inside store/: other modules
    use ``satosa_orcid_plugin.store``'s public names only."""
    submodules = {p.stem for p in (ROOT / "store").glob("*.py") if p.stem != "__init__"}
    offenders = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        if name.startswith(f"{PACKAGE}.store") or f"{PACKAGE}.migrations.versions" in name:
            continue
        allowed = STORE_READERS.get(name, set())
        bad = []
        for imported in _imports(path, name):
            parts = imported.split(".")
            if imported.startswith("sqlalchemy.orm"):
                bad.append(imported)
            elif parts[:2] == [PACKAGE, "store"] and len(parts) > 2 and parts[2] not in allowed \
                    and (parts[2] in submodules or parts[2].startswith("_")):
                bad.append(imported)
        if bad:
            offenders[name] = sorted(bad)
    assert offenders == {}


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
])
def test_the_cycle_finder_finds_cycles(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert _cycles(graph) == expected


def test_the_import_reader_resolves_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from .store import Store\nfrom ..x import y\nimport satosa.context\n"
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .late import Thing\n"
                      "def f():\n    from . import metrics\n")
    found = _imports(source, f"{PACKAGE}.services.mod")
    assert f"{PACKAGE}.services.store.Store" in found
    assert f"{PACKAGE}.x.y" in found
    assert "satosa.context" in found
    assert f"{PACKAGE}.services.metrics" in found
    assert not any("late" in name for name in found)
