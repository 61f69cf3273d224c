#!/usr/bin/env python3
"""The TUI on the largest hosts: time to the first complete Overview, and the slowest frame per
screen while an operator walks the app (issue #5).

    .venv/bin/python bench/tui_scale.py [--hosts demo,10x,100x] [--size 120x40] [--runs 1]

For each host:
  * **first Overview**: `khotui --root HOST` spawned in a pseudo-terminal (imports and all, as
    over SSH) until the Overview's verdict line is on the terminal (the host state read, every
    panel drawn);
  * **slowest frame per screen**, driven with Pilot: keys pressed as an operator would (open the
    memory map, move and zoom, search /proc/iomem, list the memory blocks and read their
    states, open the Handover explorer, page its DTS, prepare and plan a load). Measured two
    ways, both on the app's event loop:
      - `stall`: the longest time the loop was blocked (a 5 ms ticker on the same loop reports
        how late it woke). Nothing is drawn while the loop is blocked, so this is the longest
        a keypress or a worker's result can freeze the screen: message handlers, layout and
        the compositor's render all count.
      - `key`: the longest time from sending a key until its messages (and those they posted)
        are handled and the frame is drawn; worker threads still reading the host do not count
        (Pilot's `press()` waits for the whole process to idle, workers included).
    `fill` is the time until the screen's workers are done (content complete); it may exceed
    100 ms: the screen stays responsive meanwhile, which `stall` proves.
The baseline, measured in the same run the same way, is a bare Textual app (two screens with a
Static and a Footer, switched with keys): the floor Textual costs on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEMO_KERNEL = REPO / "khotui" / "demo" / "vmlinuz-7.3.4.setup"
TICK = 0.005
VERBOSE = bool(os.environ.get("TUI_SCALE_VERBOSE"))


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class ScreenTimes:
    stall: float = 0.0         # longest blocked event loop (s)
    key: float = 0.0           # longest press + pause (s)
    fill: float = 0.0          # until the screen's workers finished (s)
    worst: str = ""            # which step had the longest stall

    def row(self) -> str:
        return (f"stall {self.stall * 1000:6.0f} ms   key {self.key * 1000:6.0f} ms   "
                f"fill {self.fill * 1000:7.0f} ms   (worst: {self.worst})")


@dataclass
class FrameMeter:
    """The longest stall of the running event loop since the last `take()`."""

    stall: float = 0.0
    _task: asyncio.Task | None = None
    log: list[tuple[str, float]] = field(default_factory=list)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(TICK)
            late = loop.time() - t0 - TICK
            if late > self.stall:
                self.stall = late

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._tick())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def take(self) -> float:
        s, self.stall = self.stall, 0.0
        return s


class Walker:
    """Press keys, wait for the app, and keep the worst numbers per screen."""

    def __init__(self, pilot, meter: FrameMeter) -> None:
        self.pilot = pilot
        self.app = pilot.app
        self.meter = meter
        self.times: dict[str, ScreenTimes] = {}
        self.current = ScreenTimes()

    def screen(self, name: str) -> ScreenTimes:
        self.current = self.times.setdefault(name, ScreenTimes())
        self.meter.take()
        return self.current

    def _note(self, label: str) -> None:
        stall = self.meter.take()
        if VERBOSE:
            print(f"    {label:<20} stall {stall * 1000:6.1f} ms")
        if stall > self.current.stall:
            self.current.stall, self.current.worst = stall, label

    async def press(self, *keys: str) -> None:
        for key in keys:
            t = time.perf_counter()
            self._send(key)
            for _ in range(3):                        # the key, what it posted, and theirs
                await self.pilot._wait_for_screen()
            self.app.screen._on_timer_update()        # the frame drawn now, not on the next tick
            self.current.key = max(self.current.key, time.perf_counter() - t)
            await self.pilot.pause()                  # untimed: let the app settle
            self._note(key)

    def _send(self, key: str) -> None:
        """What Pilot.press() sends, without its wait for the whole process to idle (which
        counts worker threads' CPU time)."""
        import unicodedata

        from textual import events
        from textual.keys import REPLACED_KEYS, _get_unicode_name_from_key
        original = REPLACED_KEYS.get(key, key)
        try:
            char: str | None = unicodedata.lookup(_get_unicode_name_from_key(original))
        except KeyError:
            char = key if len(key) == 1 else None
        event = events.Key(key, char)
        event.set_sender(self.app)
        self.app._driver.send_message(event)

    async def fill(self, label: str = "fill") -> None:
        """Wait for this screen's workers (thread workers reading the host), then a frame."""
        t = time.perf_counter()
        for _ in range(3):
            await self.pilot.pause()
            ours = [w for w in self.app.workers if not w.is_finished
                    and type(w.node).__name__ != "DirectoryTree"]
            if ours:
                await self.app.workers.wait_for_complete(ours)
        await self.pilot.pause()
        self.current.fill = max(self.current.fill, time.perf_counter() - t)
        self._note(label)

    async def read_screen(self, seconds: float = 1.0) -> None:
        """An operator reads the screen before the next key (the app reads ahead meanwhile:
        KhotuiApp.warm_up); stalls while idle count like any other."""
        await asyncio.sleep(seconds)
        await self.fill("reading")

    async def type(self, text: str) -> None:
        await self.press(*[{" ": "space", "/": "slash", ".": "full_stop"}.get(c, c) for c in text])


@asynccontextmanager
async def metered(app, size: tuple[int, int]):
    meter = FrameMeter()
    async with app.run_test(size=size) as pilot:
        meter.start()
        try:
            yield Walker(pilot, meter)
        finally:
            await meter.stop()


# -- the walks ---------------------------------------------------------------------------------


async def walk_khotui(root: Path, size: tuple[int, int] = (120, 40), *,
                      kernel: Path = DEMO_KERNEL, demo: bool = False) -> dict[str, ScreenTimes]:
    from khotui.tui.app import KhotuiApp
    from khotui.tui.viewmodel import Source
    app = KhotuiApp(Source(root, demo=demo), theme="khotui")
    async with metered(app, size) as w:
        w.screen("overview")
        await w.fill("overview read")
        await w.press("r")
        await w.fill("overview re-read")
        await w.read_screen()

        w.screen("memory")
        await w.press("2")
        await w.fill("memory read")
        await w.press("right", "right", "down", "plus", "plus", "minus", "n", "n", "0")
        await w.press("slash")
        await w.type("System RAM")
        await w.press("enter")
        await w.fill("iomem search")
        await w.press("down", "down", "enter")
        await w.press("slash")
        await w.press(*["backspace"] * len("System RAM"))
        await w.type("100000")
        await w.press("enter")
        await w.fill("address search")
        await w.press("b", "down", "pagedown", "end", "home")   # the Blocks tab
        await w.press("s", "left", "right", "down", "up")        # keys while states are read
        await w.fill("block states")
        await w.press("escape")

        w.screen("handover")
        await w.press("3")
        await w.fill("handover read")
        await w.press("down", "down", "enter", "down", "down", "down")
        await w.press("v")
        await w.fill("dts")
        await w.press("tab")
        await w.press("pagedown", "pagedown", "end", "home")
        await w.press("shift+tab", "v")
        await w.fill("hex")
        await w.press("v")

        w.screen("prepare")
        await w.press("4")
        await w.fill("prepare read")
        await w.press("o")
        await w.type(str(kernel))
        await w.press("enter")
        await w.fill("kernel picked")
        await w.press("e")
        await w.type(" quiet")
        await w.fill("cmdline preview")
        await w.press("escape")

        w.screen("plan")
        await w.press("p")
        await w.fill("plan")
        await w.press("2")
        await w.fill("memory with plan")
        await w.press("5", "1")
    return w.times


async def walk_baseline(size: tuple[int, int] = (120, 40)) -> ScreenTimes:
    """A bare Textual app: two modes with a Static and a Footer, switched by keys."""
    from textual.app import App
    from textual.binding import Binding
    from textual.screen import Screen
    from textual.widgets import Footer, Static

    class Plain(Screen):
        def compose(self):
            yield Static("baseline " * 200)
            yield Footer()

    class Bare(App):
        MODES = {"a": Plain, "b": Plain}
        BINDINGS = [Binding("1", "switch_mode('a')", "A"), Binding("2", "switch_mode('b')", "B")]

        def on_mount(self) -> None:
            self.switch_mode("a")

    async with metered(Bare(), size) as w:
        w.screen("baseline")
        await w.fill()
        for _ in range(3):
            await w.press("2", "1", "down", "up")
    return w.times["baseline"]


# -- first Overview frame, in a real terminal --------------------------------------------------

VERDICT = re.compile(rb"ready|a load would fail|could not be read")


def first_overview(argv: list[str], size: tuple[int, int], marker: re.Pattern = VERDICT) -> float:
    """Seconds from spawning `argv` in a pty until `marker` is on the terminal."""
    sys.path.insert(0, str(REPO / "bench"))
    from tui_startup import Pty
    p = Pty(argv, *size)
    try:
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            if marker.search(bytes(p.buf)):
                return time.perf_counter() - p.start
            import select
            r, _, _ = select.select([p.fd], [], [], 0.01)
            if r:
                try:
                    p.buf += os.read(p.fd, 65536)
                except OSError:
                    break
        raise TimeoutError(f"{marker.pattern!r} never appeared")
    finally:
        p.close()


BASELINE_APP = ("from textual.app import App\nfrom textual.widgets import Static\n"
                "class Bare(App):\n    def compose(self):\n        yield Static('baseline-ready')\n"
                "Bare().run()\n")


def host_root(name: str) -> tuple[Path, bool]:
    if name == "demo":
        from khotui.demo import demo_root
        return Path(demo_root()), True
    from bench.gen_sysroot import cached
    return Path(cached(name)), False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", default="demo,10x,100x")
    ap.add_argument("--size", default="120x40")
    ap.add_argument("--runs", type=int, default=1, help="first-Overview runs (median)")
    ap.add_argument("--no-startup", action="store_true", help="skip the pty start-up timing")
    args = ap.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    import statistics

    print(f"terminal {size[0]}x{size[1]}; python {sys.version.split()[0]}")
    if not args.no_startup:
        b = statistics.median(first_overview([sys.executable, "-c", BASELINE_APP], size,
                                             re.compile(rb"baseline-ready"))
                              for _ in range(args.runs))
        print(f"baseline (bare Textual app): first frame {b * 1000:6.0f} ms")
    base = asyncio.run(walk_baseline(size))
    print(f"baseline (bare Textual app): {base.row()}")
    for name in args.hosts.split(","):
        root, demo = host_root(name)
        print(f"\n{name}: {root}")
        if not args.no_startup:
            argv = [sys.executable, "-m", "khotui"] + (["--demo"] if demo else ["--root", str(root)])
            t = statistics.median(first_overview(argv, size) for _ in range(args.runs))
            print(f"  first complete Overview frame: {t * 1000:6.0f} ms "
                  f"(+{(t - b) * 1000:.0f} ms over the bare app)" if not args.no_startup else "")
        t0 = time.perf_counter()
        times = asyncio.run(walk_khotui(root, size, demo=demo))
        for screen, st in times.items():
            print(f"  {screen:<9} {st.row()}")
        import resource

        import psutil
        rss = psutil.Process().memory_info().rss
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        # the walks share this process: the peak is over every host walked so far
        print(f"  (walk took {time.perf_counter() - t0:.1f} s; RSS after it {rss >> 20} MiB, "
              f"peak so far {peak >> 20} MiB)")


if __name__ == "__main__":
    main()
