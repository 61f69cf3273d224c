"""How long until the first complete Overview frame, and how many bytes a slow SSH link pays.

    .venv/bin/python bench/tui_startup.py [--runs N] [--size 80x24]

Runs `khotui --demo` in a real pseudo-terminal (the same driver and escape codes as over SSH)
and measures, from spawn:
  * the time until the Overview shows its verdict (the host state read, the panels drawn);
  * the bytes written to the terminal until then, and for a walk through every screen
    (2 Memory, 3 Handover, 4 Prepare, p Plan, 1 Overview), each screen awaited by a marker.
The baseline, measured in the same run the same way, is a bare Textual app with one Static:
the floor that Python + Textual start-up costs on this machine.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pty
import select
import signal
import statistics
import struct
import sys
import termios
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

BASELINE = textwrap.dedent("""
    from textual.app import App
    from textual.widgets import Static
    class Bare(App):
        def compose(self):
            yield Static("baseline-ready")
    Bare().run()
""")

# (key to send, marker that proves the screen is drawn)
WALK = [("2", b"node1"), ("3", b"outgoing (kho/out)"), ("4", b"vmlinuz-7.3.4"),
        ("p", b"would succeed"), ("1", b"ready")]


class Pty:
    def __init__(self, argv: list[str], cols: int, rows: int) -> None:
        self.start = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # child
            os.environ.update(TERM="xterm-256color", COLORTERM="truecolor", LANG="C.UTF-8")
            os.environ.pop("NO_COLOR", None)
            os.chdir(REPO)
            os.execv(argv[0], argv)
        self.pid, self.fd = pid, fd
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.buf = bytearray()

    def read_until(self, marker: bytes, timeout: float = 60.0) -> tuple[float, int]:
        """(seconds since spawn, total bytes) when `marker` first appears after the current point."""
        begin = len(self.buf)
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if marker in self.buf[max(0, begin - len(marker)):]:
                return time.perf_counter() - self.start, len(self.buf)
            r, _, _ = select.select([self.fd], [], [], 0.05)
            if r:
                try:
                    self.buf += os.read(self.fd, 65536)
                except OSError:
                    break
        raise TimeoutError(f"{marker!r} never appeared")

    def drain(self, quiet: float = 0.3) -> int:
        """Read until the app has been silent for `quiet` seconds; the total bytes."""
        while True:
            r, _, _ = select.select([self.fd], [], [], quiet)
            if not r:
                return len(self.buf)
            try:
                self.buf += os.read(self.fd, 65536)
            except OSError:
                return len(self.buf)

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def measure_baseline(cols: int, rows: int) -> tuple[float, int]:
    p = Pty([sys.executable, "-c", BASELINE], cols, rows)
    try:
        t, _ = p.read_until(b"baseline-ready")
        return t, p.drain()
    finally:
        p.close()


def measure_khotui(cols: int, rows: int) -> tuple[float, int, list[tuple[str, int]]]:
    p = Pty([sys.executable, "-m", "khotui", "--demo"], cols, rows)
    try:
        t, _ = p.read_until(b"ready")          # the verdict: drawn after the host state is read
        startup = p.drain()
        walk = []
        for key, marker in WALK:
            before = len(p.buf)
            p.send(key)
            p.read_until(marker)
            walk.append((key, p.drain() - before))
        p.send("q")
        return t, startup, walk
    finally:
        p.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="80x24")
    args = ap.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))
    from khotui.demo import demo_root
    demo_root()  # materialise once, outside the timing

    base = [measure_baseline(cols, rows) for _ in range(args.runs)]
    runs = [measure_khotui(cols, rows) for _ in range(args.runs)]
    b_t = statistics.median(t for t, _ in base)
    b_bytes = statistics.median(n for _, n in base)
    k_t = statistics.median(t for t, _, _ in runs)
    k_bytes = statistics.median(n for _, n, _ in runs)
    walk = runs[-1][2]
    walk_total = sum(n for _, n in walk)
    print(f"terminal {cols}x{rows}, median of {args.runs} runs")
    print(f"  baseline (bare Textual app, one Static): first frame {b_t * 1000:7.0f} ms, "
          f"{b_bytes:8.0f} bytes")
    print(f"  khotui --demo, complete Overview frame:  first frame {k_t * 1000:7.0f} ms, "
          f"{k_bytes:8.0f} bytes   (+{(k_t - b_t) * 1000:.0f} ms over baseline)")
    print(f"  walk through every screen: {walk_total} bytes "
          + "(" + ", ".join(f"{k}: {n}" for k, n in walk) + ")")
    print(f"  at 56 kbit/s: start-up {k_bytes * 8 / 56000:.1f} s, "
          f"walk {walk_total * 8 / 56000:.1f} s of transfer")


if __name__ == "__main__":
    main()
