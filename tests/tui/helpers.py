"""Driving the app as an operator would, and reading back what the screen shows."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import CAPTURES, VM

KERNEL = VM / "bzImage-kho-7.3.4"
MAKE_INITRD = CAPTURES / "make-initrd"


def screen_text(app) -> str:
    """What the terminal shows now, as text (the top screen, modals included)."""
    from khotui.tui._hooks import screen_lines
    return "\n".join(screen_lines(app.screen))


async def settle(pilot, app) -> None:
    """Let workers finish and the screen repaint: no sleeps that guess."""
    from textual.widgets import DirectoryTree
    for _ in range(3):
        await pilot.pause()
        # DirectoryTree keeps a loader worker alive for as long as it is shown: not ours to await
        ours = [w for w in app.workers if not isinstance(w.node, DirectoryTree)]
        if ours:  # an empty list would mean "all workers"
            await app.workers.wait_for_complete(ours)
    await pilot.pause()


async def press(pilot, app, *keys: str) -> None:
    for key in keys:
        await pilot.press(key)
        await settle(pilot, app)


async def type_text(pilot, app, text: str) -> None:
    await pilot.press(*list(text))
    await settle(pilot, app)


def make_initrd(size: int, out: Path) -> Path:
    subprocess.run([sys.executable, str(MAKE_INITRD), str(size), str(out)], check=True)
    return out


def copy_demo(dest: Path) -> Path:
    """The demo sysroot copied with fixed file times, so dates in snapshots never change."""
    import os

    from khotui.demo import demo_root
    root = dest / "sysroot"
    shutil.copytree(demo_root(), root, symlinks=True)
    for path in (root / "boot").iterdir():
        os.utime(path, (1780000000, 1780000000))
    return root
