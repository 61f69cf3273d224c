"""Driving khotui in a REAL terminal, for tests: the one helper module for it.

Three ways in, all with the bytes the app writes and the screen a terminal would show:
  * `Term`: the app in a pseudo-terminal we drive (bench/tui_startup.py's `Pty`), every byte
    it writes fed to `pyte`, a VT100/xterm emulator: `text()` is what the operator sees,
    `written` what the link carried. `Term.over_ssh(sshd, ...)` runs it under `ssh -tt` to a
    real sshd on 127.0.0.1 instead: the bytes are then what came out of the SSH channel.
  * `Sshd`: a throwaway sshd on 127.0.0.1 (own host key, own client key, own port), or a
    skip with the reason when sshd is not installed or cannot start.
  * `Tmux`: tmux runs the command, send-keys in, capture-pane out (a second, independent
    terminal emulator).
"""

from __future__ import annotations

import contextlib
import os
import select
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyte
import pytest

from bench.tui_startup import Pty
from tests.conftest import REPO

# what a terminal sends for a key (xterm, normal cursor-key mode: what Textual asks for)
KEYS = {"Up": "\x1b[A", "Down": "\x1b[B", "Right": "\x1b[C", "Left": "\x1b[D",
        "Tab": "\t", "Escape": "\x1b", "Enter": "\r", "BSpace": "\x7f", "PageDown": "\x1b[6~",
        "PageUp": "\x1b[5~", "Home": "\x1b[H", "End": "\x1b[F"}

ENV = {"TERM": "xterm-256color", "COLORTERM": "truecolor", "LANG": "C.UTF-8"}


class Term:
    """A program in a pseudo-terminal of `cols` x `rows`, seen through a terminal emulator."""

    def __init__(self, argv: list[str], cols: int = 80, rows: int = 24) -> None:
        self.cols, self.rows = cols, rows
        self.pty = Pty(argv, cols, rows)
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        self._fed = 0

    @classmethod
    def khotui(cls, *args: str, cols: int = 80, rows: int = 24) -> Term:
        return cls([sys.executable, "-m", "khotui", *args], cols, rows)

    @classmethod
    def over_ssh(cls, sshd: Sshd, *args: str, cols: int = 80, rows: int = 24) -> Term:
        """`khotui ARGS` on the far side of `ssh -tt` to `sshd`: what an operator's link carries."""
        return cls(sshd.client_argv(sshd.khotui_command(*args)), cols, rows)

    # -- reading ------------------------------------------------------------------------------

    @property
    def written(self) -> bytes:
        """Every byte the app has written to the terminal so far."""
        return bytes(self.pty.buf)

    def _feed(self) -> None:
        new = bytes(self.pty.buf[self._fed:])
        self._fed = len(self.pty.buf)
        if new:
            self.stream.feed(new)

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.pty.fd], [], [], timeout)
        if not r:
            return False
        try:
            data = os.read(self.pty.fd, 65536)
        except OSError:
            return False
        self.pty.buf += data
        return bool(data)

    def lines(self) -> list[str]:
        self._feed()
        return list(self.screen.display)

    def text(self) -> str:
        return "\n".join(self.lines())

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        """The screen once every one of `texts` is on it."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            if all(t in text for t in texts):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{texts!r} not all on screen within {timeout}s:\n{text}")
            self._read(0.05)

    def settle(self, quiet: float = 0.4, timeout: float = 15.0) -> str:
        """Read until the app has written nothing for `quiet` seconds; the screen then."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._read(quiet):
            pass
        return self.text()

    def idle_bytes(self, seconds: float) -> int:
        """Bytes the app writes in `seconds` with no key pressed."""
        before = len(self.pty.buf)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._read(min(left, 0.2))
        return len(self.pty.buf) - before

    # -- writing ------------------------------------------------------------------------------

    def send(self, *keys: str) -> None:
        """Keys by tmux-like name (`Down`, `Tab`, `Escape`) or literal text, one write each."""
        for key in keys:
            self.pty.send(KEYS.get(key, key))
            # one key per read, as a person types (see issue 13 item 15); after a lone Esc,
            # long enough that the next key is not read as Alt+key
            time.sleep(0.3 if key == "Escape" else 0.05)

    def close(self) -> None:
        with contextlib.suppress(OSError, ChildProcessError):
            self.pty.close()


