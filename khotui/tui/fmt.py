"""How the screens write values: addresses and sizes through khotui.units (the one formatter,
with "—" for unknown), durations, yes/no, status marks and aligned key/value lines."""

from __future__ import annotations

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


# A mark reads without colour too (NO_COLOR, 16-colour terminals): symbol + word.
MARKS = {
    "ok": ("$success", "✓ ok  "),
    "warn": ("$warning", "! warn"),
    "fail": ("$error", "✗ FAIL"),
    "skip": ("$foreground 60%", "· skip"),
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
