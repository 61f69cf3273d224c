"""The interactive app (Textual). Presentation and flow only: every decision is in the core.

`khotui.tui.app.run_app()` is what `khotui`, `khotui --root DIR` and `khotui --demo` call.
Nothing here reads the host at import time. The only package that imports Textual, and the
only one allowed private Textual names (in `_hooks.py` alone). May import every core package
(through `viewmodel/`, which maps the core onto what the screens draw), never `khotui.cli`.
"""

from __future__ import annotations

import os
import sys

from khotui.errors import KhotuiError

NO_TERMINAL = "no terminal: use `ssh -t`, or a subcommand (status, plan …)"


def require_terminal() -> None:
    """The app needs a terminal on stdin (keys) and stdout (the screen). Without one
    (`ssh host khotui` without -t, cron, `</dev/null`) Textual would wait for keys that never
    come and write escape codes into a pipe: refuse at once instead (exit 2, issue 13 item
    10). The headless paths (tests' run_test, bench) never come through here."""
    for stream, name in ((sys.stdin, "stdin"), (sys.stdout, "stdout")):
        try:
            ok = stream is not None and os.isatty(stream.fileno())
        except (OSError, ValueError):      # closed, or not a real file
            ok = False
        if not ok:
            raise KhotuiError(NO_TERMINAL, fix=f"{name} is not a terminal; "
                              "`khotui --help` lists the subcommands")
