"""A long plain text, scrolled: only the visible lines are drawn.

The DTS of a 10,000-node KHO FDT is 40,000 lines (2.5 MB); a Static would lay out and render all
of it on every update. This draws the lines in view, like Textual's Log, without appending.

No control character reaches the terminal from here. The DTS text (khotui/fdt/render.py) is
indented with tabs, as dtc writes it, and stays so for the CLI (`khotui fdt`, files, pipes),
where the terminal's own tab stops place them. Here the app owns every cell: Textual counts a
tab as one cell while the terminal moves to the next tab stop, so a raw tab left stale
characters and overwrote the border and scrollbar (issue 13 item 2). Tabs are expanded where
the text becomes cells, in this widget, so every text it shows is covered, whatever made it.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

TAB_SIZE = 4     # DTS nesting at 80 columns: 4 cells a level, not the terminal's 8

# C0 controls and DEL drawn as a visible mark instead of moving the terminal's cursor
_CONTROLS = {c: "\N{REPLACEMENT CHARACTER}" for c in [*range(0x20), 0x7F] if c != 0x09}


def terminal_line(line: str) -> str:
    """`line` as cells: tabs expanded, other control characters made visible."""
    if "\t" in line:
        line = line.expandtabs(TAB_SIZE)
    return line.translate(_CONTROLS)


def terminal_lines(lines: list[str]) -> tuple[list[str], int]:
    """Lines ready for `TextView.set_lines` and their widest width (off the event loop: 40,000
    DTS lines)."""
    out = [terminal_line(line) for line in lines]
    return out, max((cell_len(line) for line in out), default=0)


class TextView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    TextView { height: 1fr; background: $surface 0%; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[str] = []

    def set_lines(self, lines: list[str], width: int | None = None) -> None:
        """Show `lines`; `width` when given says they came through `terminal_lines` already."""
        if width is None:
            lines, width = terminal_lines(lines)
        self.lines = lines
        self.virtual_size = Size(width, len(lines))
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        style = self.rich_style
        width = self.size.width
        index = scroll_y + y
        if index >= len(self.lines):
            return Strip.blank(width, style)
        text = self.lines[index]
        if not text.isprintable():      # a caller that skipped terminal_lines: still no raw tab
            text = terminal_line(text)
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)
