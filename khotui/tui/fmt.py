"""How the screens write values: addresses and sizes through khotui.units (the one formatter,
with "—" for unknown), durations, yes/no, status marks and aligned key/value lines."""

from __future__ import annotations

import os
from collections.abc import Mapping

from textual.content import Content

from khotui import units


def addr(value: int | None) -> str:
    return units.addr(value, unknown="—")


def size(value: int | None) -> str:
    return units.size(value, unknown="—")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, _ = divmod(s, 60)
    return f"{d}d {h}h {m}m" if d else f"{h}h {m}m"


def yesno(value: bool | int | None, yes: str = "yes", no: str = "no") -> str:
    if value is None:
        return "unknown"
    return yes if value else no


def plain_terminal(environ: Mapping[str, str] | None = None) -> bool:
    """Whether to draw only plain characters: no emoji and no ✓/✗. The rule: the Linux
    console (TERM=linux; its font has 256 or 512 glyphs and no emoji), the BSD console
    (cons25...), a VT terminal (vt100, vt220...) or a dumb one, a locale whose charset is not
    UTF-8, or KHOTUI_PLAIN=1 to ask for it anywhere (KHOTUI_PLAIN=0 to refuse it)."""
    env = os.environ if environ is None else environ
    forced = env.get("KHOTUI_PLAIN")
    if forced in ("0", "1"):
        return forced == "1"
    term = env.get("TERM", "")
    if term in ("linux", "dumb") or term.startswith(("vt", "cons", "linux-")):
        return True
    charset = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or ""
    return bool(charset) and charset not in ("C.UTF-8", "C.utf8") and \
        "utf-8" not in charset.lower() and "utf8" not in charset.lower() and charset != "C"


PLAIN = plain_terminal()

# A mark reads without colour too (NO_COLOR, 16-colour terminals): symbol + word.
MARKS = {
    "ok": ("$success", "+ ok  " if PLAIN else "✓ ok  "),
    "warn": ("$warning", "! warn"),
    "fail": ("$error", "x FAIL" if PLAIN else "✗ FAIL"),
    "skip": ("$foreground 60%", "- skip" if PLAIN else "· skip"),
}


def mark(status: str) -> Content:
    colour, text = MARKS.get(status, MARKS["skip"])
    return Content.from_markup(f"[b {colour}]$t[/]", t=text)


def kv(rows: list[tuple[str, str | Content]], width: int = 16) -> Content:
    """Aligned `key  value` lines."""
    lines = []
    for key, value in rows:
        head = Content.from_markup("[$secondary]$k[/]", k=key.ljust(width))
        lines.append(head + (value if isinstance(value, Content) else Content(str(value))))
    return Content("\n").join(lines)
