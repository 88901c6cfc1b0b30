"""The import graph of ``core/`` and ``plugins/``: no cycle, no plugin importing another plugin,
and the size limits (no function over 80 lines, no file over 450). Every import counts, at module
level or inside a function, so a cycle cannot be hidden by moving an import into a function; only
imports under ``if TYPE_CHECKING:`` are left out (:func:`_is_type_checking` says why)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE_ROOTS = (ROOT / "core", ROOT / "plugins")
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 450


def _modules() -> dict[str, Path]:
    """Every in-tree module by dotted name (``mxplain.cube``, ``mxplain_attgan.editor``)."""
    out = {}
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts:
                out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The in-tree modules ``name`` imports anywhere in its body; ``from pkg import x`` counts as
    ``pkg.x`` when that is a module, else as ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text(), str(path))
    type_only = {id(n) for block in ast.walk(tree) if _is_type_checking(block)
                 for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _is_type_checking(node) -> bool:
    """``if TYPE_CHECKING:`` - the one exclusion: imports there never run; they name types for
    annotations only (the interfaces' signatures mention ``TileStore``, ``Simulator``), which
    string annotations need and no code depends on."""
    if not isinstance(node, ast.If):
        return False
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _is_ancestor(package: str, module: str) -> bool:
    """A package's ``__init__`` runs before any of its modules, so ``pkg.mod`` importing ``pkg``
    is not a cycle of code: the edge from a module to its own parent package is left out of the
    cycle search (``pkg`` importing ``pkg.mod`` is kept)."""
    return module.startswith(package + ".")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One path per strongly connected component with more than one module (Tarjan), closed
    (first module repeated at the end)."""
    edges = {m: sorted(t for t in ts if not _is_ancestor(t, m)) for m, ts in graph.items()}
    index, low, stack, on_stack, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [(_path_through(comp, edges), comp) for comp in comps]


def _path_through(comp: list[str], edges: dict[str, list[str]]) -> list[str]:
    """A shortest cycle through the component's first module, as a path."""
    inside, start = set(comp), comp[0]
    parents, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in edges[v]:
                if w == start:
                    path = [v]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return [start] + path[::-1][1:] + [start] if len(path) > 1 else [start, v, start]
                if w in inside and w not in parents:
                    parents[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def test_cycle_search_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "p": set(), "p.m": {"p"}}
    assert _cycles(graph) == [(["a", "b", "c", "a"], ["a", "b", "c"])]


def test_imports_resolve_relative_function_level_and_from_package(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nfrom . import b\nfrom .c import f\n"
                              "import numpy\n\ndef g():\n    import pkg.d\n\n"
                              "if TYPE_CHECKING:\n    import pkg.e\n")
    modules = {m: pkg / "x.py" for m in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d", "pkg.e")}
    assert _imports("pkg.a", pkg / "a.py", modules) == {"pkg.b", "pkg.c", "pkg.d"}


def test_no_import_cycle():
    cycles = _cycles(_graph())
    lines = [" -> ".join(path) + (f"  (all of: {', '.join(comp)})" if len(comp) + 1 > len(path)
                                  else "") for path, comp in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(lines)


def test_no_plugin_imports_another_plugin():
    bad = []
    for module, targets in _graph().items():
        top = module.split(".")[0]
        if not top.startswith("mxplain_"):
            continue
        bad += [f"{module} -> {t}" for t in sorted(targets)
                if t.split(".")[0].startswith("mxplain_") and t.split(".")[0] != top]
    assert not bad, "plugins importing other plugins:\n" + "\n".join(bad)


def _size_offenders() -> list[str]:
    out = []
    for root in SOURCE_ROOTS:
        for path in sorted(root.rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(ROOT)
            n = len(text.splitlines())
            if n > MAX_FILE_LINES:
                out.append(f"{rel}: file {n} lines")
            for node in ast.walk(ast.parse(text, str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    length = node.end_lineno - first + 1
                    if length > MAX_FUNCTION_LINES:
                        out.append(f"{rel}:{node.lineno} {node.name} {length} lines")
    return out


def test_size_limits():
    offenders = _size_offenders()
    assert not offenders, (f"over {MAX_FUNCTION_LINES} lines a function / {MAX_FILE_LINES} a "
                           "file:\n" + "\n".join(offenders))
