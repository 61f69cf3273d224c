"""Number formatting the screens share: addresses in hex, sizes in binary units."""

from __future__ import annotations

from textual.content import Content


def addr(value: int | None) -> str:
    return "—" if value is None else f"0x{value:x}"


def size(value: int | None) -> str:
    if value is None:
        return "—"
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if value >= 1 << shift:
            n = value / (1 << shift)
            return f"{n:.0f} {unit}" if n == int(n) else f"{n:.1f} {unit}"
    return f"{value} B"


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