@contextlib.contextmanager
def khotui_term(*args: str, cols: int = 80, rows: int = 24, sshd: Sshd | None = None) -> Iterator[Term]:
    t = Term.over_ssh(sshd, *args, cols=cols, rows=rows) if sshd else Term.khotui(*args, cols=cols, rows=rows)
    try:
        yield t
    finally:
        t.close()


# -- a real sshd on loopback ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
                                         if os.access(p, os.X_OK)), None)


class Sshd:
    """sshd on 127.0.0.1 with a throwaway host key and client key, for this test run only.

    Logs in as the current user with the client key (no password, no PAM); the ssh client
    never reads ~/.ssh (its own known-hosts file, no agent)."""

    def __init__(self, workdir: Path) -> None:
        binary = sshd_binary()
        if binary is None:
            pytest.skip("sshd is not installed (.ci/run installs openssh-server with apt)")
        self.dir = workdir
        self.port = _free_port()
        self.host_key = workdir / "host_ed25519"
        self.client_key = workdir / "client_ed25519"
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        authorized = workdir / "authorized_keys"
        authorized.write_text((workdir / "client_ed25519.pub").read_text())
        authorized.chmod(0o600)
        config = workdir / "sshd_config"
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {authorized}\nPidFile {workdir / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "StrictModes no\nPermitRootLogin yes\nPermitUserEnvironment no\n"
            "AcceptEnv LANG LC_* COLORTERM\n")
        # privilege separation wants this directory; a fresh container may lack it
        with contextlib.suppress(OSError):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        self.log = workdir / "sshd.log"
        self.proc = subprocess.Popen([binary, "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=self.log.open("wb"))
        if not self._answers():
            self.stop()
            pytest.skip(f"sshd did not start: {self.log.read_text()[-500:]}")

    def _answers(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            out = subprocess.run(self.client_argv("true", tty=False), capture_output=True,
                                 stdin=subprocess.DEVNULL, timeout=20)
            if out.returncode == 0:
                return True
            time.sleep(0.2)
        return False

    def client_argv(self, command: str, *, tty: bool = True) -> list[str]:
        ssh = shutil.which("ssh") or "/usr/bin/ssh"      # Pty execs a path, not a name
        return [ssh, "-tt" if tty else "-T", "-F", "/dev/null", "-i", str(self.client_key),
                "-p", str(self.port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", f"UserKnownHostsFile={self.dir / 'known'}",
                "-o", "LogLevel=ERROR", "-o", "SendEnv=LANG COLORTERM",
                f"{os.environ.get('USER') or 'root'}@127.0.0.1", command]

    @staticmethod
    def khotui_command(*args: str) -> str:
        env = " ".join(f"{k}={v}" for k, v in ENV.items())
        return f"cd {shlex.quote(str(REPO))} && env {env} {shlex.quote(sys.executable)} -m khotui " \
            + " ".join(shlex.quote(a) for a in args)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)


# -- tmux ------------------------------------------------------------------------------------


class Tmux:
    """A command in a tmux session of its own (its own server socket), `width` x `height`."""

    def __init__(self, command: str, width: int = 80, height: int = 24) -> None:
        self.name = f"khotui-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "TERM": "xterm-256color", "XDG_CACHE_HOME": os.environ.get(
            "XDG_CACHE_HOME", os.path.expanduser("~/.cache"))}
        env.pop("NO_COLOR", None)
        subprocess.run(["tmux", "-L", self.name, "new-session", "-d", "-s", self.name,
                        "-x", str(width), "-y", str(height), command],
                       check=True, env=env, cwd=REPO)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "-L", self.name, "capture-pane", "-p", "-t", self.name],
                             capture_output=True, text=True)
        return out.stdout

    def send(self, *keys: str) -> None:
        subprocess.run(["tmux", "-L", self.name, "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} did not appear within {timeout}s; the screen was:\n{screen}")

    def alive(self) -> bool:
        return subprocess.run(["tmux", "-L", self.name, "has-session", "-t", self.name],
                              capture_output=True).returncode == 0

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.name, "kill-server"], capture_output=True)
