"""The app in a real terminal: tmux runs `khotui --demo` over `ssh -t` to a throwaway sshd on
127.0.0.1 (tests/tui/realterm.py; in tmux's own pty when sshd cannot start here), keys go in
with send-keys, and the screen comes back with capture-pane — what an operator over SSH would
see, escape codes and all. tests/tui/test_real_terminal.py holds the 80x24 checks.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time

import pytest

from tests.tui.realterm import Sshd, Tmux

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture
def terminal(tmp_path):
    import shlex
    command = f"{shlex.quote(sys.executable)} -m khotui --demo"
    sshd = None
    with contextlib.suppress(pytest.skip.Exception):   # no sshd here: tmux's own pty, same app
        sshd = Sshd(tmp_path)
    if sshd is not None:
        command = shlex.join(sshd.client_argv(sshd.khotui_command("--demo")))
    # keep the pane after exit so the test can see how the app ended
    t = Tmux(command + "; echo khotui-exited-$?; sleep 30")
    yield t
    t.kill()
    if sshd is not None:
        sshd.stop()


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
