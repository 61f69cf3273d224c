"""The layering of khotui's packages, enforced: each package imports only the layers below it.

    base       errors, types, units, cmdline      the shared types and the kernel's own rules
    fdt, image, placement                         pure decoders and the simulator: base only
    host       reading a host or a snapshot       base, fdt, image (the running kernel's image)
    plan       status, checks, the dry run        host, fdt, image, placement, base
    load       the syscall and its policy         plan and below
    cli        argparse, text, JSON, prompts      load and below (the app only from cmd_tui)
    tui        the Textual app                    everything but cli; the only Textual importer
    demo       the bundled snapshot               base

Every import counts, including the ones inside functions (lazy imports are still dependencies).
The README's Layout section states the same table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "khotui"

BASE = {"errors", "types", "units", "cmdline"}
ALLOWED: dict[str, set[str]] = {
    "base": {"base"},
    "fdt": {"base", "fdt"},
    "image": {"base", "image"},
    "placement": {"base", "placement"},
    "host": {"base", "fdt", "image", "host"},
    "plan": {"base", "fdt", "image", "placement", "host", "plan"},
    "load": {"base", "fdt", "image", "placement", "host", "plan", "load"},
    "cli": {"base", "fdt", "image", "placement", "host", "plan", "load", "cli", "demo"},
    "tui": {"base", "fdt", "image", "placement", "host", "plan", "load", "tui", "demo"},
    "demo": {"base", "demo"},
    "main": {"cli"},
}
# Third-party packages and the layers that may import them.
THIRD_PARTY = {"textual": {"tui"}, "rich": {"tui"}, "pyudev": {"host"}, "psutil": {"host"}}
# The one upward edge: the CLI starts the app (and only there).
EXCEPTIONS = {("khotui/cli/main.py", "cmd_tui", "tui")}


def layer_of(module: str) -> str | None:
    """The layer of a dotted module name inside khotui (None for the package root itself)."""
    parts = module.split(".")
    if parts[0] != "khotui" or len(parts) == 1:
        return None
    head = parts[1]
    if head in BASE:
        return "base"
    if head == "__main__":
        return "main"
    return head


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, str | None, int]]:
    """(imported module, enclosing function or None, line) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    found: list[tuple[str, str | None, int]] = []

    def visit(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            name = func
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                name = child.name
            if isinstance(child, ast.Import):
                found.extend((alias.name, func, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    module = ".".join(base + ([child.module] if child.module else []))
                else:
                    module = child.module or ""
                if module == "khotui":
                    # `from khotui import units`: each name is a module of its own
                    found.extend((f"khotui.{alias.name}", func, child.lineno)
                                 for alias in child.names if not alias.name.startswith("__"))
                else:
                    found.append((module, func, child.lineno))
            visit(child, name)

    visit(tree, None)
    return found


def violations(root: Path = PACKAGE) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(REPO))
        own = layer_of(_module_name(path))
        if own is None:
            continue
        for module, func, line in imports_of(path):
            target = layer_of(module)
            top = module.split(".")[0]
            if target is None and top in THIRD_PARTY:
                if own not in THIRD_PARTY[top]:
                    out.append(f"{rel}:{line}: {own} imports {module} (only "
                               f"{', '.join(sorted(THIRD_PARTY[top]))} may)")
                continue
            if target is None or target in ALLOWED[own]:
                continue
            if (rel, func, target) in EXCEPTIONS:
                continue
            out.append(f"{rel}:{line}: {own} imports {module} ({target} is not below {own})")
    return out


def test_every_package_imports_only_the_layers_below_it():
    assert violations() == []


def test_every_khotui_package_has_a_layer():
    # a new package must be placed in the table above, not slip past the rule
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert packages - set(ALLOWED) == set()
    assert modules - BASE - {"__main__"} == set()


def test_each_package_says_what_it_owns_and_may_import():
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(REPO)} has no docstring"
        if init.parent.name != "demo":
            assert "import" in doc.lower(), f"{init.relative_to(REPO)}: say what it may import"


@pytest.mark.parametrize(("source", "where", "bad"), [
    ("from khotui.load import kexec\n", "placement/x.py", "placement imports khotui.load"),
    ("def f():\n    from khotui.tui import app\n", "host/x.py", "host imports khotui.tui"),
    ("from ..plan import report\n", "fdt/x.py", "fdt imports khotui.plan"),
    ("import textual\n", "plan/x.py", "plan imports textual"),
    ("from khotui import units\n", "fdt/x.py", None),
])
def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch, source, where, bad):
    # the checker itself, on a fake package: an upward import (even a lazy or relative one) is
    # reported, a downward one is not
    fake = tmp_path / "khotui"
    target = fake / where
    target.parent.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (target.parent / "__init__.py").write_text('"""x"""\n')
    target.write_text(source)
    monkeypatch.setattr(__import__(__name__, fromlist=["REPO"]), "REPO", tmp_path)
    found = violations(fake)
    if bad is None:
        assert found == []
    else:
        assert len(found) == 1 and bad in found[0], found
