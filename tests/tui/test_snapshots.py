"""SVG snapshots of every screen on the demo snapshot, at 80x24 (SSH default) and 120x40.

Review changes with `pytest tests/tui/test_snapshots.py --snapshot-update` only after reading
the HTML report; Textual is pinned exactly, so a Textual bump means reviewing every snapshot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from khotui.tui.app import KhotuiApp
from khotui.tui.viewmodel import Source
from tests.tui.helpers import copy_demo, settle

SIZES = [(80, 24), (120, 40)]
# screen -> keys that reach it from the start
SCREENS = {
    "overview": [],
    "memory": ["2"],
    "handover": ["3"],
    "prepare": ["4"],
    "plan": ["4", "p"],
    "confirm": ["4", "p", "l"],
    "result": ["4", "p", "l", "d", "e", "m", "o", "enter"],
    "help": ["question_mark"],
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return copy_demo(tmp_path_factory.mktemp("demo"))


def _app(demo: Path) -> KhotuiApp:
    return KhotuiApp(Source(demo, demo=True), theme="khotui")


def _run_before(keys: list[str]):
    async def run_before(pilot) -> None:
        app = pilot.app
        await settle(pilot, app)
        for key in keys:
            await pilot.press(key)
            await settle(pilot, app)
        # toasts expire on a timer: whether one is still up depends on machine load, not khotui
        app.clear_notifications()
        await settle(pilot, app)
    return run_before


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("screen", list(SCREENS))
def test_screen_snapshot(snap_compare, demo, screen, size):
    assert snap_compare(_app(demo), terminal_size=size, run_before=_run_before(SCREENS[screen]))
