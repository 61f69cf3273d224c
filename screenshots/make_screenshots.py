"""Write an SVG of every khotui screen, driven on the bundled demo snapshot (never by hand).

    .venv/bin/python screenshots/make_screenshots.py [OUTDIR]

Each screen is reached by pressing the keys an operator would press; the SVGs are Textual's own
screenshots at 100x32, so they are exactly what a terminal shows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from khotui.demo import demo_root  # noqa: E402
from khotui.tui.app import KhotuiApp  # noqa: E402
from khotui.tui.viewmodel import Source  # noqa: E402

SIZE = (100, 32)
SHOTS = [
    ("overview", []),
    ("memory", ["2"]),
    ("memory-zoom", ["2", "n"]),
    ("handover", ["3"]),
    ("handover-dts", ["3", "v"]),
    ("prepare", ["4"]),
    ("plan", ["4", "p"]),
    ("confirm", ["4", "p", "l"]),
    ("result", ["4", "p", "l", "d", "e", "m", "o", "enter"]),
    ("help", ["4", "question_mark"]),
]


async def settle(pilot, app) -> None:
    from textual.widgets import DirectoryTree
    for _ in range(3):
        await pilot.pause()
        ours = [w for w in app.workers if not isinstance(w.node, DirectoryTree)]
        if ours:
            await app.workers.wait_for_complete(ours)
    await pilot.pause()


async def shoot(root: Path, name: str, keys: list[str], out: Path) -> None:
    app = KhotuiApp(Source(root, demo=True), theme="khotui")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot, app)
        for key in keys:
            await pilot.press(key)
            await settle(pilot, app)
        for widget in app.screen.query("Input, TextArea"):
            widget.cursor_blink = False
        await settle(pilot, app)
        app.save_screenshot(filename=f"{name}.svg", path=str(out))
    print(f"wrote {out / (name + '.svg')}")


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sysroot"
        shutil.copytree(demo_root(), root, symlinks=True)
        for f in (root / "boot").iterdir():  # fixed dates: the SVGs change only with the app
            os.utime(f, (1780000000, 1780000000))
        for name, keys in SHOTS:
            await shoot(root, name, keys, out)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
