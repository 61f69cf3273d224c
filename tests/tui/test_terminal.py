"""The app in a real terminal: tmux runs `khotui --demo` (over `ssh localhost` when an SSH
server can be started here, else in tmux's own pty), keys go in with send-keys, and the screen
comes back with capture-pane — what an operator over SSH would see, escape codes and all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _sshd_usable() -> bool:
    # An SSH server needs sshd plus a key we may log in with; this machine has only the client.
    return shutil.which("sshd") is not None and os.path.exists(os.path.expanduser("~/.ssh/id_ed25519"))


class Tmux:
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


@pytest.fixture
def terminal():
    python = sys.executable
    command = f"{python} -m khotui --demo"
    if _sshd_usable():  # pragma: no cover - depends on the machine
        command = f"ssh -o BatchMode=yes -t localhost 'cd {REPO} && {command}'"
    # keep the pane after exit so the test can see how the app ended
    t = Tmux(command + "; echo khotui-exited-$?; sleep 30")
    yield t
    t.kill()


def test_demo_in_a_real_terminal_walks_every_screen_and_quits(terminal):
    screen = terminal.wait_for("kho-v4")
    assert "1 Overview" in screen and "DRY RUN" in screen
    terminal.send("2")
    assert "node0" in terminal.wait_for("node1")
    terminal.send("3")
    terminal.wait_for("outgoing (kho/out)")
    terminal.send("4")
    terminal.wait_for("vmlinuz-7.3.4")
    terminal.send("p")
    terminal.wait_for("would succeed")
    terminal.send("?")
    terminal.wait_for("Help: plan")
    terminal.send("Escape")
    time.sleep(0.5)
    terminal.send("q")
    terminal.wait_for("khotui-exited-0")
