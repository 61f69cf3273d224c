"""The app is cheap to import and reads nothing until it runs; NO_COLOR loses no meaning."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


def test_importing_the_app_touches_no_host_reader():
    code = ("import sys, khotui.tui.app\n"
            "bad = [m for m in sys.modules if m.startswith(('khotui.host.', 'khotui.plan', "
            "'khotui.load.kexec', 'khotui.load.opened', 'psutil', 'pyudev'))\n"
            "      and m != 'khotui.host.sysroot']\n"
            "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_only_the_viewmodel_imports_the_core():
    """Widgets and screens draw plain values; the core is reached through khotui.tui.viewmodel
    (the one formatter, khotui.units, is the base every layer writes numbers with)."""
    import ast
    offenders = []
    for path in (REPO / "khotui" / "tui").rglob("*.py"):
        rel = path.relative_to(REPO / "khotui" / "tui")
        if rel.parts[0] == "viewmodel":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            # `from khotui import units` imports khotui.units
            modules = ([f"khotui.{a.name}" for a in node.names] if node.module == "khotui"
                       else [node.module])
            offenders += [f"{rel}: {m}" for m in modules if m.startswith("khotui.")
                          and not m.startswith(("khotui.tui", "khotui.errors", "khotui.demo",
                                                "khotui.units"))]
    assert offenders == []


@pytest.mark.asyncio
async def test_no_color_keeps_every_mark_readable(monkeypatch, tmp_path):
    from khotui.tui.app import KhotuiApp
    from khotui.tui.viewmodel import Source
    from tests.tui.helpers import copy_demo, screen_text, settle
    monkeypatch.setenv("NO_COLOR", "1")
    app = KhotuiApp(Source(copy_demo(tmp_path), demo=True))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        assert app.no_color
        text = screen_text(app)
        assert "✓ ok" in text and "DRY RUN" in text and "✓ ready" in text


def test_sixteen_colour_terminals_get_the_ansi_theme():
    from khotui.tui.theme import default_theme
    assert default_theme({"TERM": "linux"}) == "khotui-ansi"
    assert default_theme({"TERM": "xterm-256color"}) == "khotui"
    assert default_theme({"TERM": "xterm", "COLORTERM": "truecolor"}) == "khotui"


@pytest.mark.asyncio
@pytest.mark.parametrize("theme", ["khotui", "khotui-ansi"])
async def test_both_themes_draw_every_screen(theme, tmp_path):
    from khotui.tui.app import KhotuiApp
    from khotui.tui.viewmodel import Source
    from tests.tui.helpers import copy_demo, press, screen_text, settle
    app = KhotuiApp(Source(copy_demo(tmp_path), demo=True), theme=theme)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await press(pilot, app, "2", "3", "4", "p")
        assert "would succeed" in screen_text(app)


def test_the_private_textual_hooks_the_app_relies_on_are_there():
    """Every private Textual name khotui uses is in khotui/tui/_hooks.py (test_private_textual
    enforces it); pyproject pins Textual exactly, and _hooks.broken_assumptions() checks what
    each hook assumes, naming the hook to re-read when the pin moves."""
    import re

    import textual

    from khotui.tui import _hooks
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(rf'"textual=={re.escape(_hooks.TEXTUAL_PIN)}"', pyproject), \
        "pyproject's Textual pin and _hooks.TEXTUAL_PIN differ: re-check the hooks, then both"
    assert textual.__version__ == _hooks.TEXTUAL_PIN, \
        "Textual moved: re-check every hook in khotui/tui/_hooks.py and the snapshots"
    assert _hooks.broken_assumptions() == []


def test_every_text_input_is_a_steady_one():
    """A blinking cursor redraws twice a second: bytes over SSH while the operator only reads
    (issue 13 item 6). khotui makes its Input and TextArea only from widgets/steady.py, whose
    cursor never blinks; tests/tui/test_real_terminal.py measures the idle bytes."""
    import ast

    from khotui.tui.widgets.steady import SteadyInput, SteadyTextArea
    made = []
    for path in (REPO / "khotui" / "tui").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("Input", "TextArea"):
                made.append(f"{path.relative_to(REPO)}:{node.lineno} {node.func.id}(...)")
    assert made == [], f"make it a SteadyInput/SteadyTextArea: {made}"
    assert SteadyInput().cursor_blink is False and SteadyTextArea().cursor_blink is False
