"""khotui's own theme: dark, calm, and built from colours that survive 16-colour terminals.

Each role maps to a colour whose nearest ANSI-16 neighbour is distinct from the others (green
ok, yellow warn, red fail, cyan scratch, magenta segments), so the marks stay apart when the
terminal downgrades; every mark also carries a word or symbol, so NO_COLOR (Textual's monochrome
filter) loses nothing. `khotui-ansi` uses the terminal's own palette for 8/16-colour terminals.
"""

from __future__ import annotations

import os

from textual.theme import Theme

KHOTUI = Theme(
    name="khotui",
    primary="#3a96dd",      # ~ ansi blue
    secondary="#3bb8c4",    # ~ ansi cyan: scratch regions
    accent="#c678dd",       # ~ ansi magenta: segments
    warning="#e5c07b",      # ~ ansi yellow
    error="#e06c75",        # ~ ansi red
    success="#98c379",      # ~ ansi green
    foreground="#dcdfe4",
    background="#1b1f27",
    surface="#232834",
    panel="#2c3340",
    dark=True,
    variables={
        "footer-key-foreground": "#3bb8c4",
        "block-cursor-text-style": "bold",
    },
)

KHOTUI_ANSI = Theme(
    name="khotui-ansi",
    ansi=True,
    primary="ansi_blue",
    secondary="ansi_cyan",
    accent="ansi_magenta",
    warning="ansi_yellow",
    error="ansi_red",
    success="ansi_green",
    foreground="ansi_default",
    background="ansi_default",
    surface="ansi_default",
    panel="ansi_default",
    boost="ansi_default",
    dark=True,
    variables={
        "ansi-background": "ansi_black",
        "ansi-foreground": "ansi_white",
        "border-blurred": "ansi_bright_black",
        "block-cursor-foreground": "ansi_black",
        "block-cursor-background": "ansi_cyan",
        "input-cursor-background": "ansi_white",
        "input-cursor-foreground": "ansi_black",
        "input-selection-background": "ansi_blue",
        "footer-key-foreground": "ansi_cyan",
    },
)

THEMES = (KHOTUI, KHOTUI_ANSI)


def default_theme(environ: os._Environ[str] | dict[str, str] = os.environ) -> str:
    """`khotui-ansi` when the terminal says it has few colours, else `khotui`."""
    chosen = environ.get("KHOTUI_THEME")
    if chosen in ("khotui", "khotui-ansi"):
        return chosen
    term = environ.get("TERM", "")
    if environ.get("COLORTERM") in ("truecolor", "24bit") or "256color" in term:
        return "khotui"
    if term in ("linux", "vt100", "vt220", "xterm", "screen", "tmux", "ansi") or term.endswith("-16color"):
        return "khotui-ansi"
    return "khotui"
