"""Tests mirror the source tree (issue 18 item 8).

* every module ``core/mxplain/<x>.py`` has ``tests/core/test_<x>.py``; a module in a sub-package,
  ``core/mxplain/<pkg>/<x>.py``, has the same flat name, ``tests/core/test_<x>.py``, so two modules
  may not share a last name (``__init__`` and ``__main__`` are left out: they only re-export and
  dispatch);
* that test module imports the module it is named for (so a renamed file that tests something else
  does not count) and defines at least one test;
* every plugin package ``plugins/mxplain_<short>/`` has a folder ``tests/plugins/<short>/`` with at
  least one ``test_*.py``, and every folder there is a plugin's.

``PENDING`` lists the modules whose mirrored tests are not written yet, as strict expected
failures: each one fails the suite the moment its test module lands, until it is taken off the
list. The rule itself is never relaxed for them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "mxplain"
PLUGINS = ROOT / "plugins"
TESTS = ROOT / "tests"
LEFT_OUT = {"__init__", "__main__"}

PENDING: set[str] = set()


def core_modules() -> list[str]:
    """Dotted names below ``mxplain`` of every core module the rule covers (``cube``,
    ``studies.cnn``)."""
    names = []
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE).with_suffix("").parts
        if parts[-1] not in LEFT_OUT:
            names.append(".".join(parts))
    return names


def mirrored_test(module: str) -> Path:
    """``cube`` -> ``tests/core/test_cube.py``; ``studies.cnn`` -> ``tests/core/test_cnn.py``."""
    return TESTS / "core" / f"test_{module.rpartition('.')[2]}.py"


def imported_modules(tree: ast.Module) -> set[str]:
    """Every dotted name a test module imports: ``from mxplain.a import b`` gives ``mxplain.a`` and
    ``mxplain.a.b``, ``import mxplain.a`` gives ``mxplain.a``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def defines_a_test(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            return True
    return False


def mirror_problem(module: str) -> str | None:
    """Why ``module`` has no proper mirrored test module, or ``None``."""
    path = mirrored_test(module)
    where = path.relative_to(ROOT)
    if not path.is_file():
        return f"mxplain.{module} has no {where}"
    tree = ast.parse(path.read_text(), str(path))
    if f"mxplain.{module}" not in imported_modules(tree):
        return f"{where} does not import mxplain.{module}"
    if not defines_a_test(tree):
        return f"{where} defines no test"
    return None


def plugin_packages() -> list[str]:
    return sorted(p.name for p in PLUGINS.glob("mxplain_*") if (p / "__init__.py").is_file())


def _mirror_cases():
    for module in core_modules():
        marks = [pytest.mark.xfail(strict=True, reason="mirrored test not written yet")] \
            if module in PENDING else []
        yield pytest.param(module, marks=marks, id=module)


@pytest.mark.parametrize("module", list(_mirror_cases()))
def test_every_core_module_has_its_mirrored_test_module(module):
    problem = mirror_problem(module)
    assert problem is None, problem


def test_no_two_modules_share_a_mirrored_test():
    paths = [mirrored_test(m) for m in core_modules()]
    assert len(set(paths)) == len(paths)


def test_pending_names_only_modules_that_exist():
    assert PENDING <= set(core_modules()), sorted(PENDING - set(core_modules()))


@pytest.mark.parametrize("package", plugin_packages())
def test_every_plugin_package_has_its_test_folder(package):
    short = package.removeprefix("mxplain_")
    folder = TESTS / "plugins" / short
    assert sorted(folder.glob("test_*.py")), f"plugins/{package} has no tests/plugins/{short}/test_*.py"


def test_every_plugin_test_folder_is_a_plugins():
    folders = {p.name for p in (TESTS / "plugins").iterdir() if p.is_dir()
               and not p.name.startswith(("_", "."))}
    assert folders == {p.removeprefix("mxplain_") for p in plugin_packages()}


def test_the_rule_sees_the_tree(tmp_path):
    """The walk finds the core's modules by their dotted names, sub-packages included, and maps them
    to their mirrored paths; a test file that imports another module or has no test is refused."""
    modules = core_modules()
    assert {"cube", "studies.cnn"} <= set(modules)
    assert not {"__init__", "__main__", "studies.__init__"} & set(modules)
    assert mirrored_test("studies.cnn") == TESTS / "core" / "test_cnn.py"
    assert mirrored_test("cube") == TESTS / "core" / "test_cube.py"
    assert len(plugin_packages()) == len(list(PLUGINS.glob("mxplain_*/__init__.py"))) >= 8

    other = ast.parse("from mxplain.cubes import x\nimport mxplain\ndef test_a(): pass\n")
    assert "mxplain.cube" not in imported_modules(other)
    mine = ast.parse("from mxplain import cube\n")
    assert "mxplain.cube" in imported_modules(mine) and not defines_a_test(mine)
    assert mirror_problem("no_such_module") == "mxplain.no_such_module has no " \
        "tests/core/test_no_such_module.py"
