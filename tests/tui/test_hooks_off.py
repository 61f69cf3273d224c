"""With the Textual hooks off (khotui/tui/_hooks.py) the app is the same app: every screen, the
plan, the confirmation, the result and help show the operator the same things; only the bytes
written to the terminal grow (the frames the hooks hold back go out)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from khotui.tui import _hooks
from khotui.tui.app import KhotuiApp
from khotui.tui.viewmodel import Source
from tests.conftest import REPO
from tests.tui.helpers import copy_demo, press, screen_text, settle

# (keys, what the operator must then see): every screen, plan, confirm, result, help
WALK: list[tuple[list[str], list[str]]] = [
    ([], ["kho-v4", "DRY RUN", "✓ ok", "0x76c00000", "233 of 293 bytes"]),
    (["2"], ["node0", "iomem", "System RAM"]),
    (["3"], ["outgoing (kho/out)"]),
    (["4"], ["vmlinuz-7.3.4", "/boot/vmlinuz-7.3.4"]),
    (["5"], ["Plan"]),
    (["4", "p"], ["would succeed", "0x7ca00000"]),
    (["l"], ["Type the host name", "DRY RUN"]),
    (["d", "e", "m", "o", "enter"], ["nothing was loaded"]),
    (["escape", "question_mark"], ["Help: plan"]),
    (["escape", "1"], ["kho-v4", "ready"]),
]


async def _walk(demo: Path, textual_hooks: bool) -> list[str]:
    """The screen text after each step of WALK, checked as it goes."""
    app = KhotuiApp(Source(demo, demo=True), theme="khotui", textual_hooks=textual_hooks)
    seen: list[str] = []
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        for keys, expected in WALK:
            await press(pilot, app, *keys)
            await pilot.pause(0.3)            # help's Markdown renders async; a release's timer
            app.clear_notifications()         # toasts expire on a timer: machine load, not khotui
            await settle(pilot, app)
            if not textual_hooks:
                assert not app.output_held and not app.full_frame_due
            text = screen_text(app)
            missing = [e for e in expected if e not in text]
            assert not missing, f"after {keys} (hooks {textual_hooks}) {missing} missing:\n{text}"
            seen.append(text)
        assert app.result is not None and app.result.dry_run
    return seen


@pytest.mark.asyncio
async def test_with_the_hooks_off_the_operator_sees_the_same_app(tmp_path):
    demo = copy_demo(tmp_path)
    off = await _walk(demo, textual_hooks=False)
    on = await _walk(demo, textual_hooks=True)
    for (keys, _), a, b in zip(WALK, on, off, strict=True):
        assert a == b, f"after {keys} the screen differs with the hooks off"


@pytest.mark.asyncio
@pytest.mark.parametrize("textual_hooks", [True, False])
async def test_a_long_iomem_tree_follows_the_memory_picture_either_way(tmp_path, textual_hooks):
    """More top-level iomem lines than a pane shows: the tree is drawn in the frame after the
    picture (HeldPaintScreen.after_full_frame), with or without the hooks, well before the
    one-second fallback."""
    demo = copy_demo(tmp_path)
    iomem = demo / "proc" / "iomem"
    lines = iomem.read_text().splitlines()
    extra = [f"{0x200000000 + i * 0x100000:x}-{0x200000000 + i * 0x100000 + 0xfffff:x} : "
             f"PCI Bus 0000:{i + 1:02x}" for i in range(60)]
    iomem.write_text("\n".join(lines[:-1] + extra + lines[-1:]) + "\n")
    app = KhotuiApp(Source(demo, demo=True), theme="khotui", textual_hooks=textual_hooks)
    async with app.run_test(size=(120, 40)) as pilot:
        await press(pilot, app, "2")
        await pilot.pause(0.6)
        await settle(pilot, app)
        assert app.screen.query_one("#mem-switcher").display
        assert "PCI Bus 0000:01" in screen_text(app)


def test_the_switch_is_read_from_the_environment_once():
    assert _hooks.hooks_from_env({}) is True
    assert _hooks.hooks_from_env({"KHOTUI_TEXTUAL_HOOKS": "1"}) is True
    for off in ("0", "off", "no", "false", " OFF "):
        assert _hooks.hooks_from_env({"KHOTUI_TEXTUAL_HOOKS": off}) is False
    code = ("from khotui.tui import _hooks; from khotui.tui.app import KhotuiApp\n"
            "from khotui.tui.viewmodel import Source\n"
            "import os, sys; os.environ['KHOTUI_TEXTUAL_HOOKS'] = '1'\n"
            "app = KhotuiApp(Source(__import__('pathlib').Path('/'), demo=True))\n"
            "print(_hooks.ENABLED, app.textual_hooks, KhotuiApp(app.source, textual_hooks=True)"
            ".textual_hooks)\n")
    env = {**os.environ, "KHOTUI_TEXTUAL_HOOKS": "0"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, check=False,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]


def test_the_hooks_write_fewer_bytes_to_a_real_terminal(monkeypatch):
    """`khotui --demo` in a pseudo-terminal (the driver and escape codes of an SSH session),
    walked through every screen: the bytes written with the hooks on and off, in the same run.
    On this machine: 50 KB with the hooks, 128-134 KB without."""
    from bench.tui_startup import measure_khotui
    from khotui.demo import demo_root
    demo_root()
    written: dict[str, tuple[int, int]] = {}
    for setting in ("1", "0"):
        monkeypatch.setenv("KHOTUI_TEXTUAL_HOOKS", setting)
        _, startup, walk = measure_khotui(80, 24)
        written[setting] = (startup, startup + sum(n for _, n in walk))
    (on_start, on_total), (off_start, off_total) = written["1"], written["0"]
    assert on_start <= off_start, written
    # a margin, so that hooks which quietly stopped holding anything fail here
    assert on_total <= 0.8 * off_total, written


def test_a_fast_plan_reaches_a_real_terminal_as_one_frame():
    """The Plan screen in a pseudo-terminal, three times: the plan is drawn once. When the
    plan came back within a few ms of the screen mounting (faster than the screen's own first
    layout), the held output was released before the layout settled, and the whole screen went
    out a second time right after (8.6 KB became 16.4 KB on every other walk)."""
    import re

    from bench.tui_startup import WALK, Pty
    from khotui.demo import demo_root
    demo_root()
    for _ in range(3):
        p = Pty([sys.executable, "-m", "khotui", "--demo"], 80, 24)
        try:
            p.read_until(b"ready")
            for key, marker in WALK[:4]:
                before = len(p.buf)
                p.send(key)
                p.read_until(marker)
                p.drain()
                if key == "p":
                    frames = re.findall(rb"would succeed", bytes(p.buf[before:]))
                    assert len(frames) == 1, f"the plan was drawn {len(frames)} times"
            p.send("q")
        finally:
            p.close()
