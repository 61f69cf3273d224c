"""A hex dump for blobs nobody decodes; long blobs are cut with a note, never drawn whole."""

from __future__ import annotations

from textual.content import Content

MAX_BYTES = 4096


def hexdump(data: bytes, limit: int = MAX_BYTES) -> Content:
    shown = data[:limit]
    lines = []
    for off in range(0, len(shown), 16):
        chunk = shown[off:off + 16]
        hexpart = " ".join(f"{b:02x}" for b in chunk[:8]) + "  " + " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(Content.from_markup("[$secondary]$o[/]  $h  [dim]$t[/]", o=f"{off:08x}",
                                         h=f"{hexpart:<48}", t=text))
    if not shown:
        lines.append(Content.from_markup("[dim](empty)[/]"))
    if len(data) > limit:
        lines.append(Content.from_markup("[$warning]… $n more bytes not shown[/]", n=str(len(data) - limit)))
    return Content("\n").join(lines)
