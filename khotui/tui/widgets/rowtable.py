"""A read-only table of plain text rows with a header and a row cursor: only the rows in view
are drawn.

Textual's DataTable renders each cell through Rich on its first show: 34 rows of 6 columns,
the memory block runs of a 24 TiB host, took 100-130 ms on 2 cores when the Blocks tab opened
(bench/tui_scale.py), over the 100 ms budget of a frame. The rows here are padded strings
joined once in `set_rows()`; a frame crops the lines in view, like TextView.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from textual.binding import Binding
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

GAP = "  "


def _pad(text: str, width: int) -> str:
    return text + " " * (width - cell_len(text))


class RowTable(ScrollView, can_focus=True):
    DEFAULT_CSS = """
    RowTable { height: 1fr; background: $surface 0%; }
    RowTable > .rowtable--header { text-style: bold; color: $foreground 80%; }
    RowTable > .rowtable--cursor { background: $primary 40%; }
    RowTable:focus > .rowtable--cursor { background: $primary; color: $text; text-style: bold; }
    """
    COMPONENT_CLASSES = {"rowtable--header", "rowtable--cursor"}
    BINDINGS = [
        Binding("up", "move(-1)", "Up", show=False),
        Binding("down", "move(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "move(-1000000000)", "First", show=False),
        Binding("end", "move(1000000000)", "Last", show=False),
    ]

    cursor = reactive(0, always_update=True, repaint=False)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.header = ""
        self.lines: list[str] = []

    @property
    def row_count(self) -> int:
        return len(self.lines)

    def set_rows(self, columns: list[str], rows: list[list[str]]) -> None:
        """Columns as wide as their widest cell; a single column (a message) is not padded."""
        widths = [max([cell_len(c)] + [cell_len(r[i]) for r in rows if i < len(r)])
                  for i, c in enumerate(columns)]

        def line(cells: list[str]) -> str:
            # a short row (a message line) leaves the widths it does not reach unused
            padded = [_pad(c, w) for c, w in zip(cells, widths, strict=False)]
            return " " + (GAP.join(padded).rstrip() if len(cells) > 1 else "".join(cells))

        self.header = line(columns)
        self.lines = [line(r) for r in rows]
        width = max([cell_len(self.header)] + [cell_len(s) for s in self.lines])
        self.virtual_size = Size(width + 1, len(self.lines) + 1)
        self.cursor = min(self.cursor, max(len(self.lines) - 1, 0))
        self.scroll_to(0, 0, animate=False)
        self.refresh()

    def watch_cursor(self, old: int, new: int) -> None:
        # the header is line 0 of the view; row i is at y = i + 1 - scroll_y
        height = self.size.height
        top = self.scroll_offset.y
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new + 1 >= top + height:
            self.scroll_to(y=new + 2 - height, animate=False)
        self.refresh()

    def action_move(self, by: int) -> None:
        if self.lines:
            self.cursor = max(0, min(len(self.lines) - 1, self.cursor + by))

    def action_page(self, by: int) -> None:
        self.action_move(by * max(self.size.height - 2, 1))

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if y == 0:
            text = self.header
            style = base + self.get_component_rich_style("rowtable--header", partial=True)
        else:
            index = scroll_y + y - 1
            if index >= len(self.lines):
                return Strip.blank(width, base)
            text = self.lines[index]
            style = base
            if index == self.cursor:
                style = base + self.get_component_rich_style("rowtable--cursor", partial=True)
                text = _pad(text, max(self.virtual_size.width, width))
        strip = Strip([Segment(text, style)], cell_len(text))
        return strip.crop_extend(scroll_x, scroll_x + width, base)
