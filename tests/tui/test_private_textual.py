"""Textual's private names are used in one module only: khotui/tui/_hooks.py.

Textual promises nothing about names that start with `_`; pyproject pins it exactly, and every
hook that leans on its internals lives in `_hooks`, with what to re-check when the pin moves.
This test reads every module of khotui/ and tests/ and fails on any other use:

  * an attribute (`x._name`, or `getattr(x, "_name")`/`setattr`/`hasattr`/`monkeypatch.setattr`)
    whose name Textual defines and khotui does not;
  * a method, class attribute or `self._name = ...` in a subclass of a Textual class that
    overrides or shadows a name some Textual class in its MRO defines (as
    `MemoryScreen._add_children` shadowed `DOMNode._add_children`);
  * an import of a private Textual module or name (`textual._compositor`).

Textual's names are read from the installed package's source, so a pin bump re-checks them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import textual

from tests.conftest import REPO

TEXTUAL = Path(textual.__file__).resolve().parent
ALLOWED = {Path("khotui/tui/_hooks.py")}
ATTR_CALLS = {"getattr", "setattr", "hasattr", "delattr"}


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _class_names(cls: ast.ClassDef) -> set[str]:
    """Private names a class defines: in its body, and as `self._x` in its methods."""
    names: set[str] = set()
    for stmt in cls.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        targets = (stmt.targets if isinstance(stmt, ast.Assign)
                   else [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else [])
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) \
                and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            names.add(node.attr)
    return {n for n in names if _private(n)}


def _classes(tree: ast.AST) -> dict[str, ast.ClassDef]:
    """Classes by qualified name (module level and nested in classes; not inside functions)."""
    found: dict[str, ast.ClassDef] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for stmt in body:
            if isinstance(stmt, ast.ClassDef):
                found[prefix + stmt.name] = stmt
                visit(stmt.body, prefix + stmt.name + ".")
    visit(tree.body if isinstance(tree, ast.Module) else [], "")
    return found


@dataclass(frozen=True)
class TextualNames:
    everywhere: frozenset[str]                      # every private name Textual defines
    by_class: dict[tuple[str, str], frozenset[str]]  # (module, qualname) -> its private names


def textual_names() -> TextualNames:
    everywhere: set[str] = set()
    by_class: dict[tuple[str, str], frozenset[str]] = {}
    for path in TEXTUAL.rglob("*.py"):
        module = ".".join(("textual", *path.relative_to(TEXTUAL).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        everywhere |= _defined(tree)
        for qualname, cls in _classes(tree).items():
            by_class[(module, qualname)] = frozenset(_class_names(cls))
        everywhere.update(p.stem for p in [path] if _private(p.stem))
    return TextualNames(frozenset(n for n in everywhere if _private(n)), by_class)


def our_files() -> list[Path]:
    return sorted(p for top in ("khotui", "tests") for p in (REPO / top).rglob("*.py"))


def _imports_textual(tree: ast.AST) -> bool:
    return any((isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "textual")
               or (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "textual" for a in n.names))
               for n in ast.walk(tree))


def _overrides(path: Path, tree: ast.AST, names: TextualNames,
               root: Path = REPO) -> list[tuple[int, str]]:
    """(line, name) of every private name a Textual subclass in `path` redefines."""
    if not _imports_textual(tree):
        return []
    rel = path.relative_to(root).with_suffix("")
    module = importlib.import_module(".".join(rel.parts).removesuffix(".__init__"))
    found: list[tuple[int, str]] = []
    for qualname, node in _classes(tree).items():
        obj: object = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
        assert inspect.isclass(obj), qualname
        theirs: set[str] = set()
        for base in obj.__mro__[1:]:
            theirs |= names.by_class.get((base.__module__, base.__qualname__), frozenset())
        for name in sorted(_class_names(node) & theirs):
            line = next((n.lineno for n in ast.walk(node)
                         if getattr(n, "name", None) == name or getattr(n, "attr", None) == name
                         or getattr(n, "id", None) == name), node.lineno)
            found.append((line, name))
    return found


def _defined(tree: ast.AST) -> set[str]:
    """Private names a module defines: functions, classes, assignments, attributes it sets."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
    return {n for n in names if _private(n)}


def _uses(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of every private attribute read, written or named to getattr & co."""
    used: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            used.append((node.lineno, node.attr))
        elif isinstance(node, ast.Call) and len(node.args) >= 2 \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else \
                func.attr if isinstance(func, ast.Attribute) else ""
            if called in ATTR_CALLS and _private(node.args[1].value):
                used.append((node.lineno, node.args[1].value))
    return used


def _private_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "textual":
            parts = node.module.split(".") + [a.name for a in node.names]  # type: ignore[union-attr]
            found += [(node.lineno, p) for p in parts if _private(p)]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "textual":
                    found += [(node.lineno, p) for p in alias.name.split(".") if _private(p)]
    return found


def private_textual_uses(files: list[Path]) -> list[str]:
    names = textual_names()
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in files}
    overrides = {path: _overrides(path, tree, names) for path, tree in trees.items()}
    shadowing = {name for found in overrides.values() for _, name in found}
    # our own private names (a khotui helper called `_check`) are ours to use, unless the
    # definition is itself a Textual override
    ours = set().union(*(_defined(tree) for tree in trees.values())) - shadowing
    offences: list[str] = []
    for path, tree in trees.items():
        rel = path.relative_to(REPO)
        if rel in ALLOWED:
            continue
        offences += [f"{rel}:{line}: overrides Textual's {name}" for line, name in overrides[path]]
        offences += [f"{rel}:{line}: imports private Textual {name}"
                     for line, name in _private_imports(tree)]
        offences += [f"{rel}:{line}: uses Textual's {name}" for line, name in _uses(tree)
                     if name in names.everywhere and name not in ours]
    return sorted(set(offences))


def test_no_private_textual_name_outside_the_hooks_module():
    offences = private_textual_uses(our_files())
    assert offences == [], "move these into khotui/tui/_hooks.py:\n" + "\n".join(offences)


def test_the_rule_sees_each_kind_of_offence(tmp_path, monkeypatch):
    """The checker itself: each shape of private use is caught, our own names are not."""
    names = textual_names()
    assert {"_display", "_compositor", "_css_update_count", "_add_children",
            "_screen_stacks"} <= names.everywhere
    assert "_add_children" in names.by_class[("textual.dom", "DOMNode")]
    tree = ast.parse("from textual._compositor import Compositor\n"
                     "x = app._background_screens\n"
                     "y = getattr(app, '_held_by', None)\n")
    assert [n for _, n in _private_imports(tree)] == ["_compositor"]
    assert [n for _, n in _uses(tree)] == ["_background_screens", "_held_by"]
    # a shadowing method and attribute, found through the MRO; our own names are not
    module = tmp_path / "shadowing_screen_example.py"
    module.write_text("from textual.screen import Screen\n"
                      "class Mine(Screen):\n"
                      "    def _add_children(self): ...\n"
                      "    def _add_iomem_children(self): ...\n"
                      "    def on_mount(self):\n"
                      "        self._dirty_widgets = set()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = _overrides(module, ast.parse(module.read_text()), names, root=tmp_path)
    assert found == [(3, "_add_children"), (6, "_dirty_widgets")]
    # the hooks module is the one place allowed, and it exists
    assert all((REPO / p).is_file() for p in ALLOWED)
