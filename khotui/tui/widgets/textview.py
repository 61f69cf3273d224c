"""A long plain text, scrolled: only the visible lines are drawn.

The DTS of a 10,000-node KHO FDT is 40,000 lines (2.5 MB); a Static would lay out and render all
of it on every update. This draws the lines in view, like Textual's Log, without appending.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip


class TextView(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    TextView { height: 1fr; background: $surface 0%; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[str] = []

    def set_lines(self, lines: list[str], width: int | None = None) -> None:
        self.lines = lines
        if width is None:
            width = max((cell_len(line) for line in lines), default=0)
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
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)
