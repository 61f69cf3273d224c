"""How long until the first complete Overview frame, and how many bytes a slow SSH link pays.

    .venv/bin/python bench/tui_startup.py [--runs N] [--size 80x24] [--ssh] [--idle SECONDS]

Runs `khotui --demo` in a real pseudo-terminal (the same driver and escape codes as over SSH)
and measures, from spawn:
  * the time until the Overview shows its verdict (the host state read, the panels drawn);
  * the bytes written to the terminal until then, and for a walk through every screen
    (2 Memory, 3 Handover, 4 Prepare, p Plan, 1 Overview), each screen awaited by a marker.
The baseline, measured in the same run the same way, is a bare Textual app with one Static:
the floor that Python + Textual start-up costs on this machine.

--ssh runs both under `ssh -tt` to a throwaway sshd on 127.0.0.1 (tests/tui/realterm.py's
Sshd: its own host and client keys, its own port; needs openssh-server): the bytes are then
what came out of the SSH channel, what an operator's link carries. --idle S also counts the
bytes written in S seconds with no key pressed after each step of the walk (once settled), and
walks the screens with a text input or a dialog (INPUT_WALK) the same way.
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
from collections.abc import Callable, Iterator
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


# the screens with a text input or a dialog, for --idle: (keys, marker); "\x1b" is Esc
INPUT_WALK = [("2", b"node1"), ("/", b"search name"), ("\x1b3", b"outgoing (kho/out)"),
              ("4", b"vmlinuz-7.3.4"), ("e", b"Done editing"), ("\x1bp", b"would succeed"),
              ("l", b"Type the host name")]


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

    def idle(self, seconds: float) -> int:
        """Bytes the app sends in `seconds` while nothing is pressed."""
        quiet = len(self.buf)
        end = time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                self.buf += os.read(self.fd, 65536)
        return len(self.buf) - quiet

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)
        os.close(self.fd)


# how to start a program: argv of a local run, or the same wrapped in `ssh -tt` (main() sets it)
def _local(argv: list[str]) -> list[str]:
    return argv


launch = _local


def measure_baseline(cols: int, rows: int) -> tuple[float, int]:
    p = Pty(launch([sys.executable, "-c", BASELINE]), cols, rows)
    try:
        t, _ = p.read_until(b"baseline-ready")
        return t, p.drain()
    finally:
        p.close()


def measure_khotui(cols: int, rows: int, idle: float = 0.0,
                   ) -> tuple[float, int, list[tuple[str, int]]]:
    """(seconds to the verdict, bytes until then, [(key, bytes) for each step of the walk]);
    with `idle`, each step's entry is followed by ("idle", bytes in `idle` quiet seconds)."""
    p = Pty(launch([sys.executable, "-m", "khotui", "--demo"]), cols, rows)
    try:
        t, _ = p.read_until(b"ready")          # the verdict: drawn after the host state is read
        startup = p.drain()
        walk = []
        for key, marker in WALK:
            before = len(p.buf)
            p.send(key)
            p.read_until(marker)
            walk.append((key, p.drain() - before))
            if idle:
                p.drain(1.0)
                walk.append(("idle", p.idle(idle)))
        p.send("q")
        return t, startup, walk
    finally:
        p.close()


def measure_idle_walk(cols: int, rows: int, idle: float) -> list[tuple[str, int, int]]:
    """[(key, bytes to reach the screen, bytes in `idle` quiet seconds on it)] along INPUT_WALK,
    each screen let settle (and its toasts expire) first."""
    p = Pty(launch([sys.executable, "-m", "khotui", "--demo"]), cols, rows)
    out = []
    try:
        p.read_until(b"ready")
        p.drain(1.0)
        for keys, marker in INPUT_WALK:
            before = len(p.buf)
            for key in keys:
                p.send(key)
                time.sleep(0.3 if key == "\x1b" else 0.05)   # a lone Esc, not Alt+key
            p.read_until(marker)
            p.drain(2.2)
            step = len(p.buf) - before
            out.append((keys.replace("\x1b", "esc "), step, p.idle(idle)))
        return out
    finally:
        p.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="80x24")
    ap.add_argument("--ssh", action="store_true", help="run under ssh -tt to a throwaway sshd on 127.0.0.1")
    ap.add_argument("--idle", type=float, default=0.0, help="also count bytes in S idle seconds per step")
    args = ap.parse_args()
    cols, rows = (int(x) for x in args.size.split("x"))
    from khotui.demo import demo_root
    demo_root()  # materialise once, outside the timing
    if args.ssh:
        with _sshd() as wrap:
            _report(args, cols, rows, wrap)
    else:
        _report(args, cols, rows, _local)


@contextlib.contextmanager
def _sshd() -> Iterator[Callable[[list[str]], list[str]]]:
    import shlex
    import tempfile
    sys.path.insert(0, str(REPO))
    from tests.tui.realterm import ENV, Sshd
    with tempfile.TemporaryDirectory(prefix="khotui-bench-sshd-") as tmp:
        try:
            sshd = Sshd(Path(tmp))
        except BaseException as exc:       # pytest's Skipped: sshd missing or not starting
            sys.exit(f"tui_startup: no sshd: {exc}")
        env = " ".join(f"{k}={v}" for k, v in ENV.items())
        try:
            yield lambda argv: sshd.client_argv(
                f"cd {shlex.quote(str(REPO))} && env {env} " + shlex.join(argv))
        finally:
            sshd.stop()


def _report(args: argparse.Namespace, cols: int, rows: int,
            wrap: Callable[[list[str]], list[str]]) -> None:
    global launch
    launch = wrap

    base = [measure_baseline(cols, rows) for _ in range(args.runs)]
    runs = [measure_khotui(cols, rows, args.idle) for _ in range(args.runs)]
    b_t = statistics.median(t for t, _ in base)
    b_bytes = statistics.median(n for _, n in base)
    k_t = statistics.median(t for t, _, _ in runs)
    k_bytes = statistics.median(n for _, n, _ in runs)
    walk = [(k, n) for k, n in runs[-1][2] if k != "idle"]
    idle = [n for k, n in runs[-1][2] if k == "idle"]
    walk_total = sum(n for _, n in walk)
    print(f"terminal {cols}x{rows}{' over ssh (127.0.0.1)' if args.ssh else ' (pty)'}, "
          f"median of {args.runs} runs")
    print(f"  baseline (bare Textual app, one Static): first frame {b_t * 1000:7.0f} ms, "
          f"{b_bytes:8.0f} bytes")
    print(f"  khotui --demo, complete Overview frame:  first frame {k_t * 1000:7.0f} ms, "
          f"{k_bytes:8.0f} bytes   (+{(k_t - b_t) * 1000:.0f} ms over baseline)")
    print(f"  walk through every screen: {walk_total} bytes "
          + "(" + ", ".join(f"{k}: {n}" for k, n in walk) + ")")
    if idle:
        print(f"  idle {args.idle:.0f} s after each step: " + ", ".join(str(n) for n in idle) + " bytes")
        print(f"  screens with an input or a dialog (key: bytes to open, bytes in {args.idle:.0f} idle s):")
        for key, step, quiet in measure_idle_walk(cols, rows, args.idle):
            print(f"    {key:>6}: {step:6d} {quiet:6d}")
    print(f"  at 56 kbit/s: start-up {k_bytes * 8 / 56000:.1f} s, "
          f"walk {walk_total * 8 / 56000:.1f} s of transfer")


if __name__ == "__main__":
    main()
