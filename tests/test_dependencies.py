"""What pyproject.toml says khotui needs at run time is what khotui/ imports.

An operator installs khotui on production hosts: a runtime dependency nothing imports is a
package installed there for nothing (pyfdt was one: only the tests use it, as the oracle for
khotui's own FDT reader), and an import no dependency provides fails on the first host without it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib

from tests.conftest import REPO

# Distribution name -> the module it installs, where they differ or to state them.
IMPORT_NAMES = {"textual": "textual", "pyudev": "pyudev", "psutil": "psutil"}
# Modules khotui imports that a pinned dependency brings: Textual's API hands out rich's Text
# and Segment, and textual==8.2.8 requires the rich it was built with.
PROVIDED_BY = {"rich": "textual"}


def runtime_dependencies() -> list[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = []
    for spec in project["dependencies"]:
        m = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
        assert m, spec
        names.append(m.group(0).lower())
    return names


def import_name(distribution: str) -> str:
    return IMPORT_NAMES.get(distribution, distribution.replace("-", "_").replace(".", "_"))


def khotui_imports() -> dict[str, list[str]]:
    """Top-level module -> the files of khotui/ that import it (inside functions too)."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "khotui").rglob("*.py")):
        rel = str(path.relative_to(REPO))
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.split(".")[0], []).append(rel)
    return found


def test_every_runtime_dependency_is_imported_by_khotui() -> None:
    imported = khotui_imports()
    unused = [d for d in runtime_dependencies() if import_name(d) not in imported]
    assert unused == [], (f"runtime dependencies no module of khotui/ imports: {unused}; a "
                          "test-only package belongs in [project.optional-dependencies] test")


def test_every_third_party_import_is_a_runtime_dependency() -> None:
    declared = {import_name(d) for d in runtime_dependencies()}
    undeclared = {m: files for m, files in khotui_imports().items()
                  if m != "khotui" and m not in sys.stdlib_module_names and m not in declared
                  and PROVIDED_BY.get(m) not in declared}
    assert undeclared == {}, f"imported by khotui/ but not in [project] dependencies: {undeclared}"


def test_pyfdt_is_for_tests_only() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "pyfdt" not in runtime_dependencies()
    assert any(s.startswith("pyfdt") for s in project["optional-dependencies"]["test"])
