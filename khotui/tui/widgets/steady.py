"""Text inputs whose cursor does not blink: khotui's only Input and TextArea.

A blinking cursor redraws its widget twice a second: over SSH that is a stream of bytes while
the operator only reads (16 KB in 10 s with the confirmation dialog open, ~460 B/s in the
command-line editor; issue 13 item 6). An operator on a slow link during an incident pays for
every byte, so nothing is sent while idle: the cursor is shown steady (reverse video), and
Textual's blink timer stays paused (Input and TextArea start it paused unless `cursor_blink`).
Every screen builds its inputs from here; tests/tui/test_hygiene.py holds that, and
tests/tui/test_real_terminal.py measures the idle bytes on every screen.
"""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Input, TextArea


class SteadyInput(Input):
    cursor_blink = reactive(False, init=False)


class SteadyTextArea(TextArea):
    cursor_blink = reactive(False, init=False)
